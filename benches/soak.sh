#!/usr/bin/env bash
# Chaos soak (issue 12): rotor in front of `rotor mock --chaos`, driven by benches/soak.rs at
# about 80% of rotor's peak for DURATION seconds, mixed streams. Then the client's counts are
# compared with /metrics and the request log. Loopback only; every step is bounded in time.
#
#   benches/soak.sh                 # 600 s: 5% 5xx, 1% cuts, 1% slow first bytes, some 429s
#   DURATION=120 RATE=2000 benches/soak.sh
#
# Knobs: DURATION (600), RATE (requests/s; default 80% of a 5 s wrk peak through rotor without
# faults), CHAOS (a 429 cools its key for a second, so at thousands of requests/s 1% 429s would
# keep every key cooling: "5xx=5,cut=1,slow=1,429=0.02,slow_ms=2000"), STREAM_PCT (30), CONNS (256
# client connections), WORKERS (2 rotor workers), KEYS (4 upstream keys), EXTRA_TOML (appended
# to the rotor config, e.g. a [retry] table), UPSTREAM_TLS (0; 1: rotor reaches the faulty mock
# through nginx terminating TLS, `tls_front`, as it reaches a provider; needs RATE, the peak
# being measured over plain TCP), TLS_PORT (18683), SKIP_BUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
CHAOS=${CHAOS:-"5xx=5,cut=1,slow=1,429=0.02,slow_ms=2000"}
STREAM_PCT=${STREAM_PCT:-30}
CONNS=${CONNS:-256}
WORKERS=${WORKERS:-2}
KEYS=${KEYS:-4}
MOCK_PORT=${MOCK_PORT:-18681}
ROTOR_PORT=${ROTOR_PORT:-18682}
TLS_PORT=${TLS_PORT:-18683}
UPSTREAM_TLS=${UPSTREAM_TLS:-0}
case $UPSTREAM_TLS in 0 | 1) ;; *) echo "UPSTREAM_TLS must be 0 or 1, not '$UPSTREAM_TLS'" >&2; exit 2 ;; esac
if [ "$UPSTREAM_TLS" = 1 ] && [ -z "${RATE:-}" ]; then
  echo "UPSTREAM_TLS=1 needs RATE (the peak is measured over plain TCP)" >&2; exit 2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-target}
ADMIN=soak-admin-key
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=benches/lib.sh
. benches/lib.sh
scratch
need wrk wrk || { echo "wrk is required"; exit 1; }
require_free_ports "$MOCK_PORT" "$ROTOR_PORT" "$((MOCK_PORT + 10))"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet
fi
ROTOR="$TARGET_DIR/release/rotor"
CLIENT=$(cargo bench --bench soak --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$CLIENT" ] || { echo "could not build benches/soak.rs"; exit 1; }

keys=$(for i in $(seq "$KEYS"); do printf '"sk-soak-key-%s",' "$i"; done)
write_config() { # PORT MOCK_PORT
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
workers = $WORKERS
admin_key = "$ADMIN"
[upstream]
first_byte_timeout_ms = 5000
stream_idle_timeout_ms = 5000
${CA_FILE:+ca_file = \"$CA_FILE\"}
[storage]
path = "$WORK/rotor.db"
log_requests = true
[[clients]]
name = "bench"
key = "bench-client-key"
[[providers]]
name = "mock"
kind = "openai"
base_url = "${UPSTREAM_URL:-http://127.0.0.1:$2/v1}"
keys = [${keys%,}]
models = ["gpt-4o-mini"]
${EXTRA_TOML:-}
TOML
}

wait_port() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "127.0.0.1:$1/health" && return 0
    sleep 0.1
  done
  echo "port $1 did not come up"; exit 1
}

if [ -z "${RATE:-}" ]; then
  # Peak through rotor with a clean mock (its own ports), log on.
  "$ROTOR" mock --listen "127.0.0.1:$((MOCK_PORT + 10))" --workers 1 >"$WORK/peak-mock.log" 2>&1 & peak_mock=$!
  write_config "$ROTOR_PORT" "$((MOCK_PORT + 10))" >"$WORK/peak.toml"
  ROTOR_LOG=warn "$ROTOR" --config "$WORK/peak.toml" >"$WORK/peak.log" 2>&1 & peak_rotor=$!
  PIDS+=("$peak_mock" "$peak_rotor")
  wait_port "$((MOCK_PORT + 10))"; wait_port "$ROTOR_PORT"
  chat_lua false >"$WORK/chat.lua"
  peak=$(wrk -t1 -c64 -d5s -s "$WORK/chat.lua" "http://127.0.0.1:$ROTOR_PORT/v1/chat/completions" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  kill "$peak_rotor" "$peak_mock"; wait "$peak_rotor" "$peak_mock" 2>/dev/null || true
  rm -f "$WORK"/rotor.db*
  RATE=$((peak * 8 / 10))
  echo "peak through rotor: $peak requests/s; soak rate $RATE"
fi

"$ROTOR" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chaos "$CHAOS" >"$WORK/mock.log" 2>&1 & PIDS+=($!)
if [ "$UPSTREAM_TLS" = 1 ]; then
  require_free_ports "$TLS_PORT"
  tls_front "$TLS_PORT" "$MOCK_PORT" $((CONNS * 2))
fi
write_config "$ROTOR_PORT" "$MOCK_PORT" >"$WORK/rotor.toml"
ROTOR_LOG=info "$ROTOR" --config "$WORK/rotor.toml" >"$WORK/rotor.log" 2>&1 & ROTOR_PID=$!; PIDS+=($ROTOR_PID)
wait_port "$MOCK_PORT"; wait_port "$ROTOR_PORT"

echo "soak: ${DURATION}s at $RATE requests/s, chaos $CHAOS, ${STREAM_PCT}% streams, $CONNS connections${CA_FILE:+, upstream over TLS}"
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$ROTOR_PID/status"; }
( for _ in $(seq $((DURATION / 60))); do sleep 60; echo "rss_mb $(rss)"; done ) & PIDS+=($!)
result=$("$CLIENT" "127.0.0.1:$ROTOR_PORT" "$RATE" "$DURATION" "$STREAM_PCT" "$CONNS")
echo "$result"
sleep 3 # the log writer flushes at least once a second

metrics=$(curl -s "127.0.0.1:$ROTOR_PORT/metrics")
counted=$(awk '/^rotor_requests_total\{endpoint="chat\/completions"/ {s += $NF} END {print s + 0}' <<<"$metrics")
logged=$(curl -s -H "Authorization: Bearer $ADMIN" "127.0.0.1:$ROTOR_PORT/admin/logs?limit=1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$result")
echo "client sent $sent; /metrics counts $counted; the log holds ${logged:-?}"
echo "quarantines and restores logged: $(grep -ciE 'quarantin' "$WORK/rotor.log" || true) lines"
grep -E '^rotor_(upstream_attempts_total|relay_failures_total|breaker_opens_total|breaker_state|key_quarantines_total|key_restores_total)' <<<"$metrics" || true
echo "rotor RSS at the end: $(rss) MB"
fail=0
[ "$sent" = "$counted" ] || { echo "MISMATCH: client and /metrics disagree"; fail=1; }
[ "$sent" = "${logged:-}" ] || { echo "MISMATCH: client and the log disagree"; fail=1; }
grep -q ' malformed=0 hang=0' <<<"$result" || { echo "FAIL: malformed answers or hangs"; fail=1; }
exit $fail
