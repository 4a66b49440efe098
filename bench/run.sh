#!/usr/bin/env bash
# bench/run.sh — reproducible load benchmark for phr-gateway.
#
# Measures, in ONE run on ONE machine, requests/s, p50/p99 latency and the
# proxy's CPU time per request for:
#   direct   the backend itself (plain HTTP, no proxy)
#   gateway  phr-gateway, TLS 1.3
#   bare     gateway/examples/bare_proxy.rs: hyper + hyper-util + rustls with
#            none of the gateway's work, the floor of the gateway's stack
#   nginx    nginx as an equivalent TLS 1.3 reverse proxy
#   haproxy  HAProxy as an equivalent TLS 1.3 reverse proxy
# for ~100 B and 64 KiB responses, over HTTP/1.1 keep-alive (wrk) and
# HTTP/2 (h2load), plus a fixed-rate "moderate load" run per target.
#
# The proxy under test runs on core PROXY_CPU (default 0); the backend and the
# load generator share core LOAD_CPU (default 1). Throughput is therefore often
# limited by the load-generator core, which is why CPU time per request of the
# proxy (read from /proc/PID/stat) is the figure to compare. See README.md.
#
# Only 127.0.0.1 is ever a target; every run is bounded by a duration and by
# an outer `timeout`. All temporary files live in a mktemp -d dir removed on
# exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

# ---------------------------------------------------------------- parameters
# DURATION/WARMUP accept "10" or "10s".
DURATION=${DURATION:-10}; DURATION=${DURATION%s}
WARMUP=${WARMUP:-2}; WARMUP=${WARMUP%s}
CONNECTIONS=${CONNECTIONS:-64}              # HTTP/1.1 connections (wrk)
H2_CONNECTIONS=${H2_CONNECTIONS:-16}        # HTTP/2 connections (h2load -c)
H2_STREAMS=${H2_STREAMS:-8}                 # concurrent streams each (h2load -m)
MODERATE_RATE=${MODERATE_RATE:-1000}        # total req/s of the fixed-rate run
MODERATE_CONNECTIONS=${MODERATE_CONNECTIONS:-4}
MODERATE_DURATION=${MODERATE_DURATION:-$DURATION}; MODERATE_DURATION=${MODERATE_DURATION%s}
TARGETS=${TARGETS:-"direct gateway bare nginx haproxy"}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-0}
DISTURBED_RETRIES=${DISTURBED_RETRIES:-2}   # repeats of a run disturbed by other programs
OUT=${OUT:-$BENCH_DIR/RESULTS.md}
RAW_DIR=${RAW_DIR:-}                        # if set, raw tool output is kept there
GATEWAY_BIN=${GATEWAY_BIN:-$REPO_DIR/target/release/phr-gateway}
# gateway/examples/bare_proxy.rs: hyper + hyper-util + rustls alone, no
# safeguards: the floor of the stack the gateway is built on (target "bare").
BARE_BIN=${BARE_BIN:-$REPO_DIR/target/release/examples/bare_proxy}

# Fixed loopback addresses: deliberately not configurable, so the script can
# never be pointed at another host.
readonly HOST=127.0.0.1
readonly BACKEND_PORT=18080        # backend, HTTP/1.1 (used by all proxies)
readonly BACKEND_H2C_PORT=18081    # backend, cleartext HTTP/2 (direct h2 runs only)
readonly GATEWAY_PORT=18443
readonly NGINX_PORT=18444
readonly HAPROXY_PORT=18445
readonly BARE_PORT=18446
readonly GATEWAY_ADMIN_PORT=19901

SIZES=${SIZES:-"small 64k"}                 # response sizes to measure (a subset writes a partial report)
CLK_TCK=$(getconf CLK_TCK)

WORK=""
declare -a STARTED_PIDS=()
BACKEND_PID=""
PROXY_PID=""

# ---------------------------------------------------------------- helpers
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [[ -n "$RAW_DIR" && -n "$WORK" && -d "$WORK/raw" ]]; then
        { mkdir -p "$RAW_DIR" && cp -r "$WORK/raw/." "$RAW_DIR/"; } || log "could not copy raw output to $RAW_DIR"
    fi
    [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
}

# Stop one process we started: TERM, then KILL after 5 s.
stop_pid() {
    local pid=$1 _
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

# Start a command in the background, remember its PID for cleanup.
# Usage: spawn LOGFILE CMD...   (sets SPAWNED_PID)
spawn() {
    local logfile=$1; shift
    "$@" >"$logfile" 2>&1 &
    SPAWNED_PID=$!
    STARTED_PIDS+=("$SPAWNED_PID")
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# Wait until URL answers HTTP 200 (curl -k: self-signed cert), or fail.
wait_http_200() {
    local url=$1 pid=$2 what=$3 logfile=$4 _
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logfile" >&2; die "$what exited during start-up"; }
        [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) == 200 ]] && return 0
        sleep 0.2
    done
    tail -n 30 "$logfile" >&2
    die "$what not ready after 20 s ($url)"
}

# CPU time (utime+stime, clock ticks) of PID and all its descendants, all
# threads included. nginx does its work in a child of the master process, so
# the whole process tree must be summed. Field 14/15 of /proc/PID/stat; the
# command name (field 2) may contain spaces, so cut after the last ')'.
cpu_ticks() {
    local pids=("$1") total=0 pid child stat f
    while ((${#pids[@]})); do
        pid=${pids[0]}; pids=("${pids[@]:1}")
        if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
            read -ra f <<<"${stat##*) }"     # f[0] is field 3 (state)
            total=$((total + f[11] + f[12])) # fields 14 utime, 15 stime
        fi
        for child in $(pgrep -P "$pid" || true); do pids+=("$child"); done
    done
    echo "$total"
}

# Ticks of one CPU from /proc/stat: "busy softirq total", busy excluding
# softirq. Softirq is kernel work for the loopback traffic that is not charged
# to any process; busy minus the proxy's own CPU time is therefore what other
# programs took from the proxy core during a run (it should be ~0).
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu { t = 0; for (i = 2; i <= NF; i++) t += $i;
                                     print t - $5 - $6 - $8, $8, t }' /proc/stat
}

now() { date +%s.%N; }

# ---------------------------------------------------------------- setup
ensure_tools() {
    local missing=() cmd
    for cmd in nginx haproxy wrk h2load; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        log "missing: ${missing[*]} — installing from Debian"
        [[ $(id -u) == 0 ]] || die "run as root or: apt-get install -y nginx-light haproxy wrk nghttp2-client"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y nginx-light haproxy wrk nghttp2-client >&2 \
            || { apt-get update >&2 && apt-get install -y nginx-light haproxy wrk nghttp2-client >&2; }
    fi
    for cmd in openssl curl python3 taskset pgrep ss getconf; do
        command -v "$cmd" >/dev/null || die "required tool not found: $cmd"
    done
    (($(nproc) >= 2)) || die "needs at least 2 CPU cores (proxy and load generator are pinned apart)"
}

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

ensure_gateway() {
    has_target gateway || return 0
    if [[ $BUILD == 1 || ! -x $GATEWAY_BIN ]]; then
        log "building phr-gateway (cargo build --release -p phr-gateway)…"
        (cd "$REPO_DIR" && cargo build --release -p phr-gateway >&2) || die "gateway build failed"
    fi
    [[ -x $GATEWAY_BIN ]] || die "gateway binary not found: $GATEWAY_BIN"
}

ensure_bare() {
    has_target bare || return 0
    if [[ $BUILD == 1 || ! -x $BARE_BIN ]]; then
        log "building the bare hyper proxy (cargo build --release --example bare_proxy)…"
        (cd "$REPO_DIR" && cargo build --release -p phr-gateway --example bare_proxy >&2) || die "bare_proxy build failed"
    fi
    [[ -x $BARE_BIN ]] || die "bare proxy binary not found: $BARE_BIN"
}

# The numbers are only as good as the machine is quiet: warn when it is not.
check_quiet() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if python3 -c "import sys; sys.exit(0 if float('$load') > 0.5 else 1)"; then
        log "WARNING: 1-min load average is $load — other work on this machine will distort the results"
    fi
    if pgrep -x 'rustc|cc1|cc1plus|ld|cargo' >/dev/null; then
        log "WARNING: compilers are running (pgrep rustc/cc1/cargo) — results will be distorted"
    fi
}

check_ports() {
    local p
    for p in $BACKEND_PORT $BACKEND_H2C_PORT $GATEWAY_PORT $NGINX_PORT $HAPROXY_PORT $BARE_PORT $GATEWAY_ADMIN_PORT; do
        port_free "$p" || die "port $p on $HOST is in use"
    done
}

setup_workdir() {
    WORK=$(mktemp -d /tmp/phr-bench.XXXXXX)
    # nginx workers drop privileges to 'nobody' when started as root and must
    # be able to read the docroot; the private key stays 0600 (read by the
    # master / haproxy / gateway process before any privilege drop).
    chmod 0755 "$WORK"
    mkdir -p "$WORK/docroot" "$WORK/raw" "$WORK/tmp"
    chmod 0755 "$WORK/docroot"
}

# One self-signed ECDSA P-256 certificate shared by all three proxies, so the
# TLS handshake/signature cost is identical.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        2>/dev/null
    chmod 0600 "$WORK/key.pem"
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"   # haproxy wants both in one file
    chmod 0600 "$WORK/haproxy.pem"
}

make_docroot() {
    # /small: exactly 100 bytes; /64k: exactly 65536 bytes (incompressible
    # content does not matter: nobody compresses here).
    head -c 99 /dev/zero | tr '\0' 'a' >"$WORK/docroot/small"; echo >>"$WORK/docroot/small"
    head -c 65536 /dev/urandom >"$WORK/docroot/64k"
    chmod 0644 "$WORK/docroot/small" "$WORK/docroot/64k"
}

# ---------------------------------------------------------------- backend
# A second nginx, plain HTTP, on the load-generator core. keepalive_requests
# is high so that neither the proxies' pooled connections nor wrk's are
# ever closed by the backend during a run.
start_backend() {
    cat >"$WORK/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/tmp/b-body;
    proxy_temp_path $WORK/tmp/b-proxy;
    fastcgi_temp_path $WORK/tmp/b-fcgi;
    uwsgi_temp_path $WORK/tmp/b-uwsgi;
    scgi_temp_path $WORK/tmp/b-scgi;
    server {
        listen $HOST:$BACKEND_PORT backlog=4096;
        root $WORK/docroot;
    }
    # Cleartext HTTP/2 (prior knowledge) for the direct HTTP/2 runs only:
    # nginx cannot serve h1 and h2c on the same plain port.
    server {
        listen $HOST:$BACKEND_H2C_PORT http2 backlog=4096;
        http2_max_concurrent_streams 256;
        root $WORK/docroot;
    }
}
EOF
    log "starting backend nginx on $HOST:$BACKEND_PORT (core $LOAD_CPU)"
    spawn "$WORK/backend.out" taskset -c "$LOAD_CPU" nginx -e "$WORK/backend-error.log" -p "$WORK" -c "$WORK/backend.conf"
    BACKEND_PID=$SPAWNED_PID
    wait_http_200 "http://$HOST:$BACKEND_PORT/small" "$BACKEND_PID" "backend nginx" "$WORK/backend-error.log"
}

# ---------------------------------------------------------------- proxies
# Each start_* function starts one proxy pinned to PROXY_CPU with a single
# worker/thread, TLS 1.3 only, ALPN h2+http/1.1, and a pooled keep-alive
# HTTP/1.1 connection pool to the backend; it sets PROXY_PID and PROXY_URL.

# Writes the gateway config to $1. With $2 = open, the route is marked as
# carrying no health information and needing no token (phi = false,
# auth.mode = "none"): the benchmark measures proxying, not token checks, and
# has no identity provider. Builds from before route authentication existed
# reject those keys (strict parsing), so start_gateway falls back to the plain
# route for them.
write_gateway_config() {
    local file=$1 variant=$2
    cat >"$file" <<EOF
[gateway]
instance_id = "bench"

[admin]
bind = "$HOST:$GATEWAY_ADMIN_PORT"

# This benchmark compares proxies: access records (bench/pipeline.sh measures them) and
# the per-IP caps (all load comes from one loopback address) are off here.
[audit]
enabled = false

[connection_limits]
max_connections_per_ip = 100000
tls_handshakes_per_ip_per_second = 100000
tls_handshake_burst = 100000

[[listeners]]
name = "public"
bind = "$HOST:$GATEWAY_PORT"
tls_min_version = "1.3"
client_auth = "none"

[[listeners.certificates]]
cert_file = "$WORK/cert.pem"
key_file = "$WORK/key.pem"

[upstreams.backend]
endpoints = ["http://$HOST:$BACKEND_PORT"]
allow_plaintext = true
jurisdiction = "JP"
in_cluster = true
pool_max_idle = 128          # same idle pool size as nginx's "keepalive 128"

[[routes]]
name = "bench"
path_prefix = "/"
upstream = "backend"
EOF
    if [[ $variant == open ]]; then
        cat >>"$file" <<EOF
phi = false

[routes.auth]
mode = "none"
EOF
    fi
}

start_gateway() {
    local conf="$WORK/gateway.toml" variant
    for variant in open plain; do
        write_gateway_config "$conf" "$variant"
        if "$GATEWAY_BIN" check-config --config "$conf" >"$WORK/gateway-check-$variant.log" 2>&1; then
            break
        fi
        if [[ $variant == plain ]]; then
            cat "$WORK/gateway-check-open.log" "$WORK/gateway-check-plain.log" >&2
            die "phr-gateway check-config rejected the bench config; compare write_gateway_config() in bench/run.sh with config/gateway.toml"
        fi
    done
    echo "gateway_route=$variant" >>"$WORK/meta"
    log "starting phr-gateway on $HOST:$GATEWAY_PORT (core $PROXY_CPU, 1 worker thread, route config: $variant)"
    # The gateway is pinned to one core, so one tokio worker thread. Logging
    # stays at the gateway's default (PHR_GATEWAY_LOG unset); its log goes to a
    # file in the work dir and the bytes it wrote are reported.
    spawn "$WORK/gateway.log" env PHR_GATEWAY_WORKER_THREADS=1 \
        taskset -c "$PROXY_CPU" "$GATEWAY_BIN" run --config "$conf"
    PROXY_PID=$SPAWNED_PID
    wait_http_200 "http://$HOST:$GATEWAY_ADMIN_PORT/readyz" "$PROXY_PID" "phr-gateway" "$WORK/gateway.log"
    PROXY_URL="https://$HOST:$GATEWAY_PORT"
}

start_nginx() {
    cat >"$WORK/nginx-proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;      # also caps requests per h2 connection
    keepalive_timeout 300s;
    client_body_temp_path $WORK/tmp/p-body;
    proxy_temp_path $WORK/tmp/p-proxy;
    fastcgi_temp_path $WORK/tmp/p-fcgi;
    uwsgi_temp_path $WORK/tmp/p-uwsgi;
    scgi_temp_path $WORK/tmp/p-scgi;

    upstream backend {
        server $HOST:$BACKEND_PORT;
        keepalive 128;                # pooled idle upstream connections
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen $HOST:$NGINX_PORT ssl http2 backlog=4096;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.3;
        http2_max_concurrent_streams 256;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;            # needed for upstream keep-alive
            proxy_set_header Connection "";     # ditto: do not send "close"
            # Buffers large enough for a 64 KiB response: with the default
            # 8x4k nginx would spill 64 KiB bodies to a temp file, which is
            # not what a tuned deployment does.
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
    log "starting nginx proxy on $HOST:$NGINX_PORT (core $PROXY_CPU, 1 worker)"
    spawn "$WORK/nginx-proxy.out" taskset -c "$PROXY_CPU" nginx -e "$WORK/nginx-proxy-error.log" -p "$WORK" -c "$WORK/nginx-proxy.conf"
    PROXY_PID=$SPAWNED_PID
    wait_http_200 "https://$HOST:$NGINX_PORT/small" "$PROXY_PID" "nginx proxy" "$WORK/nginx-proxy-error.log"
    PROXY_URL="https://$HOST:$NGINX_PORT"
}

start_haproxy() {
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3
    # no 'log' line: no per-request logging, like access_log off in nginx

defaults
    mode http
    option http-keep-alive
    http-reuse always                 # share pooled server connections freely
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend fe
    bind $HOST:$HAPROXY_PORT ssl crt $WORK/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
    default_backend be

backend be
    http-reuse always
    server backend $HOST:$BACKEND_PORT
EOF
    haproxy -c -q -f "$WORK/haproxy.cfg" >&2 || die "haproxy config check failed"
    log "starting HAProxy on $HOST:$HAPROXY_PORT (core $PROXY_CPU, 1 thread)"
    # -db: stay in the foreground as a single process, so PROXY_PID is it.
    spawn "$WORK/haproxy.log" taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
    PROXY_PID=$SPAWNED_PID
    wait_http_200 "https://$HOST:$HAPROXY_PORT/small" "$PROXY_PID" "haproxy" "$WORK/haproxy.log"
    PROXY_URL="https://$HOST:$HAPROXY_PORT"
}

start_bare() {
    log "starting the bare hyper proxy on $HOST:$BARE_PORT (core $PROXY_CPU, 1 runtime thread)"
    spawn "$WORK/bare.log" taskset -c "$PROXY_CPU" "$BARE_BIN" "$HOST:$BARE_PORT" "$HOST:$BACKEND_PORT" \
        "$WORK/cert.pem" "$WORK/key.pem"
    PROXY_PID=$SPAWNED_PID
    wait_http_200 "https://$HOST:$BARE_PORT/small" "$PROXY_PID" "bare proxy" "$WORK/bare.log"
    PROXY_URL="https://$HOST:$BARE_PORT"
}

stop_proxy() {
    [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
    PROXY_PID=""
}

# ---------------------------------------------------------------- checks
# Make sure each target really serves both bodies over both protocols before
# measuring it (a proxy answering 502s fast would otherwise look great), and
# record the negotiated TLS parameters.
verify_target() {
    local target=$1 h1_base=$2 h2_base=$3 size expect got h2flag
    for size in $SIZES; do
        expect=$([[ $size == small ]] && echo 100 || echo 65536)
        got=$(curl -sk --http1.1 -o /dev/null -w '%{http_code} %{size_download} %{http_version}' "$h1_base/$size")
        [[ $got == "200 $expect 1.1" ]] || die "$target h1 /$size: got '$got', want '200 $expect 1.1'"
        if [[ $target == direct ]]; then h2flag=--http2-prior-knowledge; else h2flag=--http2; fi
        got=$(curl -sk "$h2flag" -o /dev/null -w '%{http_code} %{size_download} %{http_version}' "$h2_base/$size")
        [[ $got == "200 $expect 2" ]] || die "$target h2 /$size: got '$got', want '200 $expect 2'"
    done
    if [[ $target != direct ]]; then
        local tls
        tls=$(timeout 5 openssl s_client -connect "${h2_base#https://}" -alpn h2,http/1.1 </dev/null 2>&1 \
            | awk '/^New, /{sub(/^New, /,""); sub(/, Cipher is /," "); pc=$0}
                   /^Server Temp Key:/{sub(/^Server Temp Key: /,""); g=$0}
                   /^ALPN protocol:/{a=$3} /^No ALPN/{a="none"}
                   END{printf "%s, key exchange %s, ALPN %s", pc, g, a}')
        echo "tls_$target=$tls" >>"$WORK/meta"
        log "$target TLS: $tls"
    fi
}

# ---------------------------------------------------------------- load runs
# Every run appends one TSV row to $WORK/results.tsv:
#   kind proto size target conns streams rate ok failed tool_s wall_s
#   p50_us p99_us proxy_ticks backend_ticks core_busy_ticks core_softirq_ticks
#   core_total_ticks   (proxy core, from /proc/stat)
# 'ok' counts only 2xx responses; CPU/request is computed over them.

# HTTP/1.1 saturation: wrk, one thread (one core), keep-alive connections.
# Sets R_OK R_FAILED R_TOOL_S R_P50 R_P99.
load_h1() {
    local url=$1 dur=$2 raw=$3
    timeout -k 5 $((dur + 30)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"${dur}s" --timeout 5s -s "$BENCH_DIR/wrk_summary.lua" "$url" >"$raw" 2>&1 \
        || { cat "$raw" >&2; die "wrk failed: $url"; }
    local line; line=$(grep '^WRK_SUMMARY' "$raw") || die "no wrk summary in $raw"
    local requests status_errors socket_errors duration_us
    requests=$(kv requests "$line"); status_errors=$(kv status_errors "$line")
    socket_errors=$(kv socket_errors "$line"); duration_us=$(kv duration_us "$line")
    R_OK=$((requests - status_errors))
    R_FAILED=$((status_errors + socket_errors))
    R_TOOL_S=$(python3 -c "print($duration_us/1e6)")
    R_P50=$(kv p50_us "$line"); R_P99=$(kv p99_us "$line")
}

# HTTP/2 (or, with extra args, fixed-rate HTTP/1.1): h2load, one thread.
# Percentiles come from the per-request log (h2load itself only prints
# min/max/mean/sd).
load_h2load() {
    local url=$1 dur=$2 raw=$3; shift 3
    rm -f "$raw.log"    # h2load appends to an existing log file
    timeout -k 5 $((dur + 30)) taskset -c "$LOAD_CPU" \
        h2load -t1 -D "$dur" --log-file="$raw.log" "$@" "$url" >"$raw" 2>&1 \
        || { cat "$raw" >&2; die "h2load failed: $url"; }
    local reqline
    reqline=$(grep '^requests:' "$raw") || { cat "$raw" >&2; die "no h2load summary in $raw"; }
    # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
    local succeeded failed errored
    succeeded=$(awk '{for(i=1;i<=NF;i++) if($(i+1) ~ /^succeeded/) print $i}' <<<"$reqline")
    failed=$(awk '{for(i=1;i<=NF;i++) if($(i+1) ~ /^failed/) print $i}' <<<"$reqline")
    errored=$(awk '{for(i=1;i<=NF;i++) if($(i+1) ~ /^errored/) print $i}' <<<"$reqline")
    R_FAILED=$((failed + errored))
    R_TOOL_S=$(sed -n 's/^finished in \([0-9.]*\)s.*/\1/p' "$raw")
    # Status counts: only 2xx are "ok" (h2load counts 4xx/5xx as succeeded).
    read -r R_OK R_P50 R_P99 < <(python3 "$BENCH_DIR/report.py" percentiles "$raw.log")
    R_FAILED=$((R_FAILED + succeeded - R_OK))
}

kv() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }

# Run one measured load run and record it.
# Usage: measure KIND PROTO SIZE TARGET URL
measure() {
    local kind=$1 proto=$2 size=$3 target=$4 url=$5
    local raw="$WORK/raw/$kind-$proto-$size-$target.txt"
    local conns streams=1 rate=0 dur=$DURATION
    local p0 p1 b0 b1 t0 t1 c0 c1 cs0 cs1 ct0 ct1
    case "$kind/$proto" in
        sat/h1) conns=$CONNECTIONS ;;
        sat/h2) conns=$H2_CONNECTIONS; streams=$H2_STREAMS ;;
        moderate/*) conns=$MODERATE_CONNECTIONS; rate=$MODERATE_RATE; dur=$MODERATE_DURATION
                    [[ $proto == h2 ]] && streams=$H2_STREAMS ;;
    esac
    local what="$conns conn"
    ((streams > 1)) && what+=" × $streams streams"
    ((rate > 0)) && what+=", $rate req/s"
    log "  $kind $proto /$size → $target ($url, ${dur}s, $what)"

    # On a shared machine another program may take the proxy core during a
    # run; such a run is repeated (bounded: DISTURBED_RETRIES times) and, if
    # it is still disturbed, kept and flagged in the report.
    local attempt other proxy_ticks
    for ((attempt = 0; attempt <= DISTURBED_RETRIES; attempt++)); do
        b0=$(cpu_ticks "$BACKEND_PID"); p0=0
        [[ -n $PROXY_PID ]] && p0=$(cpu_ticks "$PROXY_PID")
        read -r c0 cs0 ct0 < <(core_ticks "$PROXY_CPU")
        t0=$(now)
        case "$kind/$proto" in
            sat/h1) load_h1 "$url" "$dur" "$raw" ;;
            sat/h2) load_h2load "$url" "$dur" "$raw" -c "$conns" -m "$streams" ;;
            moderate/h1) load_h2load "$url" "$dur" "$raw" --h1 -c "$conns" -m 1 --rps "$((rate / conns))" ;;
            moderate/h2) load_h2load "$url" "$dur" "$raw" -c "$conns" -m "$streams" --rps "$((rate / conns))" ;;
        esac
        t1=$(now)
        read -r c1 cs1 ct1 < <(core_ticks "$PROXY_CPU")
        b1=$(cpu_ticks "$BACKEND_PID"); p1=0
        [[ -n $PROXY_PID ]] && p1=$(cpu_ticks "$PROXY_PID")

        proxy_ticks=NA
        [[ -n $PROXY_PID ]] && proxy_ticks=$((p1 - p0))
        other=$(( (c1 - c0) - ${proxy_ticks/NA/0} ))
        log "    → $R_OK ok, $R_FAILED failed, p50 ${R_P50}µs p99 ${R_P99}µs, proxy ticks $proxy_ticks, backend ticks $((b1 - b0)), other on proxy core $other of $((ct1 - ct0))"
        ((other * 100 > 5 * (ct1 - ct0))) || break
        if ((attempt < DISTURBED_RETRIES)); then
            log "    WARNING: other programs used the proxy core during this run; repeating it in 5 s"
            echo "retry $kind $proto $size $target" >>"$WORK/retries"
            sleep 5
        else
            log "    WARNING: still disturbed after $DISTURBED_RETRIES repeats; keeping it, flagged"
        fi
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$kind" "$proto" "$size" "$target" "$conns" "$streams" "$rate" \
        "$R_OK" "$R_FAILED" "$R_TOOL_S" "$(python3 -c "print(round($t1-$t0,3))")" \
        "$R_P50" "$R_P99" "$proxy_ticks" "$((b1 - b0))" \
        "$((c1 - c0))" "$((cs1 - cs0))" "$((ct1 - ct0))" >>"$WORK/results.tsv"
    ((R_FAILED == 0)) || log "    WARNING: $R_FAILED failed requests in this run"
}

# Unmeasured 2 s warm-up per protocol: fills the upstream connection pools,
# faults in code/data pages and lets allocators reach steady state.
warm_up() {
    local h1_url=$1 h2_url=$2
    ((WARMUP > 0)) || return 0
    timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$h1_url" >/dev/null 2>&1 || log "warning: h1 warm-up failed"
    timeout -k 5 $((WARMUP + 30)) taskset -c "$LOAD_CPU" \
        h2load -t1 -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -D "$WARMUP" "$h2_url" >/dev/null 2>&1 || log "warning: h2 warm-up failed"
}

# Start (if needed), verify, warm up and measure one target; then stop it.
bench_target() {
    local target=$1 h1_base h2_base size proto
    PROXY_PID=""
    case $target in
        direct)  h1_base="http://$HOST:$BACKEND_PORT"; h2_base="http://$HOST:$BACKEND_H2C_PORT" ;;
        gateway) start_gateway; h1_base=$PROXY_URL; h2_base=$PROXY_URL ;;
        nginx)   start_nginx;   h1_base=$PROXY_URL; h2_base=$PROXY_URL ;;
        haproxy) start_haproxy; h1_base=$PROXY_URL; h2_base=$PROXY_URL ;;
        bare)    start_bare;    h1_base=$PROXY_URL; h2_base=$PROXY_URL ;;
        *) die "unknown target '$target' (known: direct gateway bare nginx haproxy)" ;;
    esac
    log "== $target"
    verify_target "$target" "$h1_base" "$h2_base"
    log "  warm-up ${WARMUP}s per protocol"
    warm_up "$h1_base/small" "$h2_base/small"
    for proto in h1 h2; do
        for size in $SIZES; do
            if [[ $proto == h1 ]]; then
                measure sat h1 "$size" "$target" "$h1_base/$size"
            else
                measure sat h2 "$size" "$target" "$h2_base/$size"
            fi
        done
    done
    measure moderate h1 small "$target" "$h1_base/small"
    measure moderate h2 small "$target" "$h2_base/small"
    stop_proxy
    if [[ $target == gateway ]]; then
        echo "gateway_log_bytes=$(stat -c %s "$WORK/gateway.log")" >>"$WORK/meta"
        cp "$WORK/gateway.log" "$WORK/raw/gateway.log"
    fi
}

write_meta() {
    local gw_version="n/a" gw_commit
    gw_commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if has_target gateway; then
        gw_version=$("$GATEWAY_BIN" --version 2>/dev/null | head -n1 || true)
        [[ -n $gw_version ]] || gw_version="phr-gateway"
    fi
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "nproc=$(nproc)"
        echo "cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
        echo "kernel=$(uname -r)"
        echo "mem=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
        echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
        if [[ -n ${GATEWAY_DESC:-} ]]; then
            echo "gateway=$gw_version ($GATEWAY_DESC)"
        else
            echo "gateway=$gw_version (repo commit $gw_commit$(git -C "$REPO_DIR" diff --quiet HEAD -- gateway 2>/dev/null || echo ', gateway/ has uncommitted changes'))"
        fi
        echo "rustc=$(rustc --version 2>/dev/null || echo n/a)"
        echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')"
        echo "haproxy=$(haproxy -v 2>&1 | head -n1 | awk '{print $3}')"
        echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
        echo "h2load=$(h2load --version 2>&1 | head -n1 | awk '{print $2}')"
        echo "openssl=$(openssl version | awk '{print $2}')"
        echo "duration=$DURATION"
        echo "warmup=$WARMUP"
        echo "h1_connections=$CONNECTIONS"
        echo "h2_connections=$H2_CONNECTIONS"
        echo "h2_streams=$H2_STREAMS"
        echo "moderate_rate=$MODERATE_RATE"
        echo "moderate_connections=$MODERATE_CONNECTIONS"
        echo "moderate_duration=$MODERATE_DURATION"
        echo "proxy_cpu=$PROXY_CPU"
        echo "load_cpu=$LOAD_CPU"
        echo "clk_tck=$CLK_TCK"
        echo "targets=$TARGETS"
        echo "disturbed_retries=$DISTURBED_RETRIES"
    } >>"$WORK/meta"
}

main() {
    ensure_tools
    ensure_gateway
    ensure_bare
    check_ports
    check_quiet
    setup_workdir
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_cert
    make_docroot
    : >"$WORK/results.tsv"
    write_meta
    start_backend
    local target
    for target in $TARGETS; do
        bench_target "$target"
    done
    echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta"
    touch "$WORK/retries"
    echo "disturbed_repeats=$(wc -l <"$WORK/retries")" >>"$WORK/meta"
    python3 "$BENCH_DIR/report.py" markdown "$WORK/meta" "$WORK/results.tsv" >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
    log "wrote $OUT"
    cat "$OUT"
}

main "$@"
