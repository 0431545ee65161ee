#!/usr/bin/env bash
# What rotor's memory is made of, idle and under held connections (issue 18 item 3). Starts
# `rotor mock` and one rotor (2 workers, request log on to a SQLite file, as users run it) on
# loopback and prints:
#   1. idle RSS with no traffic and an empty upstream pool, and where it sits (per mapping kind
#      from /proc/PID/smaps: the binary, thread stacks, io_uring rings, heap, ...);
#   2. per idle connection: IDLE keep-alive connections each make one request and stay open;
#      (RSS while held - RSS before) / IDLE;
#   3. per open stream: STREAMS concurrent slow streams (STREAM_CHUNKS chunks 50 ms apart) on a
#      fresh rotor; (peak RSS - idle RSS) / STREAMS.
#
#   benches/memory.sh                        # gate build, IDLE=10000, STREAMS=5000
#   PARTS=idle benches/memory.sh             # only the idle footprint (parts: idle conns streams)
#   MIMALLOC_ALLOW_THP=1 benches/memory.sh   # any MIMALLOC_* option reaches rotor unchanged
#
# Knobs: PROFILE (gate: as cheap as release to build and the same for memory), WORKERS (2),
# IDLE (10000), STREAMS (5000: two sockets each, so one process's fd limit must hold them),
# PROMPT_BYTES (0: each stream's request pads its user message to about that many bytes, as a
# conversation's context would), STREAM_CHUNKS (20), RAMP_MS (0: the streams start within one
# chunk interval, a burst whose bodies are all read before any answer starts; longer spreads
# the starts over it, a steady arrival, and STREAM_CHUNKS should then make each stream outlast
# it), UPSTREAM_TLS (0; 1: rotor reaches the mock over TLS, through
# nginx terminating it with a certificate of a CA made here by openssl, as a provider is
# reached), SETTLE (3 s of quiet before the idle figure), PORTS (MOCK_PORT 18971, ROTOR_PORT
# 18972, TLS_PORT 18973),
# SKIP_BUILD=1, ROTOR_BIN (measure another rotor binary; the mock stays target/$PROFILE's). Bounded: every client ends by itself; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-gate}
WORKERS=${WORKERS:-2}
IDLE=${IDLE:-10000}
STREAMS=${STREAMS:-5000}
PROMPT_BYTES=${PROMPT_BYTES:-0}
STREAM_CHUNKS=${STREAM_CHUNKS:-20}
RAMP_MS=${RAMP_MS:-0}
SETTLE=${SETTLE:-3}
PARTS=${PARTS:-"idle conns streams"}
MOCK_PORT=${MOCK_PORT:-18971}
ROTOR_PORT=${ROTOR_PORT:-18972}
TLS_PORT=${TLS_PORT:-18973}
UPSTREAM_TLS=${UPSTREAM_TLS:-0}
case $UPSTREAM_TLS in 0 | 1) ;; *) echo "UPSTREAM_TLS must be 0 or 1, not '$UPSTREAM_TLS'" >&2; exit 2 ;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-target}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=benches/lib.sh
. benches/lib.sh
scratch
require_free_ports "$MOCK_PORT" "$ROTOR_PORT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --profile "$PROFILE" --quiet --bin rotor --bench streams
fi
ROTOR=${ROTOR_BIN:-$TARGET_DIR/$PROFILE/rotor}
CLIENT=$(ls -t "$TARGET_DIR/$PROFILE"/deps/streams-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -x "$ROTOR" ] || { echo "no rotor binary at $ROTOR (PROFILE=$PROFILE)"; exit 1; }
[ "$PARTS" = idle ] || [ -x "$CLIENT" ] || { echo "build benches/streams.rs first (PROFILE=$PROFILE)"; exit 1; }

"$TARGET_DIR/$PROFILE/rotor" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks 5 >"$WORK/mock.log" 2>&1 & PIDS+=($!)

# UPSTREAM_TLS=1: rotor reaches the mock through a TLS front (`tls_front`, benches/lib.sh).
if [ "$UPSTREAM_TLS" = 1 ]; then
  require_free_ports "$TLS_PORT"
  tls_front "$TLS_PORT" "$MOCK_PORT" $((2 * STREAMS + 1024))
fi

kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
mb() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1024}'; }

# start_rotor NAME: a fresh rotor of WORKERS workers, its pid in ROTOR_PID once it answers.
start_rotor() {
  DB_PATH="$WORK/$1.db" rotor_config "$ROTOR_PORT" "$WORKERS" "$MOCK_PORT" >"$WORK/$1.toml"
  ROTOR_LOG=warn "$ROTOR" --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 & ROTOR_PID=$!; PIDS+=($ROTOR_PID)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$ROTOR_PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "rotor did not come up"; cat "$WORK/$1.log"; exit 1
}

stop_rotor() {
  kill "$ROTOR_PID" 2>/dev/null || true
  wait "$ROTOR_PID" 2>/dev/null || true
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$ROTOR_PORT") 2>/dev/null || return 0; sleep 0.1; done
}

# Resident KB per kind of mapping, from smaps. Thread stacks are the anonymous mappings just
# above a one-page guard (a PROT_NONE mapping that ends where they begin); io_uring's rings are
# mappings of the ring's file; the rest of the anonymous memory is the heap (mimalloc's arenas,
# and glibc's malloc for SQLite's C allocations).
breakdown() {
  awk -v exe="$(readlink "/proc/$1/exe")" '
    /^[0-9a-f]+-[0-9a-f]+ / {
      split($1, r, "-"); start = r[1]; perms = $2; name = $6
      for (i = 7; i <= NF; i++) name = name " " $i
      # A one-page guard (glibc puts one below each thread stack it maps); longer PROT_NONE
      # stretches are reserved address space (glibc malloc arenas, mimalloc).
      if (perms == "---p") { guard = r[2]; guard_end = ""; kind = "guard"; next }
      if (name == "") kind = (start == guard_end) ? "thread stacks" : "anonymous (heap)"
      else if (name ~ /io_uring/) kind = "io_uring rings"
      else if (name == "[heap]") kind = "[heap] (brk: glibc malloc)"
      else if (name == "[stack]") kind = "main thread stack"
      else if (name == exe) kind = "rotor binary (text, statics)"
      else if (name ~ /\.so/) kind = "shared libraries"
      else if (name ~ /^\[/) kind = "kernel ([vdso] ...)"
      else kind = "other files (" name ")"
      guard_end = ""
      next
    }
    $1 == "Size:" && kind == "guard" { if ($2 == 4) guard_end = guard; kind = "" }
    $1 == "Rss:" && kind != "" { rss[kind] += $2; total += $2 }
    $1 == "AnonHugePages:" && kind != "" { huge += $2 }
    END {
      for (k in rss) if (rss[k] > 0) printf "  %-40s %8.1f MB\n", k, rss[k] / 1024
      printf "  %-40s %8.1f MB (of the above)\n", "transparent huge pages", huge / 1024
      printf "  %-40s %8.1f MB\n", "total", total / 1024
    }' "/proc/$1/smaps" | sort -k1,1 -s
}

threads() {
  local t names=""
  for t in /proc/"$1"/task/*; do names="$names $(cat "$t/comm")"; done
  echo "$names" | tr ' ' '\n' | sed '/^$/d' | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1} END {print ""}'
}

IDLE_KB=""
run_idle() {
  start_rotor idle
  sleep "$SETTLE"
  IDLE_KB=$(kb "$ROTOR_PID" VmRSS)
  printf 'idle rotor (%s workers, log to a file, provider configured, no traffic): RSS %s MB\n' "$WORKERS" "$(mb "$IDLE_KB")"
  printf '  threads: %s\n' "$(threads "$ROTOR_PID")"
  breakdown "$ROTOR_PID"
  stop_rotor
}

run_conns() {
  start_rotor conns
  sleep "$SETTLE"
  local before held out
  before=$(kb "$ROTOR_PID" VmRSS)
  "$CLIENT" idle "127.0.0.1:$ROTOR_PORT" "$IDLE" 8 >"$WORK/idle.out" 2>&1 & local client=$!
  for _ in $(seq 600); do grep -q READY "$WORK/idle.out" && break; sleep 0.1; done
  sleep 1
  out=$(grep READY "$WORK/idle.out" || echo "READY failed")
  held=$(kb "$ROTOR_PID" VmRSS)
  printf '\nidle keep-alive connections: %s; RSS before %s MB, while held %s MB\n' "$out" "$(mb "$before")" "$(mb "$held")"
  awk -v b="$before" -v h="$held" -v n="$IDLE" \
    'BEGIN { printf "per idle connection: %.1f KB of rotor RSS\n", (h - b) * 1.024 / n }'
  wait "$client" || true
  stop_rotor
}

run_streams() {
  start_rotor streams
  sleep "$SETTLE"
  local before line peak
  before=$(kb "$ROTOR_PID" VmRSS)
  line=$("$CLIENT" streams "127.0.0.1:$ROTOR_PORT" "$STREAMS" "$STREAM_CHUNKS" 50 "$PROMPT_BYTES" "$RAMP_MS" 2>&1 | grep '^RESULT' || echo "RESULT failed")
  peak=$(kb "$ROTOR_PID" VmHWM)
  printf '\n%s concurrent streams: %s\n' "$STREAMS" "$line"
  printf 'RSS before %s MB, peak %s MB\n' "$(mb "$before")" "$(mb "$peak")"
  awk -v b="$before" -v p="$peak" -v n="$STREAMS" \
    'BEGIN { printf "per open stream: %.1f KB of rotor RSS ((peak - before) / streams)\n", (p - b) * 1.024 / n }'
  stop_rotor
}

for part in $PARTS; do
  case $part in
    idle) run_idle ;;
    conns) run_conns ;;
    streams) run_streams ;;
    *) echo "PARTS: idle conns streams"; exit 2 ;;
  esac
done
