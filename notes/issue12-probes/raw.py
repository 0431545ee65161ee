# Raw request targets curl would rewrite; prints the status line and the start of the body.
import socket, sys
def send(target):
    s = socket.create_connection(("127.0.0.1", 8091))
    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer probe-key\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    head, _, body = data.partition(b"\r\n\r\n")
    print(repr(target), "->", head.split(b"\r\n")[0].decode(), body[:170].decode(errors="replace"))
for t in [rb"/v1/..\..\x", b"/v1/files/..%5c..%5cx", b"/v1/files/%2e./x", b"/v1//../x", b"http://127.0.0.1:8091/v1/../x", b"/v1/files?x=/../../admin"]:
    send(t)
