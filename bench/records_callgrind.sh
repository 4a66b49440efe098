#!/usr/bin/env bash
# bench/records_callgrind.sh — instructions per FHIR read with access records
# off, and on in relaxed mode (SQLite, PostgreSQL): what one record costs the
# gateway in user-space instructions (bench/pipeline.sh's rows 4a, 4d, 4e,
# counted with callgrind so the host's noise does not decide it).
#
#   bench/records_callgrind.sh OLD_BINARY NEW_BINARY ...   # one row per binary
#   N=5000 VARIANTS="off sqlite-relaxed" bench/records_callgrind.sh target/release/phr-gateway
#   KEEP=/tmp/cg bench/records_callgrind.sh BIN            # keep callgrind.out files there
#
# Kernel time (write, fsync) is not counted: callgrind sees user space only.
# Records per commit are printed beside each count (they decide how much of a
# commit's fixed cost each record carries), from phr_audit_transactions_total.
#
# Needs valgrind, nginx, h2load, openssl, curl, psql (PostgreSQL at
# 127.0.0.1:5432, trust, db test). Loopback only; ports 28090 (backend), 28453
# (gateway), 29911 (admin) so it can run beside pipeline.sh and callgrind.sh;
# every load is bounded by `timeout`; the work directory and the PostgreSQL
# schemas it creates are removed on exit.
set -euo pipefail
shopt -s inherit_errexit

LOG_TAG=records-callgrind
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-5000}             # measured requests per variant
WARM=${WARM:-1000}       # unmeasured requests first
CONNS=${CONNS:-32}       # keep-alive connections (pipeline.sh: wrk -c32)
VARIANTS=${VARIANTS:-"off sqlite-relaxed pg-relaxed"}
KEEP=${KEEP:-}
BACKEND_PORT=${BACKEND_PORT:-28090}
GATEWAY_PORT=${GATEWAY_PORT:-28453}
ADMIN_PORT=${ADMIN_PORT:-29911}
readonly PG_URL=postgres://postgres@127.0.0.1:5432/test
readonly ISSUER=https://dev-issuer.phr-gateway.invalid
readonly AUDIENCE=phr-gateway-demo
RUN_TAG=cgrec_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')

[[ $# -ge 1 ]] || { echo "usage: $0 GATEWAY_BINARY..." >&2; exit 2; }
for cmd in valgrind callgrind_control nginx h2load openssl curl psql; do
    command -v "$cmd" >/dev/null || { echo "missing: $cmd" >&2; exit 2; }
done

psql_q() { psql -X -q -At -h "$HOST" -U postgres -d test -v ON_ERROR_STOP=1 -c "$1"; }
# Every schema this run made starts with RUN_TAG: they are created inside the
# $(count …) subshells, so no list kept in this shell would see them.
cleanup_extra() {
    local s
    for s in $(psql_q "SELECT nspname FROM pg_namespace WHERE nspname LIKE '${RUN_TAG}\_%'" 2>/dev/null); do
        psql_q "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true
    done
}

setup_workdir phr-records-callgrind
mkdir -p "$WORK/issuer"
install_cleanup
check_ports_free "$BACKEND_PORT" "$GATEWAY_PORT" "$ADMIN_PORT"
make_cert
python3 "$BENCH_DIR/pipeline/make_fhir.py" "$WORK/docroot" "http://$HOST:$BACKEND_PORT" 0 >/dev/null
find "$WORK/docroot" -type d -exec chmod 0755 {} +
start_backend "$BACKEND_PORT" "        types { }
        default_type application/fhir+json;"

# $1 binary, $2 variant, $3 config file, $4 instance dir.
write_config() {
    local bin=$1 variant=$2 file=$3 schema
    write_gateway_base "$file" "cg-$variant" "$ADMIN_PORT" "$GATEWAY_PORT" "$BACKEND_PORT"
    {
        printf '\n[[auth.issuers]]\nissuer = "%s"\njwks_file = "%s"\naudiences = ["%s"]\n' \
            "$ISSUER" "$WORK/issuer/dev-issuer-jwks.json" "$AUDIENCE"
        toml_route fhir /fhir/ required "fhir = true"
        case $variant in
            off) printf '\n[audit]\nenabled = false\n' ;;
            sqlite) ;;
            sqlite-relaxed) printf '\n[audit]\nmode = "relaxed"\n' ;;
            pg | pg-relaxed)
                # One schema per gateway run: BASHPID differs in every $(count …) subshell.
                schema=${RUN_TAG}_$BASHPID
                psql_q "CREATE SCHEMA $schema" >/dev/null
                [[ $variant == pg-relaxed ]] && printf '\n[audit]\nmode = "relaxed"\n'
                printf '\n[store]\nurl = "%s?options=-csearch_path%%3D%s"\njurisdiction = "JP"\nin_cluster = true\n' \
                    "$PG_URL" "$schema" ;;
            *) die "unknown variant $variant" ;;
        esac
    } >>"$file"
}

load() {
    local n=$1
    timeout 600 h2load --h1 -n "$n" -c "$CONNS" -t 1 -H "Authorization: Bearer $TOKEN" \
        "https://$HOST:$GATEWAY_PORT/fhir/Patient/p1" >"$WORK/h2load.out" 2>&1 \
        || { cat "$WORK/h2load.out" >&2; return 1; }
    grep -q " $n succeeded, 0 failed, 0 errored" "$WORK/h2load.out" || { cat "$WORK/h2load.out" >&2; return 1; }
}

metric() {
    curl -s --max-time 5 "http://$HOST:$ADMIN_PORT/metrics" \
        | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# Prints "instructions/request records/commit" for one binary and variant.
count() {
    local bin=$1 variant=$2 dir tx0 tx1
    dir=$(mktemp -d "$WORK/gw.XXXXXX")
    write_config "$bin" "$variant" "$dir/gateway.toml"
    PHR_GATEWAY_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/callgrind.out.%p" \
        "$bin" run --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait_http_200 "http://$HOST:$ADMIN_PORT/readyz" "$pid" "phr-gateway under valgrind" "$dir/gateway.log" 90
    load "$WARM"
    tx0=$(metric phr_audit_transactions_total)
    callgrind_control -i on "$pid" >/dev/null
    load "$N"
    callgrind_control -i off "$pid" >/dev/null
    tx1=$(metric phr_audit_transactions_total)
    stop_pid "$pid"
    local total
    total=$(grep -h '^totals:' "$dir"/callgrind.out.* | awk '{s += $2} END {print s}')
    if [[ -n $KEEP ]]; then
        mkdir -p "$KEEP"
        cp "$dir"/callgrind.out.* "$KEEP/$(basename "$bin")-$variant.callgrind.out"
    fi
    local per_commit=-
    ((tx1 > tx0)) && per_commit=$(python3 -c "print(round($N / ($tx1 - $tx0), 1))")
    echo "$((total / N)) $per_commit"
}

TOKEN=""
printf '| binary | variant | instr/req | records/commit |\n|---|---|--:|--:|\n'
for bin in "$@"; do
    [[ -n $TOKEN ]] || TOKEN=$("$bin" dev-token --data-dir "$WORK/issuer" --subject bench-user --patient p1 \
        --scope "openid patient/*.rs" --count 1 | head -n1)
    for variant in $VARIANTS; do
        read -r ipr pc < <(count "$bin" "$variant")
        printf '| %s | %s | %s | %s |\n' "$bin" "$variant" "$ipr" "$pc"
    done
done
