# bench/lib.sh — what bench/run.sh, bench/pipeline.sh and bench/callgrind.sh
# share. Sourced, never run. The sourcing script sets LOG_TAG (the prefix of
# its log lines) first and runs with `set -euo pipefail`.
#
# Provides: logging (log, die), the gateway binary (GATEWAY_BIN,
# PHR_GATEWAY_BIN, ensure_gateway_bin, cargo_release), processes (spawn,
# stop_pid, the EXIT trap install_cleanup, wait_http_200, port checks), the
# work directory (setup_workdir, make_cert, make_small_file), the backend
# nginx (start_backend), gateway configs and start-up (write_gateway_base,
# write_proxy_gateway_config, toml_route, toml_policy, gateway_check_config,
# start_gateway_process), and measurement (cpu_ticks, core_ticks, now, kv,
# parse_wrk_summary, meta_machine).
#
# Everything listens on 127.0.0.1 only: HOST is fixed here on purpose, so no
# script can be pointed at another host.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
readonly HOST=127.0.0.1
CLK_TCK=$(getconf CLK_TCK)

# Where cargo puts release builds (CARGO_TARGET_DIR when set, as cargo does).
CARGO_TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}
[[ $CARGO_TARGET == /* ]] || CARGO_TARGET=$REPO_DIR/$CARGO_TARGET
# PHR_GATEWAY_BIN names a prebuilt gateway binary: it is used as is and never
# built (BUILD is ignored for it). Without it GATEWAY_BIN (default: the release
# build) is built when missing or when BUILD=1.
GATEWAY_BIN=${PHR_GATEWAY_BIN:-${GATEWAY_BIN:-$CARGO_TARGET/release/phr-gateway}}

WORK=""
declare -a STARTED_PIDS=()

# ---------------------------------------------------------------- logging
log() { printf '[%s %s] %s\n' "${LOG_TAG:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_tools() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || die "required tool not found: $cmd (see bench/README.md)"
    done
}

# The process under test and the load generator are pinned to different cores.
require_two_cores() {
    (($(nproc) >= 2)) || die "needs at least 2 CPU cores (the proxy under test and the load generator are pinned apart)"
}

# ---------------------------------------------------------------- building
# Usage: cargo_release WHAT CARGO_ARGS...   (a release build in the repo)
cargo_release() {
    local what=$1; shift
    log "building $what (cargo build --release $*)…"
    (cd "$REPO_DIR" && cargo build --release "$@" >&2) || die "$what build failed"
}

# Builds the gateway when needed (see GATEWAY_BIN above); the optional
# arguments are a command run before the build (e.g. waiting for other builds).
ensure_gateway_bin() {
    if [[ -z ${PHR_GATEWAY_BIN:-} && (${BUILD:-0} == 1 || ! -x $GATEWAY_BIN) ]]; then
        (($# == 0)) || "$@"
        cargo_release phr-gateway -p phr-gateway
    fi
    [[ -x $GATEWAY_BIN ]] || die "gateway binary not found: $GATEWAY_BIN"
}

# ---------------------------------------------------------------- processes
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

# Start a command in the background and remember its PID for cleanup.
# Usage: spawn LOGFILE CMD...   (sets SPAWNED_PID)
spawn() {
    local logfile=$1; shift
    "$@" >"$logfile" 2>&1 &
    SPAWNED_PID=$!
    STARTED_PIDS+=("$SPAWNED_PID")
}

# The EXIT trap: stops every process spawn started, runs the script's own
# cleanup_extra (if it defines one), copies $WORK/raw to RAW_DIR (if set) and
# removes the work directory.
bench_cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
    if [[ -n ${RAW_DIR:-} && -n "$WORK" && -d "$WORK/raw" ]]; then
        { mkdir -p "$RAW_DIR" && cp -r "$WORK/raw/." "$RAW_DIR/"; } || log "could not copy raw output to $RAW_DIR"
    fi
    [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
}

install_cleanup() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

check_ports_free() {
    local p
    for p in "$@"; do
        port_free "$p" || die "port $p on $HOST is in use"
    done
}

# Wait until URL answers HTTP 200 (curl -k: self-signed cert), or fail with
# the end of the process's log. Usage: wait_http_200 URL PID WHAT LOGFILE [SECONDS]
wait_http_200() {
    local url=$1 pid=$2 what=$3 logfile=$4 secs=${5:-20} _
    for _ in $(seq $((secs * 5))); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logfile" >&2; die "$what exited during start-up"; }
        [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true) == 200 ]] && return 0
        sleep 0.2
    done
    tail -n 30 "$logfile" >&2
    die "$what not ready after $secs s ($url)"
}

# ---------------------------------------------------------------- work directory
# WORK=/tmp/PREFIX.XXXXXX with docroot/, raw/ and tmp/. nginx workers drop
# privileges to 'nobody' when started as root and must be able to read the
# docroot; the private key stays 0600 (read before any privilege drop).
setup_workdir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 0755 "$WORK"
    mkdir -p "$WORK/docroot" "$WORK/raw" "$WORK/tmp"
    chmod 0755 "$WORK/docroot"
}

# One self-signed ECDSA P-256 certificate ($WORK/cert.pem, key.pem) for every
# TLS listener of a run, so handshake and signature cost are identical.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    chmod 0600 "$WORK/key.pem"
}

# $WORK/docroot/small: exactly 100 bytes.
make_small_file() {
    head -c 99 /dev/zero | tr '\0' 'a' >"$WORK/docroot/small"; echo >>"$WORK/docroot/small"
    chmod 0644 "$WORK/docroot/small"
}

# ---------------------------------------------------------------- backend
# nginx's temporary-file paths, inside the work directory ($1: a name prefix).
nginx_temp_paths() {
    local p=$WORK/tmp/$1
    printf '    %s_temp_path %s;\n' client_body "$p-body" proxy "$p-proxy" fastcgi "$p-fcgi" \
        uwsgi "$p-uwsgi" scgi "$p-scgi"
}

# The backend: nginx, 1 worker, serving $WORK/docroot over plain HTTP/1.1 on
# $HOST:$1, pinned to core LOAD_CPU when that is set. keepalive_requests is
# high so that neither the proxies' pooled connections nor the load
# generator's are ever closed by the backend during a run. $2: extra lines for
# its server block; $3: extra lines for the http block. Sets BACKEND_PID.
start_backend() {
    local port=$1 server_extra=${2:-} http_extra=${3:-} pin=() on=""
    {
        cat <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
EOF
        nginx_temp_paths b
        cat <<EOF
    server {
        listen $HOST:$port backlog=4096;
        root $WORK/docroot;
${server_extra:+$server_extra
}    }
${http_extra:+$http_extra
}}
EOF
    } >"$WORK/backend.conf"
    if [[ -n ${LOAD_CPU:-} ]]; then pin=(taskset -c "$LOAD_CPU"); on=" (core $LOAD_CPU)"; fi
    log "starting backend nginx on $HOST:$port$on"
    spawn "$WORK/backend.out" "${pin[@]}" nginx -e "$WORK/backend-error.log" -p "$WORK" -c "$WORK/backend.conf"
    BACKEND_PID=$SPAWNED_PID
    wait_http_200 "http://$HOST:$port/small" "$BACKEND_PID" "backend nginx" "$WORK/backend-error.log"
}

# ---------------------------------------------------------------- gateway
# The part of a gateway config every bench shares, written to $1: instance id
# $2, admin listener on $HOST:$3, one TLS 1.3 listener on $HOST:$4 without
# client authentication (the run's certificate), upstream "backend" =
# http://$HOST:$5 with pool_max_idle = 128 (as nginx's "keepalive 128"), and
# the per-IP connection and handshake caps raised (all load comes from one
# loopback address). The caller appends the rest.
write_gateway_base() {
    local file=$1 instance=$2 admin_port=$3 port=$4 backend_port=$5
    cat >"$file" <<EOF
[gateway]
instance_id = "$instance"

[admin]
bind = "$HOST:$admin_port"

[connection_limits]
max_connections_per_ip = 100000
tls_handshakes_per_ip_per_second = 100000
tls_handshake_burst = 100000

[[listeners]]
name = "public"
bind = "$HOST:$port"
tls_min_version = "1.3"
client_auth = "none"

[[listeners.certificates]]
cert_file = "$WORK/cert.pem"
key_file = "$WORK/key.pem"

[upstreams.backend]
endpoints = ["http://$HOST:$backend_port"]
allow_plaintext = true
jurisdiction = "JP"
in_cluster = true
pool_max_idle = 128
EOF
}

# Prints one [[routes]] table to the upstream "backend".
# Usage: toml_route NAME PATH_PREFIX AUTH_MODE|"" [EXTRA_KEY_LINE...]
# AUTH_MODE "" writes no [routes.auth] table.
toml_route() {
    local name=$1 prefix=$2 auth=$3; shift 3
    printf '\n[[routes]]\nname = "%s"\npath_prefix = "%s"\nupstream = "backend"\n' "$name" "$prefix"
    (($# == 0)) || printf '%s\n' "$@"
    [[ -z $auth ]] || printf '[routes.auth]\nmode = "%s"\n' "$auth"
}

# Prints one rate-limit policy at the highest rate the config accepts (nothing
# is refused: what is measured is the cost of the check).
# Usage: toml_policy NAME KEY [EXTRA_KEY_LINE...]
toml_policy() {
    local name=$1 key=$2; shift 2
    printf '\n[rate_limits.policies.%s]\nkey = "%s"\nrate = 1000000\nper = "1s"\nburst = 1000000\n' "$name" "$key"
    (($# == 0)) || printf '%s\n' "$@"
}

# The gateway as a plain proxy (bench/run.sh, bench/callgrind.sh):
# write_gateway_base, access records off, and one route "/" to the backend.
# With VARIANT open the route is marked as carrying no health information and
# needing no token (phi = false, auth.mode = "none"): these benches measure
# proxying, not token checks, and have no identity provider. Builds from
# before route authentication existed reject those keys (strict parsing);
# VARIANT plain writes the route without them.
# Usage: write_proxy_gateway_config FILE INSTANCE ADMIN_PORT PORT BACKEND_PORT VARIANT
write_proxy_gateway_config() {
    local file=$1 variant=$6
    write_gateway_base "$@"
    {
        # Access records are measured by bench/pipeline.sh, not here.
        printf '\n[audit]\nenabled = false\n'
        if [[ $variant == open ]]; then
            toml_route bench / none "phi = false"
        else
            toml_route bench / ""
        fi
    } >>"$file"
}

# `phr-gateway check-config` on config $1, its output to $2.
gateway_check_config() { "$GATEWAY_BIN" check-config --config "$1" >"$2" 2>&1; }

# Starts `phr-gateway run --config $1` pinned to core PROXY_CPU with one tokio
# worker thread and its log level at the default (PHR_GATEWAY_LOG unset), its
# output to $2, and waits until its admin listener on port $3 says ready.
# Sets SPAWNED_PID.
start_gateway_process() {
    spawn "$2" env PHR_GATEWAY_WORKER_THREADS=1 taskset -c "$PROXY_CPU" "$GATEWAY_BIN" run --config "$1"
    wait_http_200 "http://$HOST:$3/readyz" "$SPAWNED_PID" "phr-gateway" "$2"
}

# ---------------------------------------------------------------- measuring
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
# to any process.
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu { t = 0; for (i = 2; i <= NF; i++) t += $i;
                                     print t - $5 - $6 - $8, $8, t }' /proc/stat
}

now() { date +%s.%N; }

# The number after "NAME=" in a line: kv NAME LINE.
kv() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }

# Reads the WRK_SUMMARY line (bench/wrk_summary.lua) of wrk output file $1.
# Sets R_OK (2xx only) R_FAILED (non-2xx + socket errors) R_TOOL_S R_P50 R_P99.
parse_wrk_summary() {
    local raw=$1 line requests status_errors socket_errors duration_us
    line=$(grep '^WRK_SUMMARY' "$raw") || { cat "$raw" >&2; die "no wrk summary in $raw"; }
    requests=$(kv requests "$line"); status_errors=$(kv status_errors "$line")
    socket_errors=$(kv socket_errors "$line"); duration_us=$(kv duration_us "$line")
    R_OK=$((requests - status_errors))
    R_FAILED=$((status_errors + socket_errors))
    R_TOOL_S=$(python3 -c "print($duration_us/1e6)")
    R_P50=$(kv p50_us "$line"); R_P99=$(kv p99_us "$line")
}

# The machine's key=value lines of a report's META file.
meta_machine() {
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -r)"
    echo "mem=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
}
