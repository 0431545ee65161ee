# In-memory storage (path = ""), a wildcard provider: N requests with distinct 250-byte model
# names in rounds; RSS, rotor_storage_bytes and rows after each round.
import http.client, json, sys, time
port, rounds, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]); pid = int(open("rotor.pid").read())
rss = lambda: int([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0])
c = http.client.HTTPConnection("127.0.0.1", port); k = 0
def metric(name):
    c.request("GET", "/metrics", headers={"Authorization": "Bearer probe-metrics-key"}); m = c.getresponse().read().decode()
    return [l.split()[1] for l in m.splitlines() if l.startswith(name + " ")]
print("start: RSS", rss(), "kB; storage bytes", metric("rotor_storage_bytes"))
for r in range(rounds):
    for i in range(per):
        c.request("POST", "/v1/chat/completions", json.dumps({"model": "n%07d-" % k + "z" * 240, "messages": [{"role": "user", "content": "hi"}]}),
                  {"Authorization": "Bearer probe-key", "content-type": "application/json"}); k += 1
        resp = c.getresponse(); resp.read()
    time.sleep(1.2)
    print(k, "distinct names: RSS", rss(), "kB; storage bytes", metric("rotor_storage_bytes"), "log rows", metric("rotor_log_rows"))
