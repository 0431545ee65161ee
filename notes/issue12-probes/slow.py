# Slow-body probes against 127.0.0.1:8091 (body_read_timeout_ms = 3000,
# max_body_bytes = max_body_bytes_in_flight = 32 MiB, one worker).
import socket, time, sys, os
ADDR = ("127.0.0.1", 8091)
HEAD = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer probe-key\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return l.split()[1] + " kB"
def status_of(s):
    s.settimeout(10)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = s.recv(65536)
            if not d: break
            data += d
        while True:  # short body
            s.settimeout(0.3); d = s.recv(65536)
            if not d: break
            data += d
    except Exception: pass
    head, _, body = data.partition(b"\r\n\r\n")
    return (head.split(b"\r\n")[0].decode() if head else "(closed)"), body[:200].decode(errors="replace")
pid = int(open("rotor.pid").read())
print("RSS at start:", rss(pid))
# 1. five connections declare 32 MiB and send one byte a second
conns = []
for i in range(5):
    s = socket.create_connection(ADDR); s.sendall((HEAD % (32 << 20)).encode()); conns.append(s)
t0 = time.time()
answered = {}
while len(answered) < 5 and time.time() - t0 < 15:
    for i, s in enumerate(conns):
        if i in answered: continue
        try: s.send(b"{")
        except Exception: pass
        s.setblocking(False)
        try:
            d = s.recv(65536)
            if d: answered[i] = (round(time.time() - t0, 1), d.split(b"\r\n")[0].decode(), d.partition(b"\r\n\r\n")[2][:160].decode())
        except BlockingIOError: pass
        s.setblocking(True)
    time.sleep(1)
for i in sorted(answered): print("trickle conn", i, "answered after", answered[i][0], "s:", answered[i][1], answered[i][2])
print("RSS after trickle:", rss(pid))
for s in conns: s.close()
# 2. the in-flight budget: A sends 20 MiB of a 32 MiB body and stalls, B does the same
blob = b" " * (20 << 20)
a = socket.create_connection(ADDR); a.sendall((HEAD % (32 << 20)).encode()); a.sendall(blob)
time.sleep(0.3)
print("RSS with A's 20 MiB in flight:", rss(pid))
b = socket.create_connection(ADDR); b.sendall((HEAD % (32 << 20)).encode())
try: b.sendall(blob)
except Exception as e: print("B send:", e)
print("B:", *status_of(b))
# a small request still passes while A holds its 20 MiB
c = socket.create_connection(ADDR)
body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
c.sendall((HEAD % len(body)).encode() + body)
print("small request meanwhile:", status_of(c)[0])
a.close(); b.close(); c.close()
time.sleep(2.5)
print("RSS 2.5 s after closing:", rss(pid))
