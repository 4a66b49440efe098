#!/usr/bin/env bash
# bench/pipeline.sh — what each safeguard of phr-gateway's request path costs.
#
# bench/run.sh compares the gateway as a plain proxy with nginx and HAProxy.
# This script keeps the proxy fixed and switches the pipeline's phases on one
# by one, in ONE run on ONE machine, over HTTP/1.1 keep-alive (wrk):
#
#   1  baseline            plain route (phi = false, auth none), audit off, 100 B
#   2  JWT, cached         auth required, one token repeated (token cache hits)
#   3  JWT, uncached       a distinct token per request (signature every time)
#   4  FHIR read           GET /fhir/Patient/p1, fhir = true, patient token;
#                          audit off / on (SQLite) / on (PostgreSQL); then
#                          on but acknowledged before commit (audit.mode =
#                          "relaxed", SQLite / PostgreSQL): what the record's
#                          own work costs without the wait for its commit
#   5  FHIR search         GET /fhir/Observation, 100-entry Bundle; audit off / SQLite
#   6  memory              VmHWM/VmRSS around a ~20 MiB searchset Bundle
#   7  limits              FHIR read + source_ip & subject policies (local), and
#                          with the subject policy shared in Redis
#   8  access records      records/s in durable mode; cost of records on vs off
#   9  residency           requests per upstream connection opened (the residency
#                          check runs once per new upstream connection)
#
# Method as in bench/run.sh: the gateway (PHR_GATEWAY_WORKER_THREADS=1) is
# pinned to PROXY_CPU, backend nginx and wrk to LOAD_CPU; CPU time per request
# of the gateway comes from /proc/PID/stat. Before every measured run the
# script waits until no cargo/rustc runs (a CI build on this shared machine
# would distort the numbers) and records the load average.
#
# Only 127.0.0.1 is ever a target; every run is bounded by its duration and an
# outer `timeout`. Temporary files live in a mktemp -d dir removed on exit; the
# PostgreSQL schema and Redis keys the run creates are removed too.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
HELPERS=$BENCH_DIR/pipeline

# ---------------------------------------------------------------- parameters
DURATION=${DURATION:-8}; DURATION=${DURATION%s}     # measured run length (s)
WARMUP=${WARMUP:-2}; WARMUP=${WARMUP%s}             # unmeasured warm-up before each row (s)
CONNECTIONS=${CONNECTIONS:-32}                      # wrk -t1 -c
TOKENS=${TOKENS:-200000}                            # distinct tokens for the uncached row
WARM_TOKENS=${WARM_TOKENS:-40000}                   # distinct tokens for its warm-up
BIG_MIB=${BIG_MIB:-20}                              # size of the large Bundle (MiB)
BIG_SEQUENTIAL=${BIG_SEQUENTIAL:-20}                # sequential large-Bundle requests
BIG_CONCURRENT=${BIG_CONCURRENT:-4}                 # then this many at once
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DISTURBED_RETRIES=${DISTURBED_RETRIES:-1}           # repeats of a run disturbed by other programs
BUILD_WAIT_MAX=${BUILD_WAIT_MAX:-900}               # longest wait for a build to finish (s), per run
BUILD=${BUILD:-0}
OUT=${OUT:-$BENCH_DIR/PIPELINE.md}
ROW_GROUPS=${ROW_GROUPS:-"off sqlite pg relaxed memory"}  # groups of rows to run; a subset (e.g. "read sqlite pg": row 4a and the records rows) writes a partial report
RAW_DIR=${RAW_DIR:-}
GATEWAY_BIN=${GATEWAY_BIN:-$REPO_DIR/target/release/phr-gateway}

# Loopback only, fixed on purpose (ports differ from run.sh's, so both can
# coexist). PostgreSQL and Redis are the local test services.
readonly HOST=127.0.0.1
readonly BACKEND_PORT=18090
readonly GATEWAY_PORT=18453
readonly ADMIN_PORT=19911
readonly PG_URL=postgres://postgres@127.0.0.1:5432/test
readonly REDIS_URL=redis://127.0.0.1:6379
readonly SUBJECT=bench-user
readonly PATIENT=p1
readonly SCOPE="openid patient/*.rs"
readonly ISSUER=https://dev-issuer.phr-gateway.invalid
readonly AUDIENCE=phr-gateway-demo
CLK_TCK=$(getconf CLK_TCK)

# A random tag per run: the PostgreSQL schema and the Redis key prefix, so a
# run never touches another run's (or a test suite's) data.
RUN_TAG=bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
readonly PG_SCHEMA=$RUN_TAG
# The relaxed PostgreSQL row's own schema: each gateway instance here makes
# its own key-encryption key, and a store's keys open only with the KEK that
# created them (a gateway with another KEK refuses to start).
readonly PG_SCHEMA_RELAXED=${RUN_TAG}_relaxed
readonly REDIS_PREFIX="phr-bench:$RUN_TAG:"

WORK=""
declare -a STARTED_PIDS=()
BACKEND_PID=""
GW_PID=""
GW_DIR=""
PG_OK=0
REDIS_OK=0
declare -a PG_SCHEMAS_CREATED=()

# ---------------------------------------------------------------- helpers
log() { printf '[pipeline %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    local schema
    for schema in "${PG_SCHEMAS_CREATED[@]}"; do
        psql_q "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || log "could not drop schema $schema"
    done
    if ((REDIS_OK)); then
        # Only this run's keys (unique prefix); there are a handful.
        redis-cli -h "$HOST" -p 6379 --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null \
            | while read -r key; do redis-cli -h "$HOST" -p 6379 DEL "$key" >/dev/null; done || true
    fi
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

# Start a command in the background and remember its PID for cleanup.
# Usage: spawn LOGFILE CMD...   (sets SPAWNED_PID)
spawn() {
    local logfile=$1; shift
    "$@" >"$logfile" 2>&1 &
    SPAWNED_PID=$!
    STARTED_PIDS+=("$SPAWNED_PID")
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

psql_q() { psql -X -q -At -h "$HOST" -U postgres -d test -v ON_ERROR_STOP=1 -c "$1"; }

# Wait until URL answers 200, or fail with the process's log.
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

# CPU time (utime+stime, clock ticks) of PID and its descendants, all threads
# (fields 14 and 15 of /proc/PID/stat; cut after the last ')'). As run.sh.
cpu_ticks() {
    local pids=("$1") total=0 pid child stat f
    while ((${#pids[@]})); do
        pid=${pids[0]}; pids=("${pids[@]:1}")
        if stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
            read -ra f <<<"${stat##*) }"
            total=$((total + f[11] + f[12]))
        fi
        for child in $(pgrep -P "$pid" || true); do pids+=("$child"); done
    done
    echo "$total"
}

# "pid ticks" lines of every process with this exact name (PostgreSQL backends,
# redis-server): services this script did not start and does not touch, only
# reads, so the database's share of a request's cost can be reported.
named_ticks() {
    local name=$1 pid
    for pid in $(pgrep -x "$name" || true); do
        echo "$pid $(cpu_ticks "$pid")"
    done
}

# Ticks the named processes used between two named_ticks snapshots: per PID,
# end minus start (or all of it for a PID born in between). Backends that exit
# during the run are lost, which only makes this an underestimate.
aux_delta() {
    awk 'NR == FNR { start[$1] = $2; next } { d += $2 - ($1 in start ? start[$1] : 0) } END { print d + 0 }' "$1" "$2"
}

# Ticks of one CPU from /proc/stat: "busy-without-softirq softirq total".
core_ticks() {
    awk -v cpu="cpu$1" '$1 == cpu { t = 0; for (i = 2; i <= NF; i++) t += $i;
                                     print t - $5 - $6 - $8, $8, t }' /proc/stat
}

now() { date +%s.%N; }
want() { [[ " $ROW_GROUPS " == *" $1 "* ]]; }
loadavg1() { cut -d' ' -f1 /proc/loadavg; }

# A CI build on this machine would take the cores: wait until no cargo or
# rustc runs (bounded by BUILD_WAIT_MAX; a run that had to give up waiting is
# flagged through BUILD_WAITED=timeout).
wait_for_builds() {
    local waited=0
    BUILD_WAITED=0
    while pgrep -x cargo >/dev/null || pgrep -x rustc >/dev/null; do
        ((waited == 0)) && log "    a cargo/rustc process is running; waiting for it to finish"
        if ((waited >= BUILD_WAIT_MAX)); then
            log "    WARNING: still building after ${BUILD_WAIT_MAX}s; measuring anyway (flagged)"
            BUILD_WAITED=timeout
            return 0
        fi
        sleep 10; waited=$((waited + 10))
    done
    BUILD_WAITED=$waited
    ((waited == 0)) || log "    waited ${waited}s for a build to finish"
}

# ---------------------------------------------------------------- setup
ensure_tools() {
    local cmd
    for cmd in nginx wrk curl python3 taskset pgrep ss getconf openssl; do
        command -v "$cmd" >/dev/null || die "required tool not found: $cmd (see bench/README.md)"
    done
    (($(nproc) >= 2)) || die "needs at least 2 CPU cores (gateway and load generator are pinned apart)"
}

ensure_gateway() {
    if [[ $BUILD == 1 || ! -x $GATEWAY_BIN ]]; then
        wait_for_builds   # the build lock is shared with any CI build
        log "building phr-gateway (cargo build --release -p phr-gateway)…"
        (cd "$REPO_DIR" && cargo build --release -p phr-gateway >&2) || die "gateway build failed"
    fi
    [[ -x $GATEWAY_BIN ]] || die "gateway binary not found: $GATEWAY_BIN"
}

# PostgreSQL and Redis rows are skipped (and the report says so) when the
# local services are not there, instead of failing the whole run.
probe_services() {
    if command -v psql >/dev/null && psql_q "SELECT 1" >/dev/null 2>&1; then
        PG_OK=1
    else
        log "WARNING: PostgreSQL at $PG_URL not reachable: its rows are skipped"
    fi
    if command -v redis-cli >/dev/null && [[ $(redis-cli -h "$HOST" -p 6379 PING 2>/dev/null) == PONG ]]; then
        REDIS_OK=1
    else
        log "WARNING: Redis at $REDIS_URL not reachable: the shared-limit row is skipped"
    fi
}

check_ports() {
    local p
    for p in $BACKEND_PORT $GATEWAY_PORT $ADMIN_PORT; do
        port_free "$p" || die "port $p on $HOST is in use"
    done
}

setup_workdir() {
    WORK=$(mktemp -d /tmp/phr-pipeline.XXXXXX)
    chmod 0755 "$WORK"   # nginx workers (user nobody when root) read the docroot
    mkdir -p "$WORK/docroot" "$WORK/raw" "$WORK/tmp" "$WORK/issuer"
    chmod 0755 "$WORK/docroot"
    : >"$WORK/results.tsv"
    : >"$WORK/meta"
}

make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    chmod 0600 "$WORK/key.pem"
}

# The FHIR documents (see make_fhir.py). The limit routes (/fhirlocal/,
# /fhirshared/) are separate gateway routes with the same backend content:
# symlinks, so the backend work is identical to the /fhir/ row.
make_docroot() {
    python3 "$HELPERS/make_fhir.py" "$WORK/docroot" "http://$HOST:$BACKEND_PORT" "$BIG_MIB" >"$WORK/docroot.meta"
    ln -s fhir "$WORK/docroot/fhirlocal"
    ln -s fhir "$WORK/docroot/fhirshared"
    find "$WORK/docroot" -type d -exec chmod 0755 {} +
    cat "$WORK/docroot.meta" >>"$WORK/meta"
}

# Tokens from the gateway's development issuer (ES256, 12 h validity): one for
# the cached rows, TOKENS distinct ones for the uncached row and WARM_TOKENS
# more for its warm-up (so the measured run starts with none cached).
mint_tokens() {
    local dev=("$GATEWAY_BIN" dev-token --data-dir "$WORK/issuer" --subject "$SUBJECT" --patient "$PATIENT" --scope "$SCOPE")
    log "minting $((TOKENS + WARM_TOKENS + 1)) tokens (dev issuer, ES256)"
    "${dev[@]}" --count 1 >"$WORK/token-one" || die "dev-token failed"
    TOKEN=$(head -n1 "$WORK/token-one")
    "${dev[@]}" --count "$((TOKENS + WARM_TOKENS))" >"$WORK/tokens-all" || die "dev-token failed"
    head -n "$TOKENS" "$WORK/tokens-all" >"$WORK/tokens"
    tail -n "+$((TOKENS + 1))" "$WORK/tokens-all" >"$WORK/tokens-warm"
    rm -f "$WORK/tokens-all"
    local distinct
    distinct=$(sort -u "$WORK/tokens" | wc -l)
    ((distinct == TOKENS)) || die "expected $TOKENS distinct tokens, got $distinct"
    echo "token_bytes=${#TOKEN}" >>"$WORK/meta"
}

# ---------------------------------------------------------------- backend
# Static files, plain HTTP/1.1, on the load-generator core (as run.sh). FHIR
# documents are served as application/fhir+json; nginx ignores the query
# string the gateway adds to searches (subject=Patient/p1).
start_backend() {
    cat >"$WORK/backend.conf" <<EOF
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
    client_body_temp_path $WORK/tmp/b-body;
    proxy_temp_path $WORK/tmp/b-proxy;
    fastcgi_temp_path $WORK/tmp/b-fcgi;
    uwsgi_temp_path $WORK/tmp/b-uwsgi;
    scgi_temp_path $WORK/tmp/b-scgi;
    server {
        listen $HOST:$BACKEND_PORT backlog=4096;
        root $WORK/docroot;
        types { }
        default_type application/fhir+json;
        location = /small { default_type text/plain; }
    }
}
EOF
    log "starting backend nginx on $HOST:$BACKEND_PORT (core $LOAD_CPU)"
    spawn "$WORK/backend.out" taskset -c "$LOAD_CPU" nginx -e "$WORK/backend-error.log" -p "$WORK" -c "$WORK/backend.conf"
    BACKEND_PID=$SPAWNED_PID
    wait_http_200 "http://$HOST:$BACKEND_PORT/small" "$BACKEND_PID" "backend nginx" "$WORK/backend-error.log"
}

# ---------------------------------------------------------------- gateway
# One config shape for every instance; only access records / the store differ
# ($2: off | sqlite | pg). Routes:
#   /            plain: phi = false, auth none          (row 1; also /small)
#   /jwt/        auth required, not FHIR, prefix stripped (rows 2, 3)
#   /fhir/       fhir = true, auth required             (rows 4, 5, 8)
#   /fhirbig/    fhir = true, the ~20 MiB Bundle        (row 6)
#   /fhirlocal/  /fhir/ + local source_ip and subject policies (row 7)
#   /fhirshared/ /fhir/ + local source_ip, subject policy shared in Redis (row 7)
# The policies' rate is the highest the config accepts (1 per µs) so nothing
# is refused: the rows measure the cost of the check, not of refusals.
# Per-IP connection/handshake limits and the auth back-off are raised because
# all load comes from 127.0.0.1.
write_gateway_config() {
    local file=$1 audit=$2
    cat >"$file" <<EOF
[gateway]
instance_id = "bench-$audit"

[admin]
bind = "$HOST:$ADMIN_PORT"

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
pool_max_idle = 128

[connection_limits]
max_connections_per_ip = 100000
tls_handshakes_per_ip_per_second = 100000
tls_handshake_burst = 100000

[auth_backoff]
after_failures = 1000000

[[auth.issuers]]
issuer = "$ISSUER"
jwks_file = "$WORK/issuer/dev-issuer-jwks.json"
audiences = ["$AUDIENCE"]

[rate_limits.policies.bench_ip]
key = "source_ip"
rate = 1000000
per = "1s"
burst = 1000000

[rate_limits.policies.bench_subject]
key = "subject"
rate = 1000000
per = "1s"
burst = 1000000

[[routes]]
name = "plain"
path_prefix = "/"
upstream = "backend"
phi = false
[routes.auth]
mode = "none"

[[routes]]
name = "jwt"
path_prefix = "/jwt/"
upstream = "backend"
strip_prefix = true
[routes.auth]
mode = "required"

[[routes]]
name = "fhir"
path_prefix = "/fhir/"
upstream = "backend"
fhir = true
[routes.auth]
mode = "required"

[[routes]]
name = "fhirbig"
path_prefix = "/fhirbig/"
upstream = "backend"
fhir = true
[routes.auth]
mode = "required"

[[routes]]
name = "fhirlocal"
path_prefix = "/fhirlocal/"
upstream = "backend"
fhir = true
rate_limits = ["bench_ip", "bench_subject"]
[routes.auth]
mode = "required"
EOF
    if ((REDIS_OK)); then
        cat >>"$file" <<EOF

[rate_limits.policies.bench_subject_shared]
key = "subject"
rate = 1000000
per = "1s"
burst = 1000000
shared = true

[[routes]]
name = "fhirshared"
path_prefix = "/fhirshared/"
upstream = "backend"
fhir = true
rate_limits = ["bench_ip", "bench_subject_shared"]
[routes.auth]
mode = "required"

[redis]
url = "$REDIS_URL"
key_prefix = "$REDIS_PREFIX"
jurisdiction = "JP"
in_cluster = true
EOF
    fi
    case $audit in
        off) printf '\n[audit]\nenabled = false\n' >>"$file" ;;
        sqlite) ;;   # the default: durable records in phr-gateway.db next to the config
        pg) printf '\n[store]\nurl = "%s?options=-csearch_path%%3D%s"\njurisdiction = "JP"\nin_cluster = true\n' \
                "$PG_URL" "$PG_SCHEMA" >>"$file" ;;
        sqlite-relaxed) printf '\n[audit]\nmode = "relaxed"\n' >>"$file" ;;
        pg-relaxed) printf '\n[audit]\nmode = "relaxed"\n\n[store]\nurl = "%s?options=-csearch_path%%3D%s"\njurisdiction = "JP"\nin_cluster = true\n' \
                "$PG_URL" "$PG_SCHEMA_RELAXED" >>"$file" ;;
        *) die "unknown audit variant $audit" ;;
    esac
}

# Starts a fresh gateway instance in its own directory (its SQLite store and
# audit keys are created next to its config). Sets GW_PID, GW_DIR.
start_gateway() {
    local audit=$1
    GW_DIR="$WORK/gw-$audit-$(date +%s%N)"
    mkdir -p "$GW_DIR"
    write_gateway_config "$GW_DIR/gateway.toml" "$audit"
    "$GATEWAY_BIN" check-config --config "$GW_DIR/gateway.toml" >"$GW_DIR/check.log" 2>&1 \
        || { cat "$GW_DIR/check.log" >&2; die "check-config rejected the $audit config ($GW_DIR/gateway.toml)"; }
    log "starting phr-gateway (audit: $audit) on $HOST:$GATEWAY_PORT (core $PROXY_CPU, 1 worker thread)"
    spawn "$GW_DIR/gateway.log" env PHR_GATEWAY_WORKER_THREADS=1 \
        taskset -c "$PROXY_CPU" "$GATEWAY_BIN" run --config "$GW_DIR/gateway.toml"
    GW_PID=$SPAWNED_PID
    wait_http_200 "http://$HOST:$ADMIN_PORT/readyz" "$GW_PID" "phr-gateway" "$GW_DIR/gateway.log"
}

stop_gateway() {
    [[ -n $GW_PID ]] && stop_pid "$GW_PID"
    [[ -n $GW_DIR && -f $GW_DIR/gateway.log ]] && cp "$GW_DIR/gateway.log" "$WORK/raw/$(basename "$GW_DIR").log"
    GW_PID=""
}

# Sum of a Prometheus metric's samples (all label sets) from the admin listener.
metric_sum() {
    curl -s --max-time 5 "http://$HOST:$ADMIN_PORT/metrics" \
        | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

URL=https://$HOST:$GATEWAY_PORT

# curl through the gateway; prints "status bytes".
gw_get() {
    local path=$1; shift
    curl -sk --http1.1 --max-time 60 -o "$WORK/last-body" -w '%{http_code} %{size_download}' "$@" "$URL$path"
}

# Each instance must really do what its rows claim before anything is
# measured: 200 with the right content where a token is given, 401 on the
# token-requiring routes without one (so "auth on" is really on).
verify_gateway() {
    local got path
    got=$(gw_get /small); [[ $got == "200 100" ]] || die "plain /small: got '$got'"
    got=$(gw_get /jwt/small); [[ $got == 401* ]] || die "/jwt/small without token: got '$got', want 401"
    got=$(gw_get /jwt/small -H "Authorization: Bearer $TOKEN"); [[ $got == "200 100" ]] || die "/jwt/small: got '$got'"
    got=$(gw_get /jwt/small -H "Authorization: Bearer $(head -n1 "$WORK/tokens-warm")")
    [[ $got == "200 100" ]] || die "/jwt/small with a minted token: got '$got'"
    for path in /fhir/Patient/p1 /fhirlocal/Patient/p1 $( ((REDIS_OK)) && echo /fhirshared/Patient/p1); do
        got=$(gw_get "$path"); [[ $got == 401* ]] || die "$path without token: got '$got', want 401"
        got=$(gw_get "$path" -H "Authorization: Bearer $TOKEN")
        if [[ $got != 200* ]] || ! grep -q '"id":"p1"' "$WORK/last-body"; then die "$path: got '$got'"; fi
    done
    got=$(gw_get /fhir/Observation -H "Authorization: Bearer $TOKEN")
    [[ $got == 200* ]] || die "/fhir/Observation: got '$got'"
    python3 - "$WORK/last-body" "$URL" <<'EOF' || die "/fhir/Observation: the Bundle that came back is not the expected one"
import json, sys
b = json.load(open(sys.argv[1]))
entries = b.get("entry", [])
assert b["resourceType"] == "Bundle" and b["total"] == 100 and len(entries) == 100, (b.get("total"), len(entries))
assert all(e["resource"]["subject"]["reference"] == "Patient/p1" for e in entries)
# The backend's base URL was rewritten to the gateway's.
assert all(e["fullUrl"].startswith("https://") for e in entries), entries[0]["fullUrl"]
EOF
}

# ---------------------------------------------------------------- load runs
# Every measured row appends one TSV line to $WORK/results.tsv (see
# pipeline/report.py for the field list). "ok" counts 2xx responses only.

kv() { sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p" <<<"$2"; }

# wrk, one thread, keep-alive. $3: "static" (optional fixed header in $4) or
# "tokens" (token file in $4: one distinct token per request).
# Sets R_OK R_FAILED R_TOOL_S R_P50 R_P99 R_TOKENS_USED R_TOKENS_AVAIL.
run_wrk() {
    local url=$1 dur=$2 mode=$3 arg=${4:-} raw=$5
    local cmd=(timeout -k 5 $((dur + 60)) taskset -c "$LOAD_CPU")
    case $mode in
        static) cmd+=(wrk -t1 -c"$CONNECTIONS" -d"${dur}s" --timeout 5s -s "$BENCH_DIR/wrk_summary.lua")
                [[ -n $arg ]] && cmd+=(-H "$arg") ;;
        tokens) cmd=(env TOKEN_FILE="$arg" "${cmd[@]}" wrk -t1 -c"$CONNECTIONS" -d"${dur}s" --timeout 5s -s "$HELPERS/tokens.lua") ;;
    esac
    "${cmd[@]}" "$url" >"$raw" 2>&1 || { cat "$raw" >&2; die "wrk failed: $url"; }
    local line requests status_errors socket_errors duration_us
    line=$(grep '^WRK_SUMMARY' "$raw") || { cat "$raw" >&2; die "no wrk summary in $raw"; }
    requests=$(kv requests "$line"); status_errors=$(kv status_errors "$line")
    socket_errors=$(kv socket_errors "$line"); duration_us=$(kv duration_us "$line")
    R_OK=$((requests - status_errors))
    R_FAILED=$((status_errors + socket_errors))
    R_TOOL_S=$(python3 -c "print($duration_us/1e6)")
    R_P50=$(kv p50_us "$line"); R_P99=$(kv p99_us "$line")
    R_TOKENS_USED=""; R_TOKENS_AVAIL=""
    if line=$(grep '^WRK_TOKENS' "$raw"); then
        R_TOKENS_USED=$(kv used "$line"); R_TOKENS_AVAIL=$(kv available "$line")
    fi
}

# Warm-up (unmeasured) then one measured run of a row, repeated up to
# DISTURBED_RETRIES times when other programs used the gateway's core.
# Usage: measure ROW_ID "LABEL" AUDIT PATH MODE ARG AUX_PROCESS_NAME
#   AUX_PROCESS_NAME: postgres | redis-server | "" — services whose CPU time
#   during the run is reported as part of the row's cost.
measure() {
    local id=$1 label=$2 audit=$3 path=$4 mode=$5 arg=$6 aux=$7
    local raw="$WORK/raw/$id.txt" warm_arg=$arg
    [[ $mode == tokens ]] && warm_arg=$WORK/tokens-warm
    log "row $id: $label ($path, ${DURATION}s, $CONNECTIONS connections)"
    local attempt other g0 g1 b0 b1 c0 c1 cs0 cs1 ct0 ct1 t0 t1 a_ticks load
    for ((attempt = 0; attempt <= DISTURBED_RETRIES; attempt++)); do
        wait_for_builds
        run_wrk "$URL$path" "$WARMUP" "$mode" "$warm_arg" "$raw.warmup"
        load=$(loadavg1)
        [[ -n $aux ]] && named_ticks "$aux" >"$WORK/aux0"
        g0=$(cpu_ticks "$GW_PID"); b0=$(cpu_ticks "$BACKEND_PID")
        read -r c0 cs0 ct0 < <(core_ticks "$PROXY_CPU")
        t0=$(now)
        run_wrk "$URL$path" "$DURATION" "$mode" "$arg" "$raw"
        t1=$(now)
        read -r c1 cs1 ct1 < <(core_ticks "$PROXY_CPU")
        g1=$(cpu_ticks "$GW_PID"); b1=$(cpu_ticks "$BACKEND_PID")
        a_ticks=NA
        if [[ -n $aux ]]; then
            named_ticks "$aux" >"$WORK/aux1"
            a_ticks=$(aux_delta "$WORK/aux0" "$WORK/aux1")
        fi
        # What others took from the gateway's core: busy time *including*
        # softirq minus the gateway's own CPU time. Softirq counts because the
        # kernel charges the loopback network work it does in the gateway's
        # syscalls to the gateway's stime too (measured: without it, "other"
        # comes out at about minus the softirq time). PostgreSQL / Redis are
        # not pinned and may run there: that is part of the row, not a
        # disturbance, so their ticks are subtracted too (a lower bound).
        other=$(( (c1 - c0) + (cs1 - cs0) - (g1 - g0) - ${a_ticks/NA/0} ))
        log "    → $R_OK ok, $R_FAILED failed, $(python3 -c "print(round($R_OK/$R_TOOL_S))") req/s, p50 ${R_P50}µs p99 ${R_P99}µs," \
            "gateway $(( (g1 - g0) * 1000000 / CLK_TCK / (R_OK > 0 ? R_OK : 1) ))µs/req, load $load, other on core $PROXY_CPU: $other of $((ct1 - ct0)) ticks"
        [[ -n $R_TOKENS_USED ]] && log "    tokens: $R_TOKENS_USED used of $R_TOKENS_AVAIL"
        ((other * 100 > 5 * (ct1 - ct0))) || break
        if ((attempt < DISTURBED_RETRIES)); then
            log "    WARNING: other programs used the gateway's core during this run; repeating it"
            echo "$id" >>"$WORK/retries"
        else
            log "    WARNING: still disturbed; keeping it, flagged"
        fi
    done
    printf '%s\n' "$id" "$label" "$audit" "$path" "$R_OK" "$R_FAILED" "$R_TOOL_S" \
        "$(python3 -c "print(round($t1-$t0,3))")" "$R_P50" "$R_P99" "$((g1 - g0))" "$((b1 - b0))" \
        "$a_ticks" "$aux" "$((c1 - c0))" "$((cs1 - cs0))" "$((ct1 - ct0))" "$load" "$BUILD_WAITED" \
        "${R_TOKENS_USED:-}" "${R_TOKENS_AVAIL:-}" | paste -sd '\t' >>"$WORK/results.tsv"
    ((R_FAILED == 0)) || log "    WARNING: $R_FAILED failed requests in row $id"
}

# Row 9 evidence: after the baseline, how many requests went over each upstream
# connection the gateway opened (the residency check runs per connection).
record_residency() {
    local opened requests
    opened=$(metric_sum phr_upstream_connections_opened_total)
    requests=$(metric_sum phr_requests_total)
    log "residency: $requests requests, $opened upstream connections opened"
    printf 'residency_requests=%s\nresidency_connections=%s\n' "$requests" "$opened" >>"$WORK/meta"
}

# Row 8 evidence: one access record per request. After the instance stopped
# (every record committed), the store's record count must equal the requests
# the gateway counted (measured runs, warm-ups and the verification requests).
record_audit_count() {
    local audit=$1 requests=$2 transactions=$3 records
    case $audit in
        sqlite) records=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from audit_records').fetchone()[0])" "$GW_DIR/phr-gateway.db") ;;
        pg) records=$(psql_q "SELECT count(*) FROM $PG_SCHEMA.audit_records") ;;
    esac
    log "access records ($audit): $records in the store for $requests requests"
    printf 'records_%s=%s\nrequests_%s=%s\ntransactions_%s=%s\n' "$audit" "$records" "$audit" "$requests" \
        "$audit" "$transactions" >>"$WORK/meta"
}

# ---------------------------------------------------------------- the rows
bench_audit_off() {
    local bearer="Authorization: Bearer $TOKEN"
    start_gateway off
    verify_gateway
    measure 1 "baseline: plain route, no auth" off /small static "" ""
    record_residency
    measure 2 "JWT, cached token" off /jwt/small static "$bearer" ""
    measure 4a "FHIR read" off /fhir/Patient/p1 static "$bearer" ""
    measure 5a "FHIR search (100 entries)" off /fhir/Observation static "$bearer" ""
    measure 7a "FHIR read + local ip & subject limits" off /fhirlocal/Patient/p1 static "$bearer" ""
    if ((REDIS_OK)); then
        measure 7b "FHIR read + local ip, shared (Redis) subject limit" off /fhirshared/Patient/p1 static "$bearer" redis-server
    fi
    # Last on this instance: it fills the token cache with tens of thousands
    # of entries, which the other rows should not inherit.
    measure 3 "JWT, distinct token per request" off /jwt/small tokens "$WORK/tokens" ""
    stop_gateway
}

# Row 4a alone (ROW_GROUPS without "off"): the reference for the records rows
# when only the access-record cost is wanted.
bench_read_only() {
    start_gateway off
    verify_gateway
    measure 4a "FHIR read" off /fhir/Patient/p1 static "Authorization: Bearer $TOKEN" ""
    stop_gateway
}

bench_audit_sqlite() {
    local bearer="Authorization: Bearer $TOKEN" requests transactions
    start_gateway sqlite
    verify_gateway
    measure 4b "FHIR read, records on (SQLite)" sqlite /fhir/Patient/p1 static "$bearer" ""
    measure 5b "FHIR search, records on (SQLite)" sqlite /fhir/Observation static "$bearer" ""
    requests=$(metric_sum phr_requests_total)
    transactions=$(metric_sum phr_audit_transactions_total)
    stop_gateway
    record_audit_count sqlite "$requests" "$transactions"
}

# Creates PostgreSQL schema $1 for this run (removed on exit).
create_pg_schema() {
    psql_q "CREATE SCHEMA $1" >/dev/null || die "cannot create schema $1"
    PG_SCHEMAS_CREATED+=("$1")
}

bench_audit_pg() {
    ((PG_OK)) || return 0
    local bearer="Authorization: Bearer $TOKEN" requests transactions
    create_pg_schema "$PG_SCHEMA"
    start_gateway pg
    verify_gateway
    measure 4c "FHIR read, records on (PostgreSQL)" pg /fhir/Patient/p1 static "$bearer" postgres
    requests=$(metric_sum phr_requests_total)
    transactions=$(metric_sum phr_audit_transactions_total)
    stop_gateway
    record_audit_count pg "$requests" "$transactions"
}

# Rows 4d/4e: records on, but each response released before its record is
# committed (audit.mode = "relaxed": load tests only, never the default). Set
# against 4b/4c they split the records' cost into the record's own work
# (building, sealing, chaining, inserting) and the wait for the commit that
# the default durable mode adds to every response. Records a full queue
# dropped are counted and reported.
bench_audit_relaxed() {
    local bearer="Authorization: Bearer $TOKEN" variant
    for variant in sqlite-relaxed pg-relaxed; do
        if [[ $variant == pg-* ]]; then
            ((PG_OK)) || continue
            create_pg_schema "$PG_SCHEMA_RELAXED"
        fi
        start_gateway "$variant"
        verify_gateway
        if [[ $variant == sqlite-* ]]; then
            measure 4d "FHIR read, records on, relaxed (SQLite)" "$variant" /fhir/Patient/p1 static "$bearer" ""
        else
            measure 4e "FHIR read, records on, relaxed (PostgreSQL)" "$variant" /fhir/Patient/p1 static "$bearer" postgres
        fi
        printf 'dropped_%s=%s\n' "$variant" "$(metric_sum phr_audit_records_dropped_total)" >>"$WORK/meta"
        stop_gateway
    done
}

# "VmHWM VmRSS" of the gateway, in KiB.
vm_kib() { awk '/^VmHWM:/{h=$2} /^VmRSS:/{r=$2} END{print h, r}' "/proc/$GW_PID/status"; }

# Row 6: a fresh instance (audit off), so VmHWM before is the idle gateway.
# The large Bundle is buffered, checked (every entry's subject) and its base
# URLs rewritten, so memory grows with the response: sequential requests show
# the per-response peak, concurrent ones whether peaks add up.
bench_memory() {
    local hwm rss i got pids=() times=() path=/fhirbig/Observation
    start_gateway off
    gw_get /fhir/Patient/p1 -H "Authorization: Bearer $TOKEN" >/dev/null
    read -r hwm rss < <(vm_kib)
    printf 'mem_before_hwm=%s\nmem_before_rss=%s\n' "$hwm" "$rss" >>"$WORK/meta"
    wait_for_builds
    log "row 6: $BIG_SEQUENTIAL sequential requests for $path, then $BIG_CONCURRENT concurrent (VmHWM before: $((hwm / 1024)) MiB)"
    for ((i = 0; i < BIG_SEQUENTIAL; i++)); do
        got=$(taskset -c "$LOAD_CPU" curl -sk --http1.1 --max-time 60 -o /dev/null \
                -w '%{http_code} %{size_download} %{time_total}' -H "Authorization: Bearer $TOKEN" "$URL$path")
        [[ $got == 200* ]] || die "large Bundle: got '$got'"
        times+=("${got##* }")
    done
    echo "big_response_bytes=$(cut -d' ' -f2 <<<"$got")" >>"$WORK/meta"
    echo "big_seq_seconds=${times[*]}" >>"$WORK/meta"
    read -r hwm rss < <(vm_kib)
    printf 'mem_seq_hwm=%s\nmem_seq_rss=%s\n' "$hwm" "$rss" >>"$WORK/meta"
    for ((i = 0; i < BIG_CONCURRENT; i++)); do
        timeout 120 taskset -c "$LOAD_CPU" curl -sk --http1.1 --max-time 100 -o /dev/null \
            -w '%{http_code} %{size_download} %{time_total}\n' -H "Authorization: Bearer $TOKEN" "$URL$path" \
            >"$WORK/big-conc-$i" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    for ((i = 0; i < BIG_CONCURRENT; i++)); do
        [[ $(cat "$WORK/big-conc-$i") == 200* ]] || die "large Bundle (concurrent): got '$(cat "$WORK/big-conc-$i")'"
    done
    echo "big_conc_seconds=$(cut -d' ' -f3 "$WORK"/big-conc-* | paste -sd' ')" >>"$WORK/meta"
    read -r hwm rss < <(vm_kib)
    printf 'mem_conc_hwm=%s\nmem_conc_rss=%s\n' "$hwm" "$rss" >>"$WORK/meta"
    log "    VmHWM after: $((hwm / 1024)) MiB, VmRSS now: $((rss / 1024)) MiB"
    stop_gateway
}

write_meta() {
    local commit dirty=""
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO_DIR" diff --quiet HEAD -- gateway fhir-adapter 2>/dev/null || dirty=", with uncommitted changes in gateway/ or fhir-adapter/"
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "nproc=$(nproc)"
        echo "cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
        echo "kernel=$(uname -r)"
        echo "mem=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
        echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "gateway=$("$GATEWAY_BIN" --version 2>/dev/null | head -n1 || echo phr-gateway) (repo commit $commit$dirty; binary built $(date -u -r "$GATEWAY_BIN" '+%Y-%m-%d %H:%M UTC'))"
        echo "rustc=$(rustc --version 2>/dev/null || echo n/a)"
        echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')"
        echo "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
        echo "postgres=$( ((PG_OK)) && psql_q 'SHOW server_version' || echo unavailable)"
        echo "redis=$( ((REDIS_OK)) && redis-cli -h "$HOST" INFO server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p' || echo unavailable)"
        echo "duration=$DURATION"
        echo "warmup=$WARMUP"
        echo "connections=$CONNECTIONS"
        echo "tokens=$TOKENS"
        echo "warm_tokens=$WARM_TOKENS"
        echo "big_mib=$BIG_MIB"
        echo "big_sequential=$BIG_SEQUENTIAL"
        echo "big_concurrent=$BIG_CONCURRENT"
        echo "proxy_cpu=$PROXY_CPU"
        echo "load_cpu=$LOAD_CPU"
        echo "clk_tck=$CLK_TCK"
        echo "disturbed_retries=$DISTURBED_RETRIES"
        echo "pg_ok=$PG_OK"
        echo "redis_ok=$REDIS_OK"
    } >>"$WORK/meta"
}

main() {
    local started=$SECONDS
    ensure_tools
    ensure_gateway
    check_ports
    probe_services
    setup_workdir
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_cert
    make_docroot
    mint_tokens
    write_meta
    start_backend
    want off && bench_audit_off
    want read && ! want off && bench_read_only
    want sqlite && bench_audit_sqlite
    want pg && bench_audit_pg
    want relaxed && bench_audit_relaxed
    want memory && bench_memory
    touch "$WORK/retries"
    {
        echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "disturbed_repeats=$(wc -l <"$WORK/retries")"
        echo "elapsed_s=$((SECONDS - started))"
    } >>"$WORK/meta"
    cp "$WORK/meta" "$WORK/results.tsv" "$WORK/raw/"
    python3 "$HELPERS/report.py" "$WORK/meta" "$WORK/results.tsv" >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
    log "wrote $OUT ($((SECONDS - started)) s)"
    cat "$OUT"
}

main "$@"
