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
# the slope between two CHUNKS values), INTERVAL_MS (the mock's gap between a stream's events,
# 0: written back to back, rotor reads several at once and how many varies; 1: each event its
# own read, as a model's tokens arrive, and the count repeats within 0.4 %),
# SDK=1 (the request head carries the 13 further fields openai-python sends),
# ROTOR_BIN (a rotor binary to profile instead of target/$PROFILE/rotor; the mock stays the same),
# OUT (directory for perf.data / callgrind.out, default a temp dir that is removed unless set),
# KEY_LIMITS (TOML lines added to the provider, e.g. "rpm = 100000000" + newline + "tpm = 1000000000",
# so windows are counted), CLUSTER=1 ([cluster] on: starts a redis-server on REDIS_PORT (18583),
# prints Redis commands and redis-server CPU per request next to the count; LEASE_MS,
# LEASE_WAIT_MS: under callgrind a lease draw is ~50x slower, 5000 keeps 429s out of the count),
# WARMUP (callgrind: seconds of load before counting, 2; with CLUSTER=1 use 10 so the first,
# slow-to-translate lease draws and the lease ramp-up stay out of the count).
# SETTLE (callgrind with the log on: seconds the writer gets to drain the queue before the
# counters are zeroed and, in memory, again before the dump, 4: at 1.5 on a busy machine
# warm-up rows leaked into the window; to a file, the rows are then counted in the file).
# Callgrind with LOG=file writes one file per thread and two dumps: callgrind.out.1-NN (every
# thread, the load) and callgrind.out.2-NN (after it, until the writer has written the measured
# rows; only the threads that are not workers count of it); the summary shown is the worker's.
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
  # A valgrind that is killed leaves its three vgdb FIFOs behind (679 sets in /tmp after a
  # day of runs); they are named after its pid.
  for p in "${PIDS[@]}"; do rm -f "${TMPDIR:-/tmp}"/vgdb-pipe-*-"$p"-by-*; done
  [ -n "$KEEP" ] || rm -rf "$OUT"
}
trap cleanup EXIT

# shellcheck source=benches/lib.sh
. benches/lib.sh
needed() { need "$1" "$2" || { echo "$1 is required (apt-get install $2)"; exit 1; }; }
needed wrk wrk
case $WHAT in
  perf) needed perf linux-perf ;;
  callgrind) needed valgrind valgrind; needed callgrind_annotate valgrind
    if [ "${LOG:-memory}" = file ]; then needed sqlite3 sqlite3; fi ;;
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
if [ -n "${KEY_LIMITS:-}" ]; then printf '%s\n' "$KEY_LIMITS" >>"$OUT/rotor.toml"; fi
REDIS_PID=""
if [ "${CLUSTER:-0}" = 1 ]; then
  needed redis-server redis-server
  REDIS_PORT=${REDIS_PORT:-18583}
  require_free_ports "$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 & REDIS_PID=$!
  PIDS+=($REDIS_PID)
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  cat >>"$OUT/rotor.toml" <<TOML
[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "profile"
lease_ms = ${LEASE_MS:-2000}
lease_wait_ms = ${LEASE_WAIT_MS:-250}
TOML
fi
# redis_stats -> "commands cpu_ticks": every command Redis ran so far, and its CPU (user+sys ticks).
redis_stats() {
  [ -n "$REDIS_PID" ] || { echo "0 0"; return; }
  local calls
  calls=$(redis-cli -p "$REDIS_PORT" INFO commandstats | awk -F'[=,:]' '/^cmdstat_/ {s += $3} END {print s + 0}')
  echo "$calls $(awk '{print $14 + $15}' "/proc/$REDIS_PID/stat")"
}
redis_report() { # n seconds before(commands ticks) after(commands ticks)
  [ -n "$REDIS_PID" ] || return 0
  awk -v n="$1" -v d="$2" -v c0="$3" -v t0="$4" -v c1="$5" -v t1="$6" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    printf "redis: %d commands in %.1f s (%.1f/s, %.4f per request; INFO counts itself), redis-server CPU %.1f us per request\n",
      c1 - c0, d, (c1 - c0) / d, (c1 - c0) / n, (t1 - t0) * 1e6 / hz / n }'
  redis-cli -p "$REDIS_PORT" INFO commandstats | grep '^cmdstat_' | cut -d, -f1-2
}
stream=false; [ "$MODE" = stream ] && stream=true
chat_lua "$stream" >"$OUT/body.lua"
if [ "${SDK:-0}" = 1 ]; then
  # A request head as the official openai-python SDK (1.54) sends it: 13 fields besides Host,
  # Content-Type, Authorization and Content-Length.
  cat >>"$OUT/body.lua" <<'LUA'
wrk.headers["Accept-Encoding"] = "gzip, deflate"
wrk.headers["Connection"] = "keep-alive"
wrk.headers["Accept"] = "application/json"
wrk.headers["User-Agent"] = "OpenAI/Python 1.54.4"
wrk.headers["X-Stainless-Lang"] = "python"
wrk.headers["X-Stainless-Package-Version"] = "1.54.4"
wrk.headers["X-Stainless-OS"] = "Linux"
wrk.headers["X-Stainless-Arch"] = "x64"
wrk.headers["X-Stainless-Runtime"] = "CPython"
wrk.headers["X-Stainless-Runtime-Version"] = "3.12.3"
wrk.headers["X-Stainless-Async"] = "false"
wrk.headers["x-stainless-retry-count"] = "0"
wrk.headers["x-stainless-read-timeout"] = "600"
LUA
fi
cp "$OUT/body.lua" "$OUT/counted.lua"
if [ -n "${REQUESTS:-}" ]; then
  # A fixed workload: the wrk thread stops after REQUESTS answers and leaves a mark, at which
  # the measured window ends (-d only bounds the run: wrk itself sleeps all of -d).
  cat >>"$OUT/counted.lua" <<LUA
local answered = 0
function response(status, headers, body)
  answered = answered + 1
  if answered == $REQUESTS then
    wrk.thread:stop()
    io.open("$OUT/answered", "w"):close()
  end
end
LUA
fi
URL="http://127.0.0.1:$ROTOR_PORT/v1/chat/completions"

"$BUILT" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks "${CHUNKS:-5}" --interval-ms "${INTERVAL_MS:-0}" >"$OUT/mock.log" 2>&1 & PIDS+=($!)
if [ "$WHAT" = callgrind ]; then
  # With the log to a file each thread gets its own dump file (see the window below).
  threads=no; [ "$LOG" = file ] && threads=yes
  ROTOR_LOG=warn valgrind --tool=callgrind --separate-threads="$threads" --callgrind-out-file="$OUT/callgrind.out" \
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
    read -r rc0 rt0 < <(redis_stats)
    n=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/body.lua" "$URL" | requests)
    read -r u1 s1 < <(ticks)
    read -r rc1 rt1 < <(redis_stats)
    hz=$(getconf CLK_TCK)
    awk -v n="$n" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" -v d="$DURATION" -v m="$MODE" -v c="$CONNS" 'BEGIN {
      printf "%s c=%s: %d requests, %.0f rps; rotor CPU per request: user %.2f us, kernel %.2f us, total %.2f us (%.2f cores)\n",
        m, c, n, n / d, u * 1e6 / hz / n, s * 1e6 / hz / n, (u + s) * 1e6 / hz / n, (u + s) / hz / d }'
    redis_report "$n" "$DURATION" "$rc0" "$rt0" "$rc1" "$rt1"
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
    warm=$(wrk -t1 -c8 -d"${WARMUP:-2}s" -s "$OUT/body.lua" "$URL" | requests) # warm the pool (and leases)
    # With the log on, the writer (a 100 ms tick on the control thread) first writes what the
    # warm-up queued, and after the run writes every measured request before the dump: the
    # window holds the writer's work for exactly the measured requests, not a varying part of
    # the warm-up's and the run's last tick (that made the log-on figure vary by ~8 %).
    # Under valgrind the control thread can stall for minutes once the load stops (2026-12-04):
    # an idle worker blocks in io_uring_enter holding valgrind's thread lock, so the writer,
    # back from a pwrite, waits for it (callgrind_control -b: thread 2 in pwrite under
    # requests::insert, thread 3 in IoUringDriver::inner_park). A fixed sleep left 320-2,300
    # warm-up rows for the window (1.16-2.14 rows written per measured request). With the log
    # to a file, `settle ROWS` waits (up to 600 rounds) until sqlite3 counts ROWS rows in the
    # file, meanwhile keeping the worker busy with /health (no row, no rollup): that is what
    # hands the writer valgrind's lock. Valgrind runs one thread at a time, and it treats
    # io_uring_enter as a system call that does not block, so an idle worker waiting for its
    # next completion keeps the lock; the control thread, its 100 ms park over (or back from a
    # pwrite of SQLite's), waits for the lock until the worker has run out its time slice
    # (100,000 basic blocks), that is until enough requests reach the worker. How many that
    # takes depends on whether the writer had caught up when the load stopped: until
    # 2026-12-05 the window counted those nudges (0 to 300 or more /health requests, about
    # 19.5k instructions each: 23.4k-28k a chat request), now the dumps leave them out.
    db_rows() { sqlite3 "$OUT/rotor.db" 'SELECT ifnull(SUM(id - first + 1), 0) FROM request_batches' 2>/dev/null || echo 0; }
    settle() {
      [ "$LOG" = off ] && return 0
      if [ "$LOG" != file ]; then sleep "${SETTLE:-4}"; return 0; fi
      local rows=0 sent
      for _ in $(seq 600); do
        rows=$(db_rows)
        [ "${rows:-0}" -ge "$1" ] && return 0
        sent=$(wrk -t1 -c1 -d1s "http://127.0.0.1:$ROTOR_PORT/health" | requests)
        NUDGES=$((NUDGES + ${sent:-0}))
        [ "${2:-}" = once ] && return 0
      done
      echo "warning: the log writer wrote $rows of $1 rows before the counters were read" >&2
    }
    # dump_total FILE...: the instructions the dump files hold, together.
    dump_total() { local f t=0; for f in "$@"; do t=$((t + $(awk '/^(summary|totals):/ {print $2; exit}' "$f"))); done; echo "$t"; }
    NUDGES=0
    [ "$LOG" = file ] && sleep "${SETTLE:-4}"
    settle "$warm"
    # wrk's count leaves out the requests it had in flight when it stopped; their rows come
    # after: the log is settled when a second of nudges adds no row.
    rows0=$([ "$LOG" = file ] && db_rows || echo 0)
    while [ "$LOG" = file ]; do
      settle "$((rows0 + 1))" once
      [ "$(db_rows)" = "$rows0" ] && break
      rows0=$(db_rows)
    done
    NUDGES=0
    callgrind_control -z "$ROTOR_PID" >/dev/null
    measured=$DURATION; [ -n "${REQUESTS:-}" ] && measured=120
    read -r rc0 rt0 < <(redis_stats)
    t0=$(date +%s.%N)
    rm -f "$OUT/answered"
    wrk -t1 -c8 -d"${measured}s" --timeout 30s -s "$OUT/counted.lua" "$URL" >"$OUT/wrk.txt" & WRK_PID=$!
    # With REQUESTS, end wrk at its mark (SIGINT: it prints its summary and exits). Until
    # 2026-12-05 the window ran all of -d (120 s) for about a second of load, and ~660 of a chat
    # request's count was the idle worker's housekeeping over those two minutes (ticker passes,
    # mimalloc's collect), a cost per second, not per request.
    while [ -n "${REQUESTS:-}" ] && [ ! -e "$OUT/answered" ] && kill -0 "$WRK_PID" 2>/dev/null; do sleep 0.05; done
    kill -INT "$WRK_PID" 2>/dev/null || true
    wait "$WRK_PID"
    t1=$(date +%s.%N)
    read -r rc1 rt1 < <(redis_stats)
    n=$(requests <"$OUT/wrk.txt")
    if [ "$LOG" = file ]; then
      # Two dumps, one file per thread each: the first when the load is over (every thread,
      # wrk's closes handled), the second once the writer has put every measured row in the
      # file, of which only the threads that run no worker count (the control thread, whose
      # writer work for the measured rows it holds; main). The worker's part of the second is
      # the nudges, requests of the harness's own, and so is left out (see settle).
      sleep 0.5
      callgrind_control -d "$ROTOR_PID" >/dev/null
      settle "$((rows0 + n))"
      rows1=$(db_rows)
      callgrind_control -d "$ROTOR_PID" >/dev/null
      sleep 1
      load=$(dump_total "$OUT"/callgrind.out.1-*)
      after=$(dump_total $(grep -L 'monoio::runtime' "$OUT"/callgrind.out.2-*))
      writer=$(($(dump_total $(grep -L 'monoio::runtime' "$OUT"/callgrind.out.1-*)) + after))
      total=$((load + after))
      echo "log rows written in the window: $((rows1 - rows0)) (for $n requests); the threads other than the worker (the log writer's): $((writer / n)) per request, $((after / n)) of it after the load ($NUDGES /health nudges then, not counted)"
      dump=$(ls -S "$OUT"/callgrind.out.1-* | head -1)
    else
      settle "$((warm + n))"
      callgrind_control -d "$ROTOR_PID" >/dev/null
      sleep 1
      dump=$(ls "$OUT"/callgrind.out.* | tail -1)
      total=$(dump_total "$dump")
    fi
    if grep -qE 'Non-2xx|Socket errors' "$OUT/wrk.txt"; then
      cat "$OUT/wrk.txt"; echo "errors during the measured run: the count would not be comparable"; exit 1
    fi
    echo "$MODE: $n requests, $((total / n)) user-space instructions per request (callgrind, c=8, log $LOG, profile $PROFILE, cluster ${CLUSTER:-0})"
    redis_report "$n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$rc0" "$rt0" "$rc1" "$rt1"
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,30p' | cut -c1-160
    if [ -n "$KEEP" ]; then echo "callgrind dumps in $OUT"; fi
    ;;
esac
