#!/usr/bin/env bash
# Where a proxied request's time goes, for the hot-path work of issue 7. Starts `rotor mock` and
# one rotor worker in front of it on loopback, drives them with wrk, and reports one of:
#
#   benches/profile.sh cpu        # user and kernel CPU µs per request, from /proc (rotor's own)
#   benches/profile.sh perf       # perf record of rotor under load, top symbols (OUT keeps perf.data)
#   benches/profile.sh callgrind  # user-space instructions per request (repeatable on a busy box)
#
# Knobs: MODE (chat | stream), CONNS (256; callgrind uses 8), DURATION (s, 5), SKIP_BUILD=1,
# LOG (memory | file | off: rotor's request log in memory, to a SQLite file as users run it, or
# off), PROFILE (release; `gate` is the cheaper build the CI cost gate measures),
# REQUESTS (callgrind only: measure exactly this many requests instead of DURATION seconds),
# CHUNKS (content chunks per streamed answer from the mock, 5; the per-event cost of a stream is
# the slope between two CHUNKS values),
# ROTOR_BIN (a rotor binary to profile instead of target/$PROFILE/rotor; the mock stays the same),
# OUT (directory for perf.data / callgrind.out, default a temp dir that is removed unless set).
# Every run is bounded by wrk -d; loopback only. Needs wrk (apt-get when missing, as root),
# perf (linux-perf) or valgrind for the matching report.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-cpu}
MODE=${MODE:-chat}
CONNS=${CONNS:-256}
DURATION=${DURATION:-5}
MOCK_PORT=${MOCK_PORT:-18581}
ROTOR_PORT=${ROTOR_PORT:-18582}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
KEEP=${OUT:+1}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PIDS=()
cleanup() {
  # Under valgrind a worker blocked in io_uring_enter never sees SIGTERM; its dump is taken.
  local signal=TERM; [ "$WHAT" = callgrind ] && signal=KILL
  for p in "${PIDS[@]}"; do kill -s "$signal" "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$KEEP" ] || rm -rf "$OUT"
}
trap cleanup EXIT

# shellcheck source=benches/lib.sh
. benches/lib.sh
needed() { need "$1" "$2" || { echo "$1 is required (apt-get install $2)"; exit 1; }; }
needed wrk wrk
case $WHAT in
  perf) needed perf linux-perf ;;
  callgrind) needed valgrind valgrind; needed callgrind_annotate valgrind ;;
  cpu) ;;
  *) echo "usage: $0 cpu|perf|callgrind"; exit 2 ;;
esac

require_free_ports "$MOCK_PORT" "$ROTOR_PORT"
PROFILE=${PROFILE:-release}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --profile "$PROFILE" --quiet
# ROTOR_BIN: profile another build (an A/B against an older binary, alternating runs).
BUILT=$TARGET_DIR/$PROFILE/rotor
ROTOR=${ROTOR_BIN:-$BUILT}

LOG=${LOG:-memory}
case $LOG in
  memory) LOG_REQUESTS=true DB_PATH="" rotor_config "$ROTOR_PORT" 1 "$MOCK_PORT" >"$OUT/rotor.toml" ;;
  file) LOG_REQUESTS=true DB_PATH="$OUT/rotor.db" rotor_config "$ROTOR_PORT" 1 "$MOCK_PORT" >"$OUT/rotor.toml" ;;
  off) LOG_REQUESTS=false DB_PATH="" rotor_config "$ROTOR_PORT" 1 "$MOCK_PORT" >"$OUT/rotor.toml" ;;
  *) echo "LOG is memory, file or off"; exit 2 ;;
esac
stream=false; [ "$MODE" = stream ] && stream=true
chat_lua "$stream" >"$OUT/body.lua"
cp "$OUT/body.lua" "$OUT/counted.lua"
if [ -n "${REQUESTS:-}" ]; then
  # A fixed workload: the wrk thread stops after REQUESTS answers (-d only bounds the run).
  cat >>"$OUT/counted.lua" <<LUA
local answered = 0
function response(status, headers, body)
  answered = answered + 1
  if answered >= $REQUESTS then wrk.thread:stop() end
end
LUA
fi
URL="http://127.0.0.1:$ROTOR_PORT/v1/chat/completions"

"$BUILT" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks "${CHUNKS:-5}" >"$OUT/mock.log" 2>&1 & PIDS+=($!)
if [ "$WHAT" = callgrind ]; then
  ROTOR_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$ROTOR" --config "$OUT/rotor.toml" >"$OUT/rotor.log" 2>&1 & ROTOR_PID=$!
else
  ROTOR_LOG=warn "$ROTOR" --config "$OUT/rotor.toml" >"$OUT/rotor.log" 2>&1 & ROTOR_PID=$!
fi
PIDS+=($ROTOR_PID)
for _ in $(seq 120); do curl -s -o /dev/null "127.0.0.1:$ROTOR_PORT/health" && break; sleep 0.5; done

requests() { awk '/requests in/ {print $1}'; }
ticks() { awk '{print $14, $15}' "/proc/$ROTOR_PID/stat"; }

case $WHAT in
  cpu)
    wrk -t1 -c"$CONNS" -d1s -s "$OUT/body.lua" "$URL" >/dev/null # warm the pool
    read -r u0 s0 < <(ticks)
    n=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/body.lua" "$URL" | requests)
    read -r u1 s1 < <(ticks)
    hz=$(getconf CLK_TCK)
    awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v d="$DURATION" -v m="$MODE" -v c="$CONNS" 'BEGIN {
      printf "%s c=%s: %d requests, %.0f rps; rotor CPU per request: user %.2f us, kernel %.2f us, total %.2f us (%.2f cores)\n",
        m, c, n, n / d, u * 1e6 / hz / n, s * 1e6 / hz / n, (u + s) * 1e6 / hz / n, (u + s) / hz / d }'
    ;;
  perf)
    (wrk -t1 -c"$CONNS" -d"$((DURATION + 2))s" -s "$OUT/body.lua" "$URL" >"$OUT/wrk.txt" 2>&1 &)
    sleep 1
    perf record -F 2000 -g -p "$ROTOR_PID" -o "$OUT/perf.data" -- sleep "$DURATION" 2>/dev/null
    sleep 2
    grep -E 'Requests/sec' "$OUT/wrk.txt" || true
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep '%' | grep -v -- '--' | head -5
    perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%' | head -30
    if [ -n "$KEEP" ]; then echo "perf.data in $OUT"; fi
    ;;
  callgrind)
    wrk -t1 -c8 -d2s -s "$OUT/body.lua" "$URL" >/dev/null # warm the pool
    callgrind_control -z "$ROTOR_PID" >/dev/null
    measured=$DURATION; [ -n "${REQUESTS:-}" ] && measured=120
    wrk -t1 -c8 -d"${measured}s" --timeout 30s -s "$OUT/counted.lua" "$URL" >"$OUT/wrk.txt"
    callgrind_control -d "$ROTOR_PID" >/dev/null
    sleep 1
    n=$(requests <"$OUT/wrk.txt")
    if grep -qE 'Non-2xx|Socket errors' "$OUT/wrk.txt"; then
      cat "$OUT/wrk.txt"; echo "errors during the measured run: the count would not be comparable"; exit 1
    fi
    dump=$(ls "$OUT"/callgrind.out.* | tail -1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$MODE: $n requests, $((total / n)) user-space instructions per request (callgrind, c=8, log $LOG, profile $PROFILE)"
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,30p' | cut -c1-160
    if [ -n "$KEEP" ]; then echo "callgrind dumps in $OUT"; fi
    ;;
esac
