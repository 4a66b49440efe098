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
#   5  FHIR search         GET /fhir/Observation, 100-entry Bundle; audit off / SQLite;
#                          5c: the same Bundle through the JWT route (no FHIR
#                          check), to tell the check's cost from the bytes'
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

LOG_TAG=pipeline
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
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
# GATEWAY_BIN / PHR_GATEWAY_BIN: see bench/lib.sh.

# Loopback only, fixed on purpose (ports differ from run.sh's, so both can
# coexist; HOST is 127.0.0.1, see lib.sh). PostgreSQL and Redis are the local
# test services.
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

# A random tag per run: the PostgreSQL schema and the Redis key prefix, so a
# run never touches another run's (or a test suite's) data.
RUN_TAG=bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
readonly PG_SCHEMA=$RUN_TAG
# The relaxed PostgreSQL row's own schema: each gateway instance here makes
# its own key-encryption key, and a store's keys open only with the KEK that
# created them (a gateway with another KEK refuses to start).
readonly PG_SCHEMA_RELAXED=${RUN_TAG}_relaxed
readonly REDIS_PREFIX="phr-bench:$RUN_TAG:"

BACKEND_PID=""
GW_PID=""
GW_DIR=""
PG_OK=0
REDIS_OK=0
declare -a PG_SCHEMAS_CREATED=()

# ---------------------------------------------------------------- helpers
# Run by lib.sh's EXIT trap after the processes stopped: this run's PostgreSQL
# schemas and Redis keys go too.
cleanup_extra() {
    local schema
    for schema in "${PG_SCHEMAS_CREATED[@]}"; do
        psql_q "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || log "could not drop schema $schema"
    done
    if ((REDIS_OK)); then
        # Only this run's keys (unique prefix); there are a handful.
        redis-cli -h "$HOST" -p 6379 --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null \
            | while read -r key; do redis-cli -h "$HOST" -p 6379 DEL "$key" >/dev/null; done || true
    fi
}

psql_q() { psql -X -q -At -h "$HOST" -U postgres -d test -v ON_ERROR_STOP=1 -c "$1"; }

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
    require_tools nginx wrk curl python3 taskset pgrep ss getconf openssl
    require_two_cores
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

# lib.sh's work directory, plus the dev issuer's keys and the result files.
setup_pipeline_workdir() {
    setup_workdir phr-pipeline
    mkdir -p "$WORK/issuer"
    : >"$WORK/results.tsv"
    : >"$WORK/meta"
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
# lib.sh's backend: static files, plain HTTP/1.1, on the load-generator core. FHIR
# documents are served as application/fhir+json; nginx ignores the query
# string the gateway adds to searches (subject=Patient/p1).
start_pipeline_backend() {
    start_backend "$BACKEND_PORT" "        types { }
        default_type application/fhir+json;
        location = /small { default_type text/plain; }"
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
    write_gateway_base "$file" "bench-$audit" "$ADMIN_PORT" "$GATEWAY_PORT" "$BACKEND_PORT"
    {
        cat <<EOF

[auth_backoff]
after_failures = 1000000

[[auth.issuers]]
issuer = "$ISSUER"
jwks_file = "$WORK/issuer/dev-issuer-jwks.json"
audiences = ["$AUDIENCE"]
EOF
        toml_policy bench_ip source_ip
        toml_policy bench_subject subject
        toml_route plain / none "phi = false"
        toml_route jwt /jwt/ required "strip_prefix = true"
        toml_route fhir /fhir/ required "fhir = true"
        toml_route fhirbig /fhirbig/ required "fhir = true"
        toml_route fhirlocal /fhirlocal/ required "fhir = true" 'rate_limits = ["bench_ip", "bench_subject"]'
        if ((REDIS_OK)); then
            toml_policy bench_subject_shared subject "shared = true"
            toml_route fhirshared /fhirshared/ required "fhir = true" 'rate_limits = ["bench_ip", "bench_subject_shared"]'
            printf '\n[redis]\nurl = "%s"\nkey_prefix = "%s"\njurisdiction = "JP"\nin_cluster = true\n' \
                "$REDIS_URL" "$REDIS_PREFIX"
        fi
        case $audit in
            off) printf '\n[audit]\nenabled = false\n' ;;
            sqlite) ;;   # the default: durable records in phr-gateway.db next to the config
            pg) printf '\n[store]\nurl = "%s?options=-csearch_path%%3D%s"\njurisdiction = "JP"\nin_cluster = true\n' \
                    "$PG_URL" "$PG_SCHEMA" ;;
            sqlite-relaxed) printf '\n[audit]\nmode = "relaxed"\n' ;;
            pg-relaxed) printf '\n[audit]\nmode = "relaxed"\n\n[store]\nurl = "%s?options=-csearch_path%%3D%s"\njurisdiction = "JP"\nin_cluster = true\n' \
                    "$PG_URL" "$PG_SCHEMA_RELAXED" ;;
            *) die "unknown audit variant $audit" ;;
        esac
    } >>"$file"
}

# Starts a fresh gateway instance in its own directory (its SQLite store and
# audit keys are created next to its config). Sets GW_PID, GW_DIR.
start_gateway() {
    local audit=$1
    GW_DIR="$WORK/gw-$audit-$(date +%s%N)"
    mkdir -p "$GW_DIR"
    write_gateway_config "$GW_DIR/gateway.toml" "$audit"
    gateway_check_config "$GW_DIR/gateway.toml" "$GW_DIR/check.log" \
        || { cat "$GW_DIR/check.log" >&2; die "check-config rejected the $audit config ($GW_DIR/gateway.toml)"; }
    log "starting phr-gateway (audit: $audit) on $HOST:$GATEWAY_PORT (core $PROXY_CPU, 1 worker thread)"
    start_gateway_process "$GW_DIR/gateway.toml" "$GW_DIR/gateway.log" "$ADMIN_PORT"
    GW_PID=$SPAWNED_PID
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
    parse_wrk_summary "$raw"
    local line
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
    measure 5c "the search's Bundle, JWT route (no FHIR check)" off /jwt/fhir/Observation static "$bearer" ""
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
        meta_machine
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
    ensure_gateway_bin wait_for_builds   # the build lock is shared with any CI build
    check_ports_free $BACKEND_PORT $GATEWAY_PORT $ADMIN_PORT
    probe_services
    setup_pipeline_workdir
    install_cleanup
    make_cert
    make_docroot
    mint_tokens
    write_meta
    start_pipeline_backend
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
