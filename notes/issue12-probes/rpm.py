# N requests to rpm-model (provider "limited", rpm = 20 per key, one key); prints the statuses.
import http.client, json, sys
n = int(sys.argv[1]); c = http.client.HTTPConnection("127.0.0.1", 8091); out = []
for i in range(n):
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "rpm-model", "messages": [{"role": "user", "content": "hi"}]}),
              {"Authorization": "Bearer probe-key", "content-type": "application/json"})
    r = c.getresponse(); r.read(); out.append(r.status)
print(n, "requests:", {s: out.count(s) for s in set(out)}, out)
