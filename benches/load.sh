#!/usr/bin/env bash
# End-to-end load comparison on loopback, in one run on one machine: the mock provider direct,
# nginx as a reverse proxy in front of it, and rotor in front of it, driven by the same wrk
# with the same body. Prints requests/s and latency percentiles per target and connection
# count, and the ratios. Bounded: DURATION seconds per cell (default 5).
#
#   benches/load.sh                 # builds release, runs c=1 and c=64, non-streaming chat
#   DURATION=10 CONNS="1 64 256" benches/load.sh
#
# Needs wrk (and nginx for the nginx column); installs them with apt-get when missing and
# allowed (root). The full benchmark suite (streams at scale, CPU per proxy, RSS) grows here.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
CONNS=${CONNS:-"1 64"}
MOCK_PORT=${MOCK_PORT:-18181}
ROTOR_PORT=${ROTOR_PORT:-18282}
NGINX_PORT=${NGINX_PORT:-18383}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1
}
need wrk wrk || { echo "wrk is required"; exit 1; }
HAVE_NGINX=1; need nginx nginx-light || HAVE_NGINX=0

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
ROTOR="$TARGET_DIR/release/rotor"

"$ROTOR" mock --listen "127.0.0.1:$MOCK_PORT" --workers 1 --chunks 5 >"$WORK/mock.log" 2>&1 & PIDS+=($!)

cat >"$WORK/rotor.toml" <<TOML
[server]
listen = "127.0.0.1:$ROTOR_PORT"
workers = 1
[storage]
path = ""
[[clients]]
name = "bench"
key = "bench-client-key"
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
keys = ["sk-bench-key-1", "sk-bench-key-2"]
models = ["gpt-4o-mini"]
TOML
ROTOR_LOG=warn "$ROTOR" --config "$WORK/rotor.toml" >"$WORK/rotor.log" 2>&1 & PIDS+=($!)

if [ "$HAVE_NGINX" = 1 ]; then
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy;
  fastcgi_temp_path $WORK/fcgi; uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
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
  nginx -c "$WORK/nginx.conf" -g 'daemon off;' & PIDS+=($!)
fi

cat >"$WORK/chat.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-client-key"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2}'
LUA

for port in $MOCK_PORT $ROTOR_PORT; do
  for _ in $(seq 50); do curl -s "127.0.0.1:$port/v1/models" -H 'Authorization: Bearer bench-client-key' >/dev/null && break; sleep 0.1; done
done

# Prints "rps p50_ms p99_ms" for one wrk run.
measure() {
  local url=$1 conns=$2 out
  out=$(wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/chat.lua" "$url" 2>&1)
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
       function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
       END { printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99) }' <<<"$out"
}

printf '\nnon-streaming chat, %ss per cell, wrk -t1 (2-core loopback; every process shares the cores)\n' "$DURATION"
printf '%-6s %-8s %10s %9s %9s\n' conns target rps p50_ms p99_ms
for c in $CONNS; do
  declare -A RPS=()
  targets="direct rotor"; [ "$HAVE_NGINX" = 1 ] && targets="direct nginx rotor"
  for t in $targets; do
    case $t in
      direct) url="http://127.0.0.1:$MOCK_PORT/v1/chat/completions" ;;
      nginx)  url="http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
      rotor)  url="http://127.0.0.1:$ROTOR_PORT/v1/chat/completions" ;;
    esac
    read -r rps p50 p99 < <(measure "$url" "$c")
    RPS[$t]=$rps
    printf '%-6s %-8s %10s %9s %9s\n' "$c" "$t" "$rps" "$p50" "$p99"
  done
  ratio=$(awk -v a="${RPS[rotor]}" -v b="${RPS[direct]}" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')
  line="c=$c rotor/direct rps = $ratio"
  if [ "$HAVE_NGINX" = 1 ]; then
    line="$line, rotor/nginx rps = $(awk -v a="${RPS[rotor]}" -v b="${RPS[nginx]}" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')"
  fi
  echo "$line"
done
