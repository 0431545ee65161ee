#!/usr/bin/env bash
# Many instances, one gateway (issue 17): what sharing windows through Redis costs and how exact
# it is, on loopback. Starts one redis-server, `rotor mock` and two rotor instances sharing the
# Redis, then drives both at a fixed request rate (python3, one connection per instance):
#   1. calls: a roomy limit (rpm = 1000000) at RATE req/s per instance for DURATION s; prints
#      Redis lease-script calls per second per instance, draws, slots leased and returned.
#   2. exact: rpm = LIMIT on one key, both instances offered EXACT_RATE req/s for EXACT_S s
#      (more than LIMIT in total, inside one window); prints admitted vs LIMIT (under-admission
#      = LIMIT - admitted; over-admission would be a bug).
#
#   benches/cluster.sh                         # debug binary, about 1 minute
#   BIN=target/release/rotor RATE="20 200" benches/cluster.sh
#   3. load (PARTS=load; needs wrk): both instances under wrk at once (-t1 -cCONNS each,
#      LOAD_S s, REPEAT rounds alternating), sharing Redis with a limit no run fills vs two
#      independent instances (no [cluster]); prints summed requests/s, median [min-max].
#   BIN=target/release/rotor PARTS=load benches/cluster.sh
#
# Knobs: BIN (target/debug/rotor), RATE ("10 50 200"), DURATION (10), LIMIT (120), EXACT_RATE (5),
# EXACT_S (40), LEASE_MS (2000), PORT_BASE (19300), PARTS ("calls exact"; add "load"), CONNS (32),
# LOAD_S (5), REPEAT (3), LOAD_RPM (1000000000; -1 = no limit, no leases), SHOW_DRAWS (0). Needs redis-server and python3 (and wrk for load).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug/rotor}
RATE=${RATE:-"10 50 200"}
DURATION=${DURATION:-10}
LIMIT=${LIMIT:-120}
EXACT_RATE=${EXACT_RATE:-5}
EXACT_S=${EXACT_S:-40}
LEASE_MS=${LEASE_MS:-2000}
PORT_BASE=${PORT_BASE:-19300}
PARTS=${PARTS:-"calls exact"}
CONNS=${CONNS:-32}
LOAD_S=${LOAD_S:-5}
REPEAT=${REPEAT:-3}
REDIS_PORT=$PORT_BASE
MOCK_PORT=$((PORT_BASE + 1))
A_PORT=$((PORT_BASE + 2))
B_PORT=$((PORT_BASE + 3))

[ -x "$BIN" ] || cargo build --quiet
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
"$BIN" mock --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 &
pids+=($!)

conf() { # port rpm prefix [cluster: 1|0]
  local cluster=""
  if [ "${4:-1}" = 1 ]; then
    cluster="[cluster]
redis_url = \"redis://127.0.0.1:$REDIS_PORT\"
key_prefix = \"$3\"
lease_ms = $LEASE_MS"
  fi
  cat >"$work/$1.toml" <<TOML
[server]
listen = "127.0.0.1:$1"
workers = 1
[storage]
path = ""
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
keys = ["sk-bench-cluster-0001"]
models = ["gpt-4o-mini"]
rpm = $2
$cluster
TOML
}

start_pair() { # rpm prefix [cluster: 1|0]
  conf "$A_PORT" "$1" "$2" "${3:-1}"
  conf "$B_PORT" "$1" "$2" "${3:-1}"
  RUST_LOG=warn "$BIN" --config "$work/$A_PORT.toml" >"$work/a.log" 2>&1 &
  pair=($!)
  RUST_LOG=warn "$BIN" --config "$work/$B_PORT.toml" >"$work/b.log" 2>&1 &
  pair+=($!)
  pids+=("${pair[@]}")
  for port in "$A_PORT" "$B_PORT"; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  done
}

stop_pair() {
  kill "${pair[@]}" 2>/dev/null || true
  wait "${pair[@]}" 2>/dev/null || true
}

metric() { # port name
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

drive() { # rate_per_instance seconds -> "ok limited other"
  python3 - "$A_PORT" "$B_PORT" "$1" "$2" <<'PY'
import http.client, sys, threading, time
ports, rate, secs = sys.argv[1:3], float(sys.argv[3]), float(sys.argv[4])
body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
counts = {"ok": 0, "limited": 0, "other": 0}
lock = threading.Lock()
def run(port):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    start = time.monotonic()
    n = 0
    while True:
        due = start + n / rate
        now = time.monotonic()
        if due - start >= secs:
            break
        if due > now:
            time.sleep(due - now)
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = conn.getresponse(); r.read()
        key = "ok" if r.status == 200 else "limited" if r.status == 429 else "other"
        with lock:
            counts[key] += 1
        n += 1
threads = [threading.Thread(target=run, args=(p,)) for p in ports]
[t.start() for t in threads]; [t.join() for t in threads]
print(counts["ok"], counts["limited"], counts["other"])
PY
}

if [[ " $PARTS " == *" calls "* ]]; then
echo "== 1. Redis calls at a fixed rate (rpm = 1000000, lease_ms = $LEASE_MS, 2 instances) =="
printf '%-14s %-12s %-16s %-12s %-14s %-14s\n' "req/s/inst" "ok/limited" "calls/s/inst" "draws/inst" "leased/inst" "returned/inst"
for rate in $RATE; do
  start_pair 1000000 "bench-calls-$rate"
  c0=$(metric "$A_PORT" rotor_cluster_redis_calls_total)
  read -r ok limited other < <(drive "$rate" "$DURATION")
  c1=$(metric "$A_PORT" rotor_cluster_redis_calls_total)
  draws=$(metric "$A_PORT" rotor_cluster_lease_draws_total)
  leased=$(metric "$A_PORT" rotor_cluster_slots_leased_total)
  returned=$(metric "$A_PORT" rotor_cluster_slots_returned_total)
  calls=$(python3 -c "print(f'{($c1 - $c0) / $DURATION:.2f}')")
  printf '%-14s %-12s %-16s %-12s %-14s %-14s\n' "$rate" "$ok/$limited" "$calls" "$draws" "$leased" "$returned"
  stop_pair
done

fi

if [[ " $PARTS " == *" exact "* ]]; then
echo
echo "== 2. Exactness: rpm = $LIMIT, 2 instances offered $EXACT_RATE req/s each for $EXACT_S s =="
start_pair "$LIMIT" "bench-exact-$$"
read -r ok limited other < <(drive "$EXACT_RATE" "$EXACT_S")
denied=$(( $(metric "$A_PORT" rotor_cluster_lease_denied_total) + $(metric "$B_PORT" rotor_cluster_lease_denied_total) ))
echo "admitted $ok of limit $LIMIT (offered $((ok + limited + other)), 429: $limited, other: $other, lease draws denied: $denied)"
echo "under-admission: $((LIMIT - ok))"
stop_pair
fi

if [[ " $PARTS " == *" load "* ]]; then
  cat >"$work/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}]}'
LUA
  load_once() { # -> summed rps of both instances
    wrk -t1 -c"$CONNS" -d"${LOAD_S}s" -s "$work/chat.lua" "http://127.0.0.1:$A_PORT/v1/chat/completions" >"$work/wa" 2>&1 &
    local wa=$!
    wrk -t1 -c"$CONNS" -d"${LOAD_S}s" -s "$work/chat.lua" "http://127.0.0.1:$B_PORT/v1/chat/completions" >"$work/wb" 2>&1
    wait "$wa"
    if grep -q "Non-2xx" "$work/wa" "$work/wb"; then echo "non-2xx answers under load" >&2; fi
    if [ "${SHOW_DRAWS:-0}" = 1 ]; then
      echo "draws A: $(metric "$A_PORT" rotor_cluster_lease_draws_total) calls A: $(metric "$A_PORT" rotor_cluster_redis_calls_total)" >&2
    fi
    awk '/Requests\/sec/ {s += $2} END {printf "%.0f", s}' "$work/wa" "$work/wb"
  }
  echo
  echo "== 3. Load: two instances under wrk at once (-t1 -c$CONNS each, ${LOAD_S}s, $REPEAT rounds) =="
  shared=(); alone=()
  for round in $(seq "$REPEAT"); do
    for mode in 1 0; do
      [ $((round % 2)) = 0 ] && mode=$((1 - mode))
      start_pair "${LOAD_RPM:-1000000000}" "bench-load-$round" "$mode"
      rps=$(load_once)
      if [ "$mode" = 1 ]; then shared+=("$rps"); else alone+=("$rps"); fi
      stop_pair
    done
  done
  summary() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%s [%s-%s]", v[int((NR+1)/2)], v[1], v[NR]}'; }
  echo "sharing Redis:  $(summary "${shared[@]}") req/s"
  echo "independent:    $(summary "${alone[@]}") req/s"
fi
