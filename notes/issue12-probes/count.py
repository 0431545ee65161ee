# N chat requests to 127.0.0.1:PORT, then /health, the log counters and the stats overview.
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port); ok = 0
for i in range(n):
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
              {"Authorization": "Bearer probe-key", "content-type": "application/json"})
    r = c.getresponse(); r.read(); ok += r.status == 200
time.sleep(1.5)
print("client saw", ok, "x 200 of", n)
c.request("GET", "/health"); h = json.loads(c.getresponse().read()); print("health:", {k: h[k] for k in ("status", "storage", "storage_error", "log_dropped", "log_rows")})
c.request("GET", "/metrics", headers={"Authorization": "Bearer probe-metrics-key"}); m = c.getresponse().read().decode()
print("\n".join(l for l in m.splitlines() if l.startswith(("rotor_log_", "rotor_rollups_dropped", "rotor_storage_reopened"))))
c.request("GET", "/admin/stats/overview", headers={"Authorization": "Bearer probe-admin-key"}); r = c.getresponse(); print("overview:", r.status, r.read()[:200].decode())
c.request("GET", "/admin/logs?limit=1", headers={"Authorization": "Bearer probe-admin-key"}); r = c.getresponse(); print("logs:", r.status, r.read()[:120].decode())
