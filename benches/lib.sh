# Shell pieces shared by benches/load.sh and benches/profile.sh (sourced, not run).

# need CMD PACKAGE: true when CMD is on PATH, installing PACKAGE with apt-get first when missing
# and allowed (root).
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1
}

# scratch: WORK, a temp dir for the run's files, and PIDS, the processes it starts (append to
# it); at exit the processes are stopped and the dir removed. Call it right after sourcing.
scratch() {
  WORK=$(mktemp -d)
  PIDS=()
  trap stop_scratch EXIT
}
stop_scratch() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# wait_ready PORT: waits (up to 10 s) until whatever serves PORT, rotor or its mock, answers
# `/v1/models` for the bench client key; stops the run if it never does.
wait_ready() {
  for _ in $(seq 100); do
    curl -s -o /dev/null "127.0.0.1:$1/v1/models" -H 'Authorization: Bearer bench-client-key' && return 0
    sleep 0.1
  done
  echo "port $1 did not come up"; exit 1
}

# STATS_AWK: awk functions over a space-separated list of numbers (a value per round):
# median(s), mn(s) and mx(s). Put it before a script's own text: awk "$STATS_AWK"'...'.
# shellcheck disable=SC2034
STATS_AWK='
  function median(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function mn(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
  function mx(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
'

# rotor_config PORT WORKERS MOCK_PORT: a rotor config in front of `rotor mock`, one client key,
# two upstream keys. UPSTREAM_URL (http://127.0.0.1:MOCK_PORT/v1) and CA_FILE (none:
# `upstream.ca_file`) point it elsewhere, e.g. at a TLS front; POOL (256) sizes the upstream
# pool like nginx's `keepalive 256`;
# LOG_REQUESTS (true) keeps rotor's request log and stats on, as shipped; DB_PATH ("", in
# memory) is `storage.path`: a file there is the log as users run it (to disk).
rotor_config() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
workers = $2
[upstream]
pool_max_idle_per_host = ${POOL:-256}
${CA_FILE:+ca_file = \"$CA_FILE\"}
[storage]
path = "${DB_PATH:-}"
log_requests = ${LOG_REQUESTS:-true}
[[clients]]
name = "bench"
key = "bench-client-key"
[[providers]]
name = "mock"
kind = "openai"
base_url = "${UPSTREAM_URL:-http://127.0.0.1:$3/v1}"
keys = ["sk-bench-key-1", "sk-bench-key-2"]
models = ["gpt-4o-mini"]
TOML
}

# tls_front PORT BACKEND_PORT CONNECTIONS: nginx terminating TLS on PORT in front of BACKEND_PORT
# (the mock), with a certificate for 127.0.0.1 from a CA openssl makes in $WORK; buffering off,
# so streams pass as they come, and request bodies kept in memory (nginx's workers may not
# write temp files under $WORK). Sets UPSTREAM_URL and CA_FILE for `rotor_config`, so rotor
# reaches the backend over TLS as it reaches a provider. Needs `scratch`.
tls_front() {
  command -v openssl >/dev/null && command -v nginx >/dev/null || { echo "a TLS upstream needs openssl and nginx"; exit 1; }
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 1 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$WORK/tls.key" -out "$WORK/tls.csr" -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/tls.ext"
  openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
    -out "$WORK/tls.pem" -days 1 -extfile "$WORK/tls.ext" 2>/dev/null
  mkdir -p "$WORK/ng"
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $3; }
http {
  access_log off;
  client_body_buffer_size 1m; proxy_request_buffering off;
  client_body_temp_path $WORK/ng/body; proxy_temp_path $WORK/ng/proxy;
  fastcgi_temp_path $WORK/ng/fcgi; uwsgi_temp_path $WORK/ng/uwsgi; scgi_temp_path $WORK/ng/scgi;
  upstream backend { server 127.0.0.1:$2; keepalive 256; }
  server {
    listen 127.0.0.1:$1 ssl;
    ssl_certificate $WORK/tls.pem; ssl_certificate_key $WORK/tls.key;
    keepalive_requests 1000000;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGINX
  nginx -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx-error.log" & PIDS+=($!)
  export UPSTREAM_URL="https://127.0.0.1:$1/v1" CA_FILE="$WORK/ca.pem"
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "the TLS front on port $1 did not come up"; cat "$WORK/nginx-error.log"; exit 1
}

# chat_lua STREAM: the wrk script every target gets (STREAM is true or false).
chat_lua() {
  cat <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-client-key"
wrk.body = '{"model":"gpt-4o-mini","stream":$1,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2}'
LUA
}

# require_free_ports PORT...: stop with a clear message when something already listens on a
# port (a stale rotor or nginx there would silently be measured instead of the fresh one).
require_free_ports() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is already in use on 127.0.0.1; stop what listens there or set the *_PORT knobs" >&2
      exit 1
    fi
  done
}
