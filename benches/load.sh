#!/usr/bin/env bash
# End-to-end load comparison on loopback, in one run on one machine: the mock provider direct,
# nginx as a reverse proxy in front of it (upstream keepalive, Authorization set: the classic
# fast proxy) and rotor in front of it, all driven by the same wrk with the same Lua body.
# Then streams at scale and idle keep-alive connections through rotor.
#
#   benches/load.sh                               # everything, about 5 minutes on 2 cores
#   DURATION=5 REPEAT=5 CONNS="1 256" benches/load.sh
#   PARTS=table benches/load.sh                   # only the wrk table (or: streams, idle)
#   LOG_REQUESTS=false LOG_OFF=0 benches/load.sh  # rotor with its request log off only
#
# Knobs: DURATION (s per wrk cell, 3), REPEAT (3; targets alternate their order every round so
# drift on a shared machine shows as spread), CONNS ("1 64 256"), MODES ("chat stream"),
# PROXY_WORKERS (1: rotor workers and nginx worker_processes for the table), SCALE_WORKERS
# (2: rotor workers for streams/idle), STREAMS ("1000 5000 10000": concurrent slow streams of
# 20 chunks 50 ms apart; where one process's fd hard limit cannot hold two sockets a stream,
# they are spread over several rotor processes of one worker each, on the ports after
# SCALE_PORT), IDLE (10000 idle keep-alive connections), POOL (256: rotor's
# upstream.pool_max_idle_per_host, matching nginx's `keepalive 256`), LOG_REQUESTS (true: rotor's
# request log and stats rollups on, as shipped; false turns them off), LOG_TO (file: the log goes
# to a SQLite file in the run's temp dir, as users run it; memory: `storage.path = ""`), LOG_OFF
# (1: the table also runs a second rotor, `rotor-nolog`, with the log off, and prints the log
# on/off ratio next to both rotor/nginx ratios; 0 skips it), NGINX_LOG (off: nginx logs no
# request, the strictest comparison; on: nginx's default access log, one line a request in the
# combined format to a file in the temp dir, as an nginx installed from a package runs; buffered:
# the same with `buffer=64k flush=1s`), RESULTS (a path: the table's raw rounds are copied there,
# one line a round and target: mode, conns, target, round, rps, p50, p99, ...), SKIP_BUILD=1.
# Per cell it also prints the p99 each proxy adds over direct and, pairing the targets' runs of
# each round, in how many rounds rotor's p99 was at or under nginx's.
# After the table, the CPU each request cost wrk, the mock and the proxy (user and kernel), and
# for every cell where nginx kept the cores busy, the ceiling: rotor/nginx with rotor's user
# space at zero, and the proxy cost that 1.25x nginx would need.
# Every cell is bounded (wrk -d, the stream client ends after its streams); loopback only.
# Needs wrk and nginx; installs them with apt-get when missing and allowed (root).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-"1 64 256"}
MODES=${MODES:-"chat stream"}
PARTS=${PARTS:-"table streams idle"}
PROXY_WORKERS=${PROXY_WORKERS:-1}
SCALE_WORKERS=${SCALE_WORKERS:-2}
STREAMS=${STREAMS:-"1000 5000 10000"}
IDLE=${IDLE:-10000}
MOCK_PORT=${MOCK_PORT:-18181}
ROTOR_PORT=${ROTOR_PORT:-18282}
NOLOG_PORT=${NOLOG_PORT:-18585}
LOG_REQUESTS=${LOG_REQUESTS:-true}
LOG_TO=${LOG_TO:-file}
LOG_OFF=${LOG_OFF:-1}
NGINX_PORT=${NGINX_PORT:-18383}
SCALE_PORT=${SCALE_PORT:-18484}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# 10,000 streams need 20,000+ fds in rotor (one downstream and one upstream socket each).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

# shellcheck source=benches/lib.sh
. benches/lib.sh
scratch
case $LOG_TO in
  file) LOG_DB="$WORK/rotor.db" ;;
  memory) LOG_DB="" ;;
  *) echo "LOG_TO is file or memory"; exit 2 ;;
esac
need wrk wrk || { echo "wrk is required"; exit 1; }
HAVE_NGINX=1; need nginx nginx-light || HAVE_NGINX=0
require_free_ports "$MOCK_PORT" "$ROTOR_PORT" "$NGINX_PORT" "$SCALE_PORT"
[ "$LOG_OFF" = 1 ] && require_free_ports "$NOLOG_PORT"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet
fi
ROTOR="$TARGET_DIR/release/rotor"
CLIENT=$(cargo bench --bench streams --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$CLIENT" ] || { echo "could not build benches/streams.rs"; exit 1; }

"$ROTOR" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks 5 >"$WORK/mock.log" 2>&1 & MOCK_PID=$!; PIDS+=($MOCK_PID)

DB_PATH="$LOG_DB" rotor_config "$ROTOR_PORT" "$PROXY_WORKERS" "$MOCK_PORT" >"$WORK/rotor.toml"
ROTOR_LOG=warn "$ROTOR" --config "$WORK/rotor.toml" >"$WORK/rotor.log" 2>&1 & ROTOR_PID=$!; PIDS+=($ROTOR_PID)
NOLOG_PID=""
if [ "$LOG_OFF" = 1 ]; then
  LOG_REQUESTS=false rotor_config "$NOLOG_PORT" "$PROXY_WORKERS" "$MOCK_PORT" >"$WORK/nolog.toml"
  ROTOR_LOG=warn "$ROTOR" --config "$WORK/nolog.toml" >"$WORK/nolog.log" 2>&1 & NOLOG_PID=$!; PIDS+=($NOLOG_PID)
fi

NGINX_PIDS=""
case "${NGINX_LOG:-off}" in
  off) NGINX_ACCESS_LOG="access_log off;" ;;
  on) NGINX_ACCESS_LOG="access_log $WORK/nginx-access.log combined;" ;;
  buffered) NGINX_ACCESS_LOG="access_log $WORK/nginx-access.log combined buffer=64k flush=1s;" ;;
  *) echo "NGINX_LOG must be off, on or buffered" >&2; exit 1 ;;
esac
if [ "$HAVE_NGINX" = 1 ]; then
  mkdir -p "$WORK/ng"
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes $PROXY_WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  $NGINX_ACCESS_LOG
  client_body_temp_path $WORK/ng/body; proxy_temp_path $WORK/ng/proxy;
  fastcgi_temp_path $WORK/ng/fcgi; uwsgi_temp_path $WORK/ng/uwsgi; scgi_temp_path $WORK/ng/scgi;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-bench-key-1";
      proxy_buffering off;
    }
  }
}
NGINX
  nginx -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx-error.log" & NGINX_MASTER=$!; PIDS+=($NGINX_MASTER)
fi

for lua in chat stream; do
  stream=false; [ "$lua" = stream ] && stream=true
  chat_lua "$stream" >"$WORK/$lua.lua"
done

wait_ready "$MOCK_PORT"; wait_ready "$ROTOR_PORT"
[ "$LOG_OFF" = 1 ] && wait_ready "$NOLOG_PORT"
[ "$HAVE_NGINX" = 1 ] && wait_ready "$NGINX_PORT"
[ "$HAVE_NGINX" = 1 ] && NGINX_PIDS="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"

TICKS=$(getconf CLK_TCK)
# utime+stime of the given pids, in clock ticks.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
# "user kernel" ticks of the given pids.
cpu_split() {
  local u=0 k=0 p a b
  for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0"); u=$((u + a)); k=$((k + b)); done
  echo "$u $k"
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# One wrk run; prints "rps p50_ms p99_ms errors wrk_cpu_s" (wrk's own user+system CPU seconds,
# from bash's `time`, which reads the finished child's rusage).
measure() {
  local url=$1 conns=$2 lua=$3 out TIMEFORMAT='WRK_CPU %U %S'
  out=$( { time wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/$lua.lua" "$url"; } 2>&1)
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx|Socket errors/ {err=1} /^WRK_CPU/ {wrk=$2+$3}
       function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
       END { printf "%.0f %.3f %.3f %d %.3f\n", rps, ms(p50), ms(p99), err, wrk }' <<<"$out"
}

pids_of() { case $1 in rotor) echo "$ROTOR_PID" ;; rotor-nolog) echo "$NOLOG_PID" ;; nginx) echo "$NGINX_PIDS" ;; *) echo "" ;; esac; }
port_of() { case $1 in direct) echo "$MOCK_PORT" ;; nginx) echo "$NGINX_PORT" ;; rotor) echo "$ROTOR_PORT" ;; rotor-nolog) echo "$NOLOG_PORT" ;; esac; }

run_table() {
  local targets="direct rotor" results="$WORK/results"
  [ "$HAVE_NGINX" = 1 ] && targets="direct nginx rotor"
  [ "$LOG_OFF" = 1 ] && targets="$targets rotor-nolog"
  : >"$results"
  echo "running the wrk table: modes [$MODES] x conns [$CONNS] x targets [$targets] x $REPEAT rounds of ${DURATION}s" >&2
  for mode in $MODES; do
    for c in $CONNS; do
      local order=$targets
      for round in $(seq "$REPEAT"); do
        for t in $order; do
          local pids u0 k0 u1 k1 m0 m1 rps p50 p99 err wrk_cpu cpu
          pids=$(pids_of "$t")
          # shellcheck disable=SC2086
          read -r u0 k0 < <(cpu_split $pids); m0=$(cpu_ticks "$MOCK_PID")
          read -r rps p50 p99 err wrk_cpu < <(measure "http://127.0.0.1:$(port_of "$t")/v1/chat/completions" "$c" "$mode")
          # shellcheck disable=SC2086
          read -r u1 k1 < <(cpu_split $pids); m1=$(cpu_ticks "$MOCK_PID")
          cpu=$(awk -v d=$((u1 + k1 - u0 - k0)) -v hz="$TICKS" -v s="$DURATION" 'BEGIN { printf "%.2f", d / hz / s }')
          echo "$mode $c $t $round $rps $p50 $p99 $cpu $err $((u1 - u0)) $((k1 - k0)) $((m1 - m0)) $wrk_cpu" >>"$results"
        done
        order="$(echo "$order" | cut -d' ' -f2-) $(echo "$order" | cut -d' ' -f1)" # rotate
      done
    done
  done
  print_table "$results"
  [ -n "${RESULTS:-}" ] && cp "$results" "$RESULTS"
  return 0
}

# Median over rounds (with min-max of rps) per mode/conns/target, then the comparisons.
print_table() {
  local results=$1
  printf '\nwrk -t1, %ss per cell, %s rounds (targets alternate), median [min-max]; proxy workers: %s; %s cores, loopback\n' \
    "$DURATION" "$REPEAT" "$PROXY_WORKERS" "$(nproc)"
  local where="in memory"; [ -n "$LOG_DB" ] && where="to a SQLite file"
  printf 'rotor: request log %s; rotor-nolog: log off; nginx: access log %s\n' \
    "$([ "$LOG_REQUESTS" = true ] && echo "on, $where" || echo off)" "${NGINX_LOG:-off}"
  local nolog_rss="" nolog_hwm=""
  if [ -n "$NOLOG_PID" ]; then nolog_rss=$(rss_mb "$NOLOG_PID"); nolog_hwm=$(hwm_mb "$NOLOG_PID"); fi
  awk -v ROTOR_RSS="$(rss_mb "$ROTOR_PID")" -v ROTOR_HWM="$(hwm_mb "$ROTOR_PID")" \
      -v NOLOG_RSS="$nolog_rss" -v NOLOG_HWM="$nolog_hwm" -v HZ="$TICKS" -v SECS="$DURATION" -v CORES="$(nproc)" "$STATS_AWK"'
    # Where the cores went, per request: wrk and the mock are the same programs behind every
    # target, so where the cores are saturated, rps follows the sum and the proxy is only its
    # share. The ceiling says what rotor/nginx would be with rotor at zero user-space CPU and
    # everything else as measured, and what the proxy must cost for 1.25x nginx.
    function cpu_split(   i, j, k, mc, t, W, M, U, K, T, ng, ro, need) {
      printf "\nCPU per request, us (median over rounds): wrk and the mock are the same behind every target\n"
      printf "%-6s %5s %-11s %7s %7s %11s %12s %7s %11s\n", "mode", "conns", "target", "wrk", "mock", "proxy_user", "proxy_kernel", "total", "cores_busy"
      for (i = 1; i <= nk; i++) {
        split(order[i], mc, SUBSEP)
        for (j = 1; j <= nt; j++) {
          k = mc[1] SUBSEP mc[2] SUBSEP targets[j]; if (!(k in wrk)) continue
          W = median(wrk[k]); M = median(mock[k]); U = median(pu[k]); K = median(pk[k]); T[k] = W + M + U + K
          OTHER[k] = W + M; USER[k] = U; PROXY[k] = U + K
          printf "%-6s %5s %-11s %7.1f %7.1f %11.1f %12.1f %7.1f %11.2f\n", mc[1], mc[2], targets[j], W, M, U, K, T[k], T[k] * R[k] / 1e6
        }
      }
      for (i = 1; i <= nk; i++) {
        split(order[i], mc, SUBSEP); ng = mc[1] SUBSEP mc[2] SUBSEP "nginx"; ro = mc[1] SUBSEP mc[2] SUBSEP "rotor"
        if (!(ng in T) || !(ro in T) || T[ng] * R[ng] / 1e6 < 0.9 * CORES) continue
        need = T[ng] / 1.25 - OTHER[ro]
        printf "%s c=%s (cores saturated): with zero user-space CPU rotor/nginx would be at most %.2fx; 1.25x needs rotor at or under %.1f us a request (now %.1f)\n",
          mc[1], mc[2], T[ng] / (T[ro] - USER[ro]), need, PROXY[ro]
      }
    }
    # Rounds of one cell were run side by side, so each round pairs the targets fairly.
    function under_in(m, c, a, b,   r, n, u) {
      for (r = 1; r <= ROUNDS[m SUBSEP c]; r++)
        if ((m SUBSEP c SUBSEP a SUBSEP r) in P99R && (m SUBSEP c SUBSEP b SUBSEP r) in P99R) {
          n++; if (P99R[m SUBSEP c SUBSEP a SUBSEP r] + 0 <= P99R[m SUBSEP c SUBSEP b SUBSEP r] + 0) u++ }
      return sprintf("%d of %d rounds", u, n)
    }
    { P99R[$1 SUBSEP $2 SUBSEP $3 SUBSEP $4] = $7; if ($4 > ROUNDS[$1 SUBSEP $2]) ROUNDS[$1 SUBSEP $2] = $4 }
    { k = $1 SUBSEP $2 SUBSEP $3; rps[k] = rps[k] " " $5; p50[k] = p50[k] " " $6; p99[k] = p99[k] " " $7; cpu[k] = cpu[k] " " $8; err[k] += $9
      n = $5 * SECS
      if (n > 0) { us = 1e6 / HZ / n; wrk[k] = wrk[k] " " $13 * 1e6 / n; mock[k] = mock[k] " " $12 * us; pu[k] = pu[k] " " $10 * us; pk[k] = pk[k] " " $11 * us }
      if (!(($1 SUBSEP $2) in seen)) { seen[$1 SUBSEP $2] = 1; order[++nk] = $1 SUBSEP $2 }
      if (!($3 in tseen)) { tseen[$3] = 1; targets[++nt] = $3 } }
    END {
      printf "%-6s %5s %-11s %8s %-15s %8s %8s %-15s %9s %10s %s\n", "mode", "conns", "target", "rps", "[min-max]", "p50_ms", "p99_ms", "[min-max]", "cpu_cores", "rps/core", "flags"
      for (i = 1; i <= nk; i++) {
        split(order[i], mc, SUBSEP)
        for (j = 1; j <= nt; j++) {
          k = mc[1] SUBSEP mc[2] SUBSEP targets[j]; if (!(k in rps)) continue
          r = median(rps[k]); c = median(cpu[k]); R[k] = r; C[k] = c; P50[k] = median(p50[k]); P99[k] = median(p99[k])
          per = (targets[j] == "direct" || c == 0) ? "-" : sprintf("%.0f", r / c); PER[k] = per
          printf "%-6s %5s %-11s %8.0f %-15s %8.3f %8.3f %-15s %9s %10s %s\n", mc[1], mc[2], targets[j], r, "[" mn(rps[k]) "-" mx(rps[k]) "]",
            P50[k], P99[k], "[" mn(p99[k]) "-" mx(p99[k]) "]", (targets[j] == "direct" ? "-" : c), per, (err[k] ? "ERRORS" : "")
        }
      }
      print ""
      for (i = 1; i <= nk; i++) {
        split(order[i], mc, SUBSEP); m = mc[1]; c = mc[2]
        ro = m SUBSEP c SUBSEP "rotor"; ng = m SUBSEP c SUBSEP "nginx"; di = m SUBSEP c SUBSEP "direct"
        nl = m SUBSEP c SUBSEP "rotor-nolog"
        line = sprintf("%-6s c=%-4s", m, c)
        if ((ng in R) && R[ng] > 0) line = line sprintf(" rotor/nginx rps %.2f", R[ro] / R[ng])
        if ((ng in R) && PER[ng] != "-" && PER[ng] > 0 && PER[ro] != "-") line = line sprintf(", per core %.2f", PER[ro] / PER[ng])
        if ((ng in R) && R[ng] > 0 && (nl in R)) line = line sprintf("; rotor-nolog/nginx rps %.2f", R[nl] / R[ng])
        if ((nl in R) && R[nl] > 0) line = line sprintf("; log on/off rps %.2f", R[ro] / R[nl])
        if ((nl in R) && PER[nl] != "-" && PER[nl] > 0 && PER[ro] != "-") line = line sprintf(", per core %.2f", PER[ro] / PER[nl])
        if (c == 1 && (di in R)) {
          line = line sprintf("; added vs direct: rotor p50 +%.3f p99 +%.3f ms", P50[ro] - P50[di], P99[ro] - P99[di])
          if (ng in R) line = line sprintf(", nginx p50 +%.3f p99 +%.3f ms", P50[ng] - P50[di], P99[ng] - P99[di])
        }
        print line
        # Issue 18 item 2: the latency each proxy adds, at p99, over the same direct runs.
        if ((ng in R) && (di in R)) {
          line = sprintf("%-6s c=%-4s p99 added over direct: rotor %+.3f ms, nginx %+.3f ms: rotor %s nginx, and at or under it in %s", m, c,
            P99[ro] - P99[di], P99[ng] - P99[di], (P99[ro] <= P99[ng] ? "at or under" : "over"), under_in(m, c, "rotor", "nginx"))
          if (nl in R) line = line sprintf("; rotor-nolog %+.3f ms (at or under nginx in %s)", P99[nl] - P99[di], under_in(m, c, "rotor-nolog", "nginx"))
          print line
        }
      }
      cpu_split()
      printf "rotor RSS after the table: %s MB (peak %s MB)\n", ROTOR_RSS, ROTOR_HWM
      if (NOLOG_RSS != "") printf "rotor-nolog RSS after the table: %s MB (peak %s MB)\n", NOLOG_RSS, NOLOG_HWM
    }' "$results"
}

start_scale_rotor() {
  if [ -z "${SCALE_PID:-}" ]; then
    DB_PATH="${LOG_DB:+$WORK/scale.db}" rotor_config "$SCALE_PORT" "$SCALE_WORKERS" "$MOCK_PORT" >"$WORK/scale.toml"
    ROTOR_LOG=error "$ROTOR" --config "$WORK/scale.toml" >"$WORK/scale.log" 2>&1 & SCALE_PID=$!; PIDS+=($SCALE_PID)
    wait_ready "$SCALE_PORT"
  fi
}

# Where n streams go: STREAM_ADDRS (comma-separated) and STREAM_PIDS. One rotor of
# SCALE_WORKERS workers when its fd limit holds two sockets a stream; else enough processes of
# one worker each, on the ports after SCALE_PORT (the limit is per process; same total workers
# as long as SCALE_WORKERS >= the process count).
scale_targets() {
  local n=$1 procs i port
  procs=$(( (2 * n + 200 + FD_LIMIT - 1) / FD_LIMIT ))
  if [ "$procs" -le 1 ]; then
    start_scale_rotor
    STREAM_ADDRS="127.0.0.1:$SCALE_PORT"; STREAM_PIDS="$SCALE_PID"
    return
  fi
  STREAM_ADDRS=""; STREAM_PIDS=""
  for i in $(seq "$procs"); do
    port=$((SCALE_PORT + i))
    if [ -z "${SPLIT_PID[$port]:-}" ]; then
      require_free_ports "$port"
      DB_PATH="${LOG_DB:+$WORK/split$i.db}" rotor_config "$port" 1 "$MOCK_PORT" >"$WORK/split$i.toml"
      ROTOR_LOG=error "$ROTOR" --config "$WORK/split$i.toml" >"$WORK/split$i.log" 2>&1 & SPLIT_PID[$port]=$!
      PIDS+=("${SPLIT_PID[$port]}")
      wait_ready "$port"
    fi
    STREAM_ADDRS="$STREAM_ADDRS${STREAM_ADDRS:+,}127.0.0.1:$port"
    STREAM_PIDS="$STREAM_PIDS ${SPLIT_PID[$port]}"
  done
}
# The one-worker rotors scale_targets started, by port.
declare -A SPLIT_PID

run_streams() {
  printf '\nstreams at scale: N concurrent streams, 20 chunks 50 ms apart, starts spread over 50 ms; rotor workers %s\n' "$SCALE_WORKERS"
  printf 'added = inter-chunk gap - 50 ms, over every gap of every stream; stall = gap > 300 ms or incomplete\n'
  printf '%-7s %6s %9s %9s %9s %9s %12s %12s %12s %9s %s\n' target N connected complete no_stall peak_open added_p50ms added_p99ms added_maxms rotor_MB processes
  for n in $STREAMS; do
    for t in direct rotor; do
      local addrs="127.0.0.1:$MOCK_PORT" line rss="-" procs="-"
      if [ "$t" = rotor ]; then scale_targets "$n"; addrs=$STREAM_ADDRS; fi
      line=$("$CLIENT" streams "$addrs" "$n" 20 50 2>&1 | grep '^RESULT' || echo "RESULT failed")
      if [ "$t" = rotor ]; then
        # shellcheck disable=SC2086
        rss=$(for p in $STREAM_PIDS; do hwm_mb "$p"; echo; done | awk '{s += $1} END {printf "%.1f", s}')
        procs=$(wc -w <<<"$STREAM_PIDS")
      fi
      awk -v t="$t" -v rss="$rss" -v procs="$procs" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%-7s %6s %9s %9s %9s %9s %12s %12s %12s %9s %s\n", t, v["n"], v["connected"], v["complete"], v["no_stall"], v["peak_open"], v["added_p50_ms"], v["added_p99_ms"], v["added_max_ms"], rss, procs }' <<<"$line"
      sleep 1
    done
  done
  echo "(rotor_MB: peak RSS so far (VmHWM), summed over the rotor processes that carried the streams)"
}

run_idle() {
  start_scale_rotor
  local before out
  before=$(rss_mb "$SCALE_PID")
  "$CLIENT" idle "127.0.0.1:$SCALE_PORT" "$IDLE" 8 >"$WORK/idle.out" 2>&1 & local client=$!
  for _ in $(seq 600); do grep -q READY "$WORK/idle.out" && break; sleep 0.1; done
  sleep 1
  out=$(grep READY "$WORK/idle.out" || echo "READY failed")
  local held; held=$(rss_mb "$SCALE_PID")
  printf '\nidle keep-alive connections: %s; rotor (workers %s) RSS before %s MB, while held %s MB, open connections %s\n' \
    "$out" "$SCALE_WORKERS" "$before" "$held" "$(ls /proc/"$SCALE_PID"/fd | wc -l) fds"
  # The number the README quotes: rotor's RSS growth per held connection (kernel socket memory,
  # about 5 KB per socket, is not in RSS).
  awk -v b="$before" -v h="$held" -v n="$IDLE" \
    'BEGIN { printf "per idle connection: %.1f KB of rotor RSS ((%s - %s MB) / %d)\n", (h - b) * 1048.576 / n, h, b, n }'
  wait "$client" || true
}

for part in $PARTS; do
  case $part in
    table) run_table ;;
    streams) run_streams ;;
    idle) run_idle ;;
  esac
done
