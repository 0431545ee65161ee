#!/usr/bin/env bash
# Soak: rotor (release build) in front of `rotor mock` with the request log on, driven by wrk at
# about RATE_PCT % of the peak it first measures, for MINUTES minutes; rotor's RSS, rows and
# database bytes are sampled every minute. Flat RSS is the pass mark (issue 13).
#
#   benches/soak-memory.sh                      # 10 minutes at 80 % of peak, in-memory log
#   MINUTES=3 STORAGE_PATH=/tmp/soak.db benches/soak-memory.sh
#
# Knobs: MINUTES (10), RATE_PCT (80), CONNS (64), WORKERS (2: rotor workers), STORAGE_PATH (""
# = in memory), LOG_REQUESTS (true; false for the baseline without the log), SKIP_BUILD=1.
# Loopback only; every wrk run is bounded by -d.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-10}
RATE_PCT=${RATE_PCT:-80}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-2}
STORAGE_PATH=${STORAGE_PATH:-}
MOCK_PORT=${MOCK_PORT:-18681}
ROTOR_PORT=${ROTOR_PORT:-18682}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# shellcheck source=benches/lib.sh
. benches/lib.sh
scratch
need wrk wrk || { echo "wrk is required"; exit 1; }
require_free_ports "$MOCK_PORT" "$ROTOR_PORT"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
ROTOR="$TARGET_DIR/release/rotor"

"$ROTOR" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks 5 >"$WORK/mock.log" 2>&1 & PIDS+=($!)
rotor_config "$ROTOR_PORT" "$WORKERS" "$MOCK_PORT" | sed "s|^path = \"\"|path = \"$STORAGE_PATH\"|" >"$WORK/rotor.toml"
ROTOR_LOG=warn "$ROTOR" --config "$WORK/rotor.toml" >"$WORK/rotor.log" 2>&1 & ROTOR_PID=$!; PIDS+=($ROTOR_PID)
wait_ready "$ROTOR_PORT"
chat_lua false >"$WORK/chat.lua"

rps_of() { awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$1"; }
metric() { curl -s "127.0.0.1:$ROTOR_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$ROTOR_PID/status"; }

peak=$(rps_of "$(wrk -t1 -c"$CONNS" -d10s -s "$WORK/chat.lua" "http://127.0.0.1:$ROTOR_PORT/v1/chat/completions")")
target=$((peak * RATE_PCT / 100))
# Each connection pauses between requests so that CONNS connections make about `target`/s.
delay_ms=$(awk -v c="$CONNS" -v t="$target" -v p="$peak" 'BEGIN { d = c * 1000 / t - c * 1000 / p; printf "%.3f", (d > 0 ? d : 0) }')
cat "$WORK/chat.lua" >"$WORK/paced.lua"
echo "function delay() return $delay_ms end" >>"$WORK/paced.lua"
printf 'peak %s rps at c=%s; soak at ~%s rps (%s %%) for %s min; log_requests = %s, storage.path = "%s"\n' \
  "$peak" "$CONNS" "$target" "$RATE_PCT" "$MINUTES" "${LOG_REQUESTS:-true}" "$STORAGE_PATH"
printf '%6s %10s %8s %10s %12s %10s\n' minute rps rss_MB log_rows storage_bytes dropped
printf '%6s %10s %8s %10s %12s %10s\n' 0 - "$(rss_mb)" "$(metric rotor_log_rows)" "$(metric rotor_storage_bytes)" "$(metric rotor_log_dropped_total)"
for m in $(seq "$MINUTES"); do
  out=$(wrk -t1 -c"$CONNS" -d60s -s "$WORK/paced.lua" "http://127.0.0.1:$ROTOR_PORT/v1/chat/completions")
  printf '%6s %10s %8s %10s %12s %10s\n' "$m" "$(rps_of "$out")" "$(rss_mb)" "$(metric rotor_log_rows)" \
    "$(metric rotor_storage_bytes)" "$(metric rotor_log_dropped_total)"
done
