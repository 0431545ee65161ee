#!/usr/bin/env bash
# A/B of two rotors side by side behind one mock: two builds, or one build with two configs or
# environments. wrk alternates between them every round (A first, then B; the next round
# B first), so drift on a shared machine falls on both. Per round it prints requests/s, p99,
# p50, p90, p99.9, the slowest request, rotor's user and kernel CPU per request (from /proc)
# and the TCP segments per request on loopback (nstat, when there); then the medians of each
# side, each side's p99 and p99.9 range over the rounds, and in how many rounds B's came in
# under A's (on this project's noisy VMs a difference that is not there still wins about half
# the rounds).
#
#   A=/tmp/rotor-before benches/ab.sh                       # another build against target/release
#   B_TOML_SED='s/^log_requests = true/log_requests = false/' benches/ab.sh   # log on against off
#   B_ENV="SOME_SWITCH=1" CONNS=256 MODE=stream benches/ab.sh
#   UPSTREAM_TLS=1 LOG_TO=memory A=/tmp/rotor-before benches/ab.sh  # both rotors reach the mock over TLS
#
# Knobs: A, B (rotor binaries; target/release/rotor), A_ENV, B_ENV (extra environment, VAR=value
# words), B_TOML_SED (a sed script applied to B's config, e.g. to add `max_records = 0` after
# the `log_requests` line), CONNS (64), DURATION (s per round and side, 4), ROUNDS (6), MODE
# (chat | stream), WORKERS (2), LOG_TO (file: both logs to SQLite files in a temp dir, as users
# run it; memory), UPSTREAM_TLS (0; 1: through nginx terminating TLS in front of the mock, see
# `tls_front`), MOCK_PORT, A_PORT, B_PORT, TLS_PORT. The mock is A's `rotor mock`. Bounded (wrk -d);
# loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

A=${A:-target/release/rotor}
B=${B:-target/release/rotor}
CONNS=${CONNS:-64}
DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-6}
MODE=${MODE:-chat}
WORKERS=${WORKERS:-2}
LOG_TO=${LOG_TO:-file}
MOCK_PORT=${MOCK_PORT:-18681}
A_PORT=${A_PORT:-18682}
B_PORT=${B_PORT:-18683}
TLS_PORT=${TLS_PORT:-18684}
UPSTREAM_TLS=${UPSTREAM_TLS:-0}
case $UPSTREAM_TLS in 0 | 1) ;; *) echo "UPSTREAM_TLS must be 0 or 1, not '$UPSTREAM_TLS'" >&2; exit 2 ;; esac

# shellcheck source=benches/lib.sh
. benches/lib.sh
need wrk wrk || { echo "wrk is required"; exit 1; }
for bin in "$A" "$B"; do [ -x "$bin" ] || { echo "no rotor binary at $bin (cargo build --release)"; exit 1; }; done
require_free_ports "$MOCK_PORT" "$A_PORT" "$B_PORT"

scratch

db() { [ "$LOG_TO" = file ] && echo "$WORK/$1.db" || echo ""; }
"$A" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks 5 >"$WORK/mock.log" 2>&1 & PIDS+=($!)
if [ "$UPSTREAM_TLS" = 1 ]; then
  require_free_ports "$TLS_PORT"
  tls_front "$TLS_PORT" "$MOCK_PORT" 4096
fi
DB_PATH=$(db a) rotor_config "$A_PORT" "$WORKERS" "$MOCK_PORT" >"$WORK/a.toml"
DB_PATH=$(db b) rotor_config "$B_PORT" "$WORKERS" "$MOCK_PORT" | sed "${B_TOML_SED:-}" >"$WORK/b.toml"
# shellcheck disable=SC2086
env ${A_ENV:-} ROTOR_LOG=warn "$A" --config "$WORK/a.toml" >"$WORK/a.log" 2>&1 & A_PID=$!; PIDS+=($A_PID)
# shellcheck disable=SC2086
env ${B_ENV:-} ROTOR_LOG=warn "$B" --config "$WORK/b.toml" >"$WORK/b.log" 2>&1 & B_PID=$!; PIDS+=($B_PID)
for port in "$MOCK_PORT" "$A_PORT" "$B_PORT"; do wait_ready "$port"; done
stream=false; [ "$MODE" = stream ] && stream=true
chat_lua "$stream" >"$WORK/body.lua"
# p99.9 and the slowest request, which wrk's --latency table leaves out (stalls of a few ms
# that hit under 1 % of requests show there first).
cat >>"$WORK/body.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("p999_us %d\nmax_us %d\n", latency:percentile(99.9), latency.max))
end
LUA
HAVE_NSTAT=0; command -v nstat >/dev/null && HAVE_NSTAT=1
TICKS=$(getconf CLK_TCK)

# One side's round: "side rps p99_ms user_us kernel_us segments p50_ms p90_ms p999_ms max_ms" (segments "-"
# without nstat). p50 and p90 beside p99 tell a tail of stalls (p99 alone moves) from a load
# that slows every request (all three move).
round() {
  local side=$1 port=$2 pid=$3 u0 k0 u1 k1 out segs="-"
  read -r u0 k0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  [ "$HAVE_NSTAT" = 1 ] && nstat -n >/dev/null
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/body.lua" "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
  [ "$HAVE_NSTAT" = 1 ] && segs=$(nstat -z TcpInSegs 2>/dev/null | awk '/TcpInSegs/ {print $2}')
  read -r u1 k1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  awk -v side="$side" -v u=$((u1 - u0)) -v k=$((k1 - k0)) -v hz="$TICKS" -v segs="$segs" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /requests in/ {n = $1} /Requests\/sec/ {rps = $2} /^ +50%/ {p50 = ms($2)} /^ +90%/ {p90 = ms($2)} /^ +99%/ {p99 = ms($2)} /^p999_us/ {p999 = $2 / 1000} /^max_us/ {mx = $2 / 1000} /Non-2xx|Socket errors/ {err = " ERRORS"}
    END { printf "%s %.0f %.3f %.2f %.2f %s %.3f %.3f %.3f %.3f%s\n", side, rps, p99, u * 1e6 / hz / n, k * 1e6 / hz / n,
      (segs == "-" ? "-" : sprintf("%.2f", segs / n)), p50, p90, p999, mx, err }' <<<"$out"
}

printf '%s c=%s, %s rounds of %ss a side, %s workers, log %s\nA: %s %s\nB: %s %s%s\n' "$MODE" "$CONNS" "$ROUNDS" "$DURATION" \
  "$WORKERS" "$LOG_TO" "$A" "${A_ENV:-}" "$B" "${B_ENV:-}" "${B_TOML_SED:+ (config: $B_TOML_SED)}"
printf '%-4s %8s %8s %8s %10s %9s %8s %8s %8s %8s\n' side rps p99_ms user_us kernel_us segments p50_ms p90_ms p999_ms max_ms
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="a b"; else order="b a"; fi
  for side in $order; do
    if [ "$side" = a ]; then round A "$A_PORT" "$A_PID"; else round B "$B_PORT" "$B_PID"; fi
  done
done | tee "$WORK/rounds" | awk '{printf "%-4s %8s %8s %8s %10s %9s %8s %8s %8s %8s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}'
awk "$STATS_AWK"'
  { for (f = 2; f <= 10; f++) v[$1, f] = v[$1, f] " " $f
    k = ++seen[$1]; p99[$1, k] = $3; p999[$1, k] = $9 }
  END { for (s = 0; s < 2; s++) { side = s ? "B" : "A"
          printf "median %s: rps %.0f, p50/p90/p99/p99.9/max %.3f/%.3f/%.3f/%.3f/%.3f ms, user %.2f us, kernel %.2f us a request, segments %s\n", side,
            median(v[side, 2]), median(v[side, 7]), median(v[side, 8]), median(v[side, 3]), median(v[side, 9]), median(v[side, 10]),
            median(v[side, 4]), median(v[side, 5]),
            (v[side, 6] ~ /-/ ? "-" : median(v[side, 6]))
          printf "  %s over rounds: p99 [%s-%s] ms, p99.9 [%s-%s] ms\n", side, mn(v[side, 3]), mx(v[side, 3]), mn(v[side, 9]), mx(v[side, 9]) }
        # Rounds pair up in order (round r ran A and B back to back): how often B came in under A.
        for (r = 1; r <= seen["A"] && r <= seen["B"]; r++) { n++; u99 += (p99["B", r] + 0 < p99["A", r] + 0); u999 += (p999["B", r] + 0 < p999["A", r] + 0) }
        printf "B under A in %d of %d rounds for p99, %d of %d for p99.9 (about half of them when there is no difference)\n", u99, n, u999, n }' "$WORK/rounds"
