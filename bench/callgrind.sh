#!/usr/bin/env bash
# bench/callgrind.sh — instructions per proxied request, counted with callgrind.
#
# Timings on a shared 2-core machine move by ±20 % between runs; instruction counts
# do not (the same binary, config and requests give the same count whatever else
# the machine does). This script answers "did this change make the plain proxy path
# more expensive?" by counting, for each gateway binary given, the user-space
# instructions per request of N requests after a warm-up, over the same route and
# config as bench/run.sh (plain route, no token, no access records).
#
#   bench/callgrind.sh OLD_BINARY NEW_BINARY ...      # one row per binary
#   N=10000 CONNS=8 bench/callgrind.sh target/release/phr-gateway
#
# Needs valgrind (callgrind_control), nginx (the backend) and h2load (nghttp2-client).
# Everything listens on 127.0.0.1 (ports 18090 backend, 18453 gateway, 19911 admin);
# every run is bounded by `timeout`; the work directory is removed on exit.
set -euo pipefail
shopt -s inherit_errexit   # a failed load inside $(count ...) ends the script

N=${N:-10000}            # measured requests per protocol
WARM=${WARM:-2000}       # unmeasured requests first (pools, caches, lazy statics)
CONNS=${CONNS:-8}        # keep-alive connections
STREAMS=${STREAMS:-8}    # HTTP/2 concurrent streams per connection
HOST=127.0.0.1
BACKEND_PORT=18090
GATEWAY_PORT=18453
ADMIN_PORT=19911

[[ $# -ge 1 ]] || { echo "usage: $0 GATEWAY_BINARY..." >&2; exit 2; }
for cmd in valgrind callgrind_control nginx h2load openssl curl; do
    command -v "$cmd" >/dev/null || { echo "missing: $cmd (apt-get install valgrind nginx-light nghttp2-client)" >&2; exit 2; }
done

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
mkdir -p "$WORK/docroot" "$WORK/tmp"
head -c 99 /dev/zero | tr '\0' 'a' >"$WORK/docroot/small"; echo >>"$WORK/docroot/small"
# nginx's workers may run as another user (www-data when started as root).
chmod 0755 "$WORK" "$WORK/docroot"; chmod 0644 "$WORK/docroot/small"
cat >"$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    server { listen $HOST:$BACKEND_PORT; root $WORK/docroot; }
}
EOF
nginx -e "$WORK/backend-error.log" -p "$WORK" -c "$WORK/backend.conf" &
PIDS+=($!)

cat >"$WORK/gateway.toml" <<EOF
[gateway]
instance_id = "callgrind"
[admin]
bind = "$HOST:$ADMIN_PORT"
[audit]
enabled = false
[connection_limits]
max_connections_per_ip = 100000
tls_handshakes_per_ip_per_second = 100000
tls_handshake_burst = 100000
[[listeners]]
name = "public"
bind = "$HOST:$GATEWAY_PORT"
[[listeners.certificates]]
cert_file = "$WORK/cert.pem"
key_file = "$WORK/key.pem"
[upstreams.backend]
endpoints = ["http://$HOST:$BACKEND_PORT"]
allow_plaintext = true
jurisdiction = "JP"
in_cluster = true
pool_max_idle = 128
[[routes]]
name = "bench"
path_prefix = "/"
upstream = "backend"
phi = false
[routes.auth]
mode = "none"
EOF

wait_ready() {
    for _ in $(seq 600); do
        curl -sf -o /dev/null "http://$HOST:$ADMIN_PORT/readyz" && return 0
        sleep 0.1
    done
    echo "the gateway did not become ready:" >&2; cat "$WORK/gateway.log" >&2; return 1
}

# h2load with an exact request count; --h1 for HTTP/1.1.
load() {
    local n=$1; shift
    timeout 300 h2load "$@" -n "$n" -c "$CONNS" -t 1 "https://$HOST:$GATEWAY_PORT/small" >"$WORK/h2load.out" 2>&1 \
        || { cat "$WORK/h2load.out" >&2; return 1; }
    grep -q " $n succeeded, 0 failed, 0 errored" "$WORK/h2load.out" || { cat "$WORK/h2load.out" >&2; return 1; }
}

# Prints instructions per request for one binary and protocol ("h1" or "h2").
count() {
    local bin=$1 proto=$2 args=()
    [[ $proto == h1 ]] && args=(--h1) || args=(-m "$STREAMS")
    rm -f "$WORK"/callgrind.out*
    PHR_GATEWAY_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$WORK/callgrind.out.%p" \
        "$bin" run --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_ready
    load "$WARM" "${args[@]}"
    callgrind_control -i on "$pid" >/dev/null
    load "$N" "${args[@]}"
    callgrind_control -i off "$pid" >/dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    local total
    total=$(grep -h '^totals:' "$WORK"/callgrind.out.* | awk '{s += $2} END {print s}')
    echo $(( total / N ))
}

printf '| binary | HTTP/1.1 100 B instr/req | HTTP/2 100 B instr/req |\n|---|--:|--:|\n'
for bin in "$@"; do
    h1=$(count "$bin" h1)
    h2=$(count "$bin" h2)
    printf '| %s | %s | %s |\n' "$bin" "$h1" "$h2"
done
