# 600 requests, each with a distinct 256-byte model name, to the wildcard Gemini provider;
# then the /metrics body size (metrics_max_bytes = 65536) and rotor's RSS.
import http.client, json, sys
pid = int(open("rotor.pid").read())
rss = lambda: [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0] + " kB"
print("RSS before:", rss())
c = http.client.HTTPConnection("127.0.0.1", 8091)
codes = {}
for i in range(600):
    name = ("m%05d-" % i) + "x" * 249
    c.request("POST", "/v1/chat/completions", json.dumps({"model": name, "messages": [{"role": "user", "content": "hi"}]}),
              {"Authorization": "Bearer probe-key", "content-type": "application/json"})
    r = c.getresponse(); r.read(); codes[r.status] = codes.get(r.status, 0) + 1
print("statuses:", codes)
c.request("POST", "/v1/chat/completions", json.dumps({"model": "y" * 257, "messages": [{"role": "user", "content": "hi"}]}),
          {"Authorization": "Bearer probe-key", "content-type": "application/json"})
r = c.getresponse(); print("257-byte name:", r.status, r.read()[:160].decode())
c.request("GET", "/metrics", headers={"Authorization": "Bearer probe-metrics-key"})
r = c.getresponse(); body = r.read()
print("/metrics:", r.status, len(body), "bytes;", body.count(b"m00"), "lines naming a probe model")
print([l for l in body.decode().splitlines() if "truncat" in l or "left out" in l or "series_dropped" in l or "omitted" in l][:6])
print("RSS after:", rss())
