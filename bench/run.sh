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
# HTTP/2 (h2load), plus a fixed-rate "moderate load" run per target, and the
# proxy's resident memory while it holds IDLE_CONNECTIONS idle TLS keep-alive
# connections (bench/idle_conns.py), HTTP/1.1 and HTTP/2.
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

LOG_TAG=bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

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
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000} # idle keep-alive connections held per proxy (0: skip)
IDLE_HOLD=${IDLE_HOLD:-120}                 # longest the idle client holds them (s)
LOAD_RUNS=${LOAD_RUNS:-1}                   # 0: only the idle-connection memory, no load runs
STRACE_REQUESTS=${STRACE_REQUESTS:-0}       # >0: system calls and TLS records of that many HTTP/2 /small requests (strace)
# GATEWAY_BIN / PHR_GATEWAY_BIN: see bench/lib.sh.
# gateway/examples/bare_proxy.rs: hyper + hyper-util + rustls alone, no
# safeguards: the floor of the stack the gateway is built on (target "bare").
BARE_BIN=${BARE_BIN:-$CARGO_TARGET/release/examples/bare_proxy}
# How the report describes the gateway build (default: the repo commit; a
# prebuilt PHR_GATEWAY_BIN by its path).
GATEWAY_DESC=${GATEWAY_DESC:-${PHR_GATEWAY_BIN:+prebuilt $PHR_GATEWAY_BIN}}

# Fixed loopback addresses (HOST is 127.0.0.1, see lib.sh): deliberately not
# configurable, so the script can never be pointed at another host.
readonly BACKEND_PORT=18080        # backend, HTTP/1.1 (used by all proxies)
readonly BACKEND_H2C_PORT=18081    # backend, cleartext HTTP/2 (direct h2 runs only)
readonly GATEWAY_PORT=18443
readonly NGINX_PORT=18444
readonly HAPROXY_PORT=18445
readonly BARE_PORT=18446
readonly GATEWAY_ADMIN_PORT=19901

SIZES=${SIZES:-"small 64k"}                 # response sizes to measure (a subset writes a partial report)

BACKEND_PID=""
PROXY_PID=""

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
    require_tools openssl curl python3 taskset pgrep ss getconf
    ((STRACE_REQUESTS == 0)) || require_tools strace
    require_two_cores
}

# Each idle connection takes a file descriptor in the proxy and in the client:
# raise the soft limit to the hard one, and hold fewer connections if even
# that is too low.
FD_LIMIT=0
prepare_fd_limit() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=1048576
    ulimit -Sn "$hard" 2>/dev/null || true
    FD_LIMIT=$(ulimit -Sn)
    [[ $FD_LIMIT == unlimited ]] && FD_LIMIT=1048576
    if ((IDLE_CONNECTIONS + 1000 > FD_LIMIT)); then
        log "WARNING: open-file limit $FD_LIMIT: holding $((FD_LIMIT - 1000)) idle connections, not $IDLE_CONNECTIONS"
        IDLE_CONNECTIONS=$((FD_LIMIT - 1000))
    fi
    # HAProxy reserves two descriptors per connection (maxsock ≈ 2 × maxconn) and
    # refuses to start when that exceeds its ulimit-n, so under a low hard limit the
    # idle run holds fewer connections, the same number for every proxy.
    if has_target haproxy && ((2 * (IDLE_CONNECTIONS + 200) > FD_LIMIT)); then
        log "WARNING: open-file limit $FD_LIMIT: HAProxy can hold $((FD_LIMIT / 2 - 200)) idle connections; every proxy is measured with that many, not $IDLE_CONNECTIONS"
        IDLE_CONNECTIONS=$((FD_LIMIT / 2 - 200))
    fi
}

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

ensure_gateway() {
    has_target gateway || return 0
    ensure_gateway_bin
}

ensure_bare() {
    has_target bare || return 0
    if [[ $BUILD == 1 || ! -x $BARE_BIN ]]; then
        cargo_release "the bare hyper proxy" -p phr-gateway --example bare_proxy
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

# The certificate of lib.sh's make_cert, shared by all proxies, so the TLS
# handshake/signature cost is identical; haproxy wants cert and key in one file.
make_certs() {
    make_cert
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"
    chmod 0600 "$WORK/haproxy.pem"
}

make_docroot() {
    # /small: exactly 100 bytes; /64k: exactly 65536 bytes (incompressible
    # content does not matter: nobody compresses here).
    make_small_file
    head -c 65536 /dev/urandom >"$WORK/docroot/64k"
    chmod 0644 "$WORK/docroot/64k"
}

# ---------------------------------------------------------------- backend
# lib.sh's backend nginx on the load-generator core, plus a cleartext HTTP/2
# server (prior knowledge) for the direct HTTP/2 runs only: nginx cannot serve
# h1 and h2c on the same plain port.
start_run_backend() {
    start_backend "$BACKEND_PORT" "" "    default_type application/octet-stream;
    server {
        listen $HOST:$BACKEND_H2C_PORT http2 backlog=4096;
        http2_max_concurrent_streams 256;
        root $WORK/docroot;
    }"
}

# ---------------------------------------------------------------- proxies
# Each start_* function starts one proxy pinned to PROXY_CPU with a single
# worker/thread, TLS 1.3 only, ALPN h2+http/1.1, and a pooled keep-alive
# HTTP/1.1 connection pool to the backend; it sets PROXY_PID and PROXY_URL.

# Writes the gateway config to $1: lib.sh's plain-proxy config (access
# records and the per-IP caps off, one route "/" to the backend), $2 = open or
# plain (see write_proxy_gateway_config); start_gateway falls back to plain
# for builds from before route authentication existed.
write_gateway_config() {
    write_proxy_gateway_config "$1" bench "$GATEWAY_ADMIN_PORT" "$GATEWAY_PORT" "$BACKEND_PORT" "$2"
    # Room for the idle-connection run (default cap 10 000), and idle
    # connections kept as long as nginx and HAProxy keep theirs here (300 s).
    # header_read_timeout too, for builds before the gateway kept its own head
    # clock: their hyper header timer also ran while an HTTP/1.1 connection
    # waited for its next request, and would close the idle connections after
    # 10 s, before 10 000 of them were open.
    printf '\n[limits]\nmax_connections = %d\nidle_timeout = "300s"\nheader_read_timeout = "300s"\n' \
        $((IDLE_CONNECTIONS + 4096)) >>"$1"
}

start_gateway() {
    local conf="$WORK/gateway.toml" variant
    for variant in open plain; do
        write_gateway_config "$conf" "$variant"
        if gateway_check_config "$conf" "$WORK/gateway-check-$variant.log"; then
            break
        fi
        if [[ $variant == plain ]]; then
            cat "$WORK/gateway-check-open.log" "$WORK/gateway-check-plain.log" >&2
            die "phr-gateway check-config rejected the bench config; compare write_proxy_gateway_config() in bench/lib.sh with config/gateway.toml"
        fi
    done
    echo "gateway_route=$variant" >>"$WORK/meta"
    log "starting phr-gateway on $HOST:$GATEWAY_PORT (core $PROXY_CPU, 1 worker thread, route config: $variant)"
    # Its log goes to a file in the work dir and the bytes it wrote are reported.
    start_gateway_process "$conf" "$WORK/gateway.log" "$GATEWAY_ADMIN_PORT"
    PROXY_PID=$SPAWNED_PID
    PROXY_URL="https://$HOST:$GATEWAY_PORT"
}

start_nginx() {
    cat >"$WORK/nginx-proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy-error.log warn;
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections $((IDLE_CONNECTIONS + 4096)); }   # room for the idle-connection run
http {
    access_log off;
    keepalive_requests 10000000;      # also caps requests per h2 connection
    keepalive_timeout 300s;
$(nginx_temp_paths p)

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
    maxconn $((IDLE_CONNECTIONS + 100))        # room for the idle-connection run (see FD_LIMIT)
    # The fd limit HAProxy would derive from maxconn (2 per connection) may be
    # above the hard limit; the idle connections need one each.
    ulimit-n $FD_LIMIT
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
    parse_wrk_summary "$raw"
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

# Resident memory (VmRSS, KiB) of PID and all its descendants (nginx: master
# and worker).
rss_kib() {
    local pids=("$1") total=0 pid child kib
    while ((${#pids[@]})); do
        pid=${pids[0]}; pids=("${pids[@]:1}")
        kib=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${kib:-0}))
        for child in $(pgrep -P "$pid" || true); do pids+=("$child"); done
    done
    echo "$total"
}

# The memory of a freshly started proxy with IDLE_CONNECTIONS idle TLS
# keep-alive connections, each after one /small request (bench/idle_conns.py
# on the load core): VmRSS of the proxy tree before, while they are held, and
# after they are closed.
# Appends "target proto conns ok failed rss_before rss_held rss_after
# connect_s" to $WORK/idle.tsv. Usage: measure_idle TARGET PROTO PORT
measure_idle() {
    local target=$1 proto=$2 port=$3 ready="$WORK/idle-ready" release="$WORK/idle-release"
    local before held after status client _
    rm -f "$ready" "$release"
    before=$(rss_kib "$PROXY_PID")
    log "  idle $proto: $IDLE_CONNECTIONS connections → $target (RSS before: $((before / 1024)) MiB)"
    timeout -k 5 $((IDLE_HOLD + 30)) taskset -c "$LOAD_CPU" \
        python3 "$BENCH_DIR/idle_conns.py" "$port" "$IDLE_CONNECTIONS" "$proto" "$ready" "$release" "$IDLE_HOLD" \
        >"$WORK/raw/idle-$proto-$target.txt" 2>&1 &
    client=$!
    for _ in $(seq $((IDLE_HOLD * 5))); do
        [[ -e $ready ]] && break
        kill -0 "$client" 2>/dev/null || break
        sleep 0.2
    done
    [[ -e $ready ]] || { cat "$WORK/raw/idle-$proto-$target.txt" >&2; die "idle client did not get its connections up"; }
    sleep 2    # the last answers written, the proxy's tasks parked
    held=$(rss_kib "$PROXY_PID")
    touch "$release"
    wait "$client" || true
    sleep 2
    after=$(rss_kib "$PROXY_PID")
    status="$(cat "$ready") $(cat "$ready.open" 2>/dev/null || echo open=0)"
    log "    → $status; RSS held $((held / 1024)) MiB ($(( (held - before) * 1024 / IDLE_CONNECTIONS )) B/conn), after close $((after / 1024)) MiB"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$proto" "$IDLE_CONNECTIONS" \
        "$(kv ok "$status")" "$(kv failed "$status")" "$before" "$held" "$after" \
        "$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$status")" "$(kv open "$status")" >>"$WORK/idle.tsv"
}

# System calls and TLS records per request of the proxy: STRACE_REQUESTS
# HTTP/2 /small requests (h2load -n, the saturation run's connections and
# streams) twice under strace attached to the proxy's process tree, once
# counting every call (-c), once recording the data of every write
# (bench/strace_summary.py walks the TLS records in them). strace slows the
# proxy down a lot: only the counts mean anything, not the time.
# Appends "target requests summary" to $WORK/strace.tsv.
# Usage: measure_strace TARGET URL
measure_strace() {
    local target=$1 url=$2 raw="$WORK/raw/strace-$target" pid tracer pargs=() pass
    for pid in $(pgrep_tree "$PROXY_PID"); do pargs+=(-p "$pid"); done
    log "  strace: $STRACE_REQUESTS HTTP/2 /small requests → $target (pids ${pargs[*]})"
    for pass in counts writes; do
        if [[ $pass == counts ]]; then
            timeout -k 5 300 strace -f -c -o "$raw.$pass" "${pargs[@]}" 2>/dev/null &
        else
            timeout -k 5 300 strace -f -xx -s 1000000 -e trace=write,writev,sendto,sendmsg \
                -o "$raw.$pass" "${pargs[@]}" 2>/dev/null &
        fi
        tracer=$!
        sleep 1    # attached
        timeout -k 5 240 taskset -c "$LOAD_CPU" h2load -t1 -n "$STRACE_REQUESTS" -c "$H2_CONNECTIONS" \
            -m "$H2_STREAMS" "$url" >"$raw.$pass.h2load" 2>&1 || log "    WARNING: h2load under strace failed"
        sleep 0.5
        kill -INT "$tracer" 2>/dev/null || true
        wait "$tracer" || true
    done
    local summary
    summary=$(python3 "$BENCH_DIR/strace_summary.py" "$raw.counts" "$raw.writes" "$STRACE_REQUESTS")
    log "    → $summary"
    printf '%s\t%s\t%s\n' "$target" "$STRACE_REQUESTS" "$summary" >>"$WORK/strace.tsv"
    rm -f "$raw.writes"    # large; the counts and h2load output stay in raw/
}

# PID and its descendants, one per line.
pgrep_tree() {
    local pids=("$1") pid child
    while ((${#pids[@]})); do
        pid=${pids[0]}; pids=("${pids[@]:1}")
        echo "$pid"
        for child in $(pgrep -P "$pid" || true); do pids+=("$child"); done
    done
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
    if ((LOAD_RUNS)); then
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
    fi
    if ((STRACE_REQUESTS > 0)) && [[ $target != direct ]]; then
        measure_strace "$target" "$h2_base/small"
    fi
    stop_proxy
    if [[ $target == gateway ]]; then
        echo "gateway_log_bytes=$(stat -c %s "$WORK/gateway.log")" >>"$WORK/meta"
        cp "$WORK/gateway.log" "$WORK/raw/gateway.log"
    fi
    # Memory is measured on a fresh process per protocol: allocators keep what
    # they once used, so a process that held connections before (or ran the
    # load) would reuse that memory and show less than a connection costs.
    if ((IDLE_CONNECTIONS > 0)) && [[ $target != direct ]]; then
        for proto in h1 h2; do
            "start_$target"
            measure_idle "$target" "$proto" "${PROXY_URL##*:}"
            stop_proxy
        done
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
        meta_machine
        if [[ -n $GATEWAY_DESC ]]; then
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
        echo "idle_connections=$IDLE_CONNECTIONS"
        echo "load_runs=$LOAD_RUNS"
    } >>"$WORK/meta"
}

main() {
    ensure_tools
    prepare_fd_limit
    ensure_gateway
    ensure_bare
    check_ports_free $BACKEND_PORT $BACKEND_H2C_PORT $GATEWAY_PORT $NGINX_PORT $HAPROXY_PORT $BARE_PORT $GATEWAY_ADMIN_PORT
    check_quiet
    setup_workdir phr-bench
    install_cleanup
    make_certs
    make_docroot
    : >"$WORK/results.tsv"
    : >"$WORK/idle.tsv"
    : >"$WORK/strace.tsv"
    write_meta
    start_run_backend
    local target
    for target in $TARGETS; do
        bench_target "$target"
    done
    echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/meta"
    touch "$WORK/retries"
    echo "disturbed_repeats=$(wc -l <"$WORK/retries")" >>"$WORK/meta"
    python3 "$BENCH_DIR/report.py" markdown "$WORK/meta" "$WORK/results.tsv" "$WORK/idle.tsv" "$WORK/strace.tsv" >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
    log "wrote $OUT"
    cat "$OUT"
}

main "$@"
