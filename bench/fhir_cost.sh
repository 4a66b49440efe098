#!/usr/bin/env bash
# bench/fhir_cost.sh — what the FHIR response check costs, per gateway binary:
# instructions per request (callgrind) for a FHIR read and for a 100-entry
# searchset, and peak memory (VmHWM) around a ~20 MiB searchset Bundle. The
# documents, routes and token are those of bench/pipeline.sh (rows 4a, 5a, 6);
# instruction counts do not depend on what else the machine runs, so two
# binaries can be compared on a busy host (issue 23 target 2).
#
#   bench/fhir_cost.sh OLD_BINARY NEW_BINARY ...
#   N_READ=2000 N_SEARCH=500 MODE="callgrind memory" bench/fhir_cost.sh BIN
#
# Needs valgrind, nginx, h2load, curl, python3, openssl. Everything listens on
# 127.0.0.1 (ports 18190 backend, 18553 gateway, 19951 admin, apart from
# pipeline.sh's); every run is bounded by `timeout`; the work directory is
# removed on exit.
set -euo pipefail
shopt -s inherit_errexit

LOG_TAG=fhir-cost
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N_READ=${N_READ:-2000}       # measured FHIR reads
N_SEARCH=${N_SEARCH:-500}    # measured 100-entry searches
WARM=${WARM:-200}            # unmeasured requests first, per path
CONNS=${CONNS:-8}
BIG_MIB=${BIG_MIB:-20}
BIG_SEQUENTIAL=${BIG_SEQUENTIAL:-20}
BIG_CONCURRENT=${BIG_CONCURRENT:-4}
MODE=${MODE:-"callgrind memory"}
readonly BACKEND_PORT=18190 GATEWAY_PORT=18553 ADMIN_PORT=19951
readonly ISSUER=https://dev-issuer.phr-gateway.invalid AUDIENCE=phr-gateway-demo

[[ $# -ge 1 ]] || { echo "usage: $0 GATEWAY_BINARY..." >&2; exit 2; }
require_tools valgrind callgrind_control nginx h2load curl python3 openssl
check_ports_free $BACKEND_PORT $GATEWAY_PORT $ADMIN_PORT

setup_workdir phr-fhir-cost
install_cleanup
mkdir -p "$WORK/issuer"
make_cert
python3 "$BENCH_DIR/pipeline/make_fhir.py" "$WORK/docroot" "http://$HOST:$BACKEND_PORT" "$BIG_MIB" >"$WORK/docroot.meta"
find "$WORK/docroot" -type d -exec chmod 0755 {} +
log "documents: $(paste -sd' ' "$WORK/docroot.meta")"
start_backend "$BACKEND_PORT" "        types { }
        default_type application/fhir+json;
        location = /small { default_type text/plain; }"
TOKEN=$("$1" dev-token --data-dir "$WORK/issuer" --subject bench-user --patient p1 \
    --scope "openid patient/*.rs" --count 1 | head -n1)

# pipeline.sh's /fhir/ and /fhirbig/ routes, access records off.
write_config() {
    write_gateway_base "$1" fhir-cost "$ADMIN_PORT" "$GATEWAY_PORT" "$BACKEND_PORT"
    {
        printf '\n[auth_backoff]\nafter_failures = 1000000\n'
        printf '\n[[auth.issuers]]\nissuer = "%s"\njwks_file = "%s"\naudiences = ["%s"]\n' \
            "$ISSUER" "$WORK/issuer/dev-issuer-jwks.json" "$AUDIENCE"
        toml_route fhir /fhir/ required "fhir = true"
        toml_route fhirbig /fhirbig/ required "fhir = true"
        printf '\n[audit]\nenabled = false\n'
    } >>"$1"
}
write_config "$WORK/gateway.toml"

# h2load over HTTP/1.1 with an exact request count, all of them 2xx.
load() {
    local n=$1 path=$2
    timeout 600 h2load --h1 -n "$n" -c "$CONNS" -t 1 -H "Authorization: Bearer $TOKEN" \
        "https://$HOST:$GATEWAY_PORT$path" >"$WORK/h2load.out" 2>&1 || { cat "$WORK/h2load.out" >&2; return 1; }
    grep -q "status codes: $n 2xx" "$WORK/h2load.out" || { cat "$WORK/h2load.out" >&2; return 1; }
}

# Instructions per request of `path` for binary $1 (a fresh gateway under callgrind).
count() {
    local bin=$1 path=$2 n=$3 total pid
    rm -f "$WORK"/callgrind.out*
    PHR_GATEWAY_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$WORK/callgrind.out.%p" \
        "$bin" run --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
    pid=$!
    wait_http_200 "http://$HOST:$ADMIN_PORT/readyz" "$pid" "phr-gateway under valgrind" "$WORK/gateway.log" 90
    load "$WARM" "$path"
    callgrind_control -i on "$pid" >/dev/null
    load "$n" "$path"
    callgrind_control -i off "$pid" >/dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    total=$(grep -h '^totals:' "$WORK"/callgrind.out.* | awk '{s += $2} END {print s}')
    echo $((total / n))
}

hwm_mib() { awk '/^VmHWM:/{printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# VmHWM of a fresh gateway after one read, after BIG_SEQUENTIAL large-Bundle
# requests, and after BIG_CONCURRENT more at once.
memory() {
    local bin=$1 pid i idle seq conc pids=()
    spawn "$WORK/gateway-mem.log" env PHR_GATEWAY_WORKER_THREADS=1 "$bin" run --config "$WORK/gateway.toml"
    pid=$SPAWNED_PID
    wait_http_200 "http://$HOST:$ADMIN_PORT/readyz" "$pid" "phr-gateway" "$WORK/gateway-mem.log"
    curl -sk --max-time 10 -o /dev/null -H "Authorization: Bearer $TOKEN" "https://$HOST:$GATEWAY_PORT/fhir/Patient/p1"
    idle=$(hwm_mib "$pid")
    for ((i = 0; i < BIG_SEQUENTIAL; i++)); do
        got=$(timeout 120 curl -sk --http1.1 --max-time 100 -o "$WORK/big.out" -w '%{http_code}' \
            -H "Authorization: Bearer $TOKEN" "https://$HOST:$GATEWAY_PORT/fhirbig/Observation")
        [[ $got == 200 ]] || die "large Bundle: $got"
    done
    python3 -c "import json,sys; b=json.load(open(sys.argv[1])); assert len(b['entry'])>50000 and b['entry'][0]['fullUrl'].startswith('https://')" \
        "$WORK/big.out" || die "the large Bundle that came back is not the expected one"
    seq=$(hwm_mib "$pid")
    for ((i = 0; i < BIG_CONCURRENT; i++)); do
        timeout 120 curl -sk --http1.1 --max-time 100 -o /dev/null -H "Authorization: Bearer $TOKEN" \
            "https://$HOST:$GATEWAY_PORT/fhirbig/Observation" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    conc=$(hwm_mib "$pid")
    stop_pid "$pid"
    echo "$idle $seq $conc"
}

big=$(sed -n 's/^big_bytes=//p' "$WORK/docroot.meta")
printf '| binary | read instr/req | search instr/req | search/read | VmHWM idle MiB | after %s sequential | after %s concurrent | sequential HWM / body |\n' \
    "$BIG_SEQUENTIAL" "$BIG_CONCURRENT"
printf '|---|--:|--:|--:|--:|--:|--:|--:|\n'
for bin in "$@"; do
    read_i=-; search_i=-; ratio=-; mem=(- - -); per=-
    if [[ " $MODE " == *" callgrind "* ]]; then
        read_i=$(count "$bin" /fhir/Patient/p1 "$N_READ")
        search_i=$(count "$bin" /fhir/Observation "$N_SEARCH")
        ratio=$(python3 -c "print(f'{$search_i / $read_i:.2f}')")
    fi
    if [[ " $MODE " == *" memory "* ]]; then
        read -r -a mem < <(memory "$bin")
        per=$(python3 -c "print(f'{${mem[1]} * 1048576 / $big:.2f}')")
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$bin" "$read_i" "$search_i" "$ratio" "${mem[@]}" "$per"
done
