# An upstream that answers every request 200 with 60 KB of nested arrays (port 8094).
import http.server
BODY = ('{"data":' + '[' * 30000 + ']' * 30000 + '}').encode()
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("content-length") or 0); self.rfile.read(n)
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY))); self.end_headers(); self.wfile.write(BODY)
        print("asked", self.command, self.path, flush=True)
    do_GET = do_POST = answer
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8094), H).serve_forever()
