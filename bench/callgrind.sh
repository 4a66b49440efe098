#!/usr/bin/env bash
# bench/callgrind.sh — instructions per proxied request, counted with callgrind.
#
# Timings on a shared 2-core machine move by ±20 % between runs; instruction counts
# do not (the same binary, config and requests give the same count whatever else
# the machine does). This script answers "how much does the gateway do per request
# above the floor of its stack, and did a change make that more?" by counting the
# user-space instructions per request of N requests after a warm-up, for the bare
# hyper + rustls proxy (gateway/examples/bare_proxy.rs, the floor) and for each
# gateway binary given, over the same route, config and responses as bench/run.sh
# (plain route, no token, no access records; /small = 100 B, /64k = 65,536 B;
# HTTP/1.1 and HTTP/2), and prints one table: instructions per request of each
# binary, then each gateway ÷ bare (issue 23 target 3: ≤ 1.10 on every row).
#
#   bench/callgrind.sh OLD_BINARY NEW_BINARY ...      # one row per binary
#   N=10000 CONNS=8 bench/callgrind.sh target/release/phr-gateway
#   PHR_GATEWAY_BIN=/path/to/phr-gateway bench/callgrind.sh   # no argument: that binary
#   BARE_BIN=/path/to/bare_proxy bench/callgrind.sh GW        # the floor to divide by
#   BARE_BIN=none bench/callgrind.sh GW                       # no floor, no ratios
#   CASES="h1-small h2-small" bench/callgrind.sh GW           # a subset of the columns
#   KEEP=/tmp/cg bench/callgrind.sh GW     # keep the callgrind.out files (for callgrind_annotate)
#
# Needs valgrind (callgrind_control), nginx (the backend) and h2load (nghttp2-client).
# Everything listens on 127.0.0.1 (ports 18090 backend, 18453 proxy under test, 19911
# admin); every run is bounded by `timeout`; the work directory is removed on exit.
set -euo pipefail
shopt -s inherit_errexit   # a failed load inside $(count ...) ends the script

LOG_TAG=callgrind
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-10000}            # measured requests per case, 100 B responses
N_64K=${N_64K:-2000}     # measured requests per case, 64 KiB responses (about 10× the instructions each)
WARM=${WARM:-2000}       # unmeasured requests first (pools, caches, lazy statics)
CONNS=${CONNS:-8}        # keep-alive connections
STREAMS=${STREAMS:-8}    # HTTP/2 concurrent streams per connection
CASES=${CASES:-"h1-small h1-64k h2-small h2-64k"}
BARE_BIN=${BARE_BIN:-$CARGO_TARGET/release/examples/bare_proxy}
KEEP=${KEEP:-}           # if set, each case's callgrind.out is copied there
BACKEND_PORT=18090
PROXY_PORT=18453
ADMIN_PORT=19911

if [[ $# -eq 0 && -n ${PHR_GATEWAY_BIN:-} ]]; then set -- "$PHR_GATEWAY_BIN"; fi
[[ $# -ge 1 ]] || { echo "usage: $0 GATEWAY_BINARY... (or PHR_GATEWAY_BIN=GATEWAY_BINARY $0)" >&2; exit 2; }
for cmd in valgrind callgrind_control nginx h2load openssl curl; do
    command -v "$cmd" >/dev/null || { echo "missing: $cmd (apt-get install valgrind nginx-light nghttp2-client)" >&2; exit 2; }
done
if [[ $BARE_BIN != none && ! -x $BARE_BIN ]]; then
    echo "bare proxy not found: $BARE_BIN (cargo build --release --example bare_proxy, or BARE_BIN=none)" >&2
    exit 2
fi
for c in $CASES; do
    [[ $c =~ ^h[12]-(small|64k)$ ]] || { echo "unknown case '$c' (h1-small h1-64k h2-small h2-64k)" >&2; exit 2; }
done

setup_workdir phr-callgrind
install_cleanup
make_cert
make_small_file
# /64k: exactly 65,536 incompressible bytes, as in bench/run.sh.
head -c 65536 /dev/urandom >"$WORK/docroot/64k"
chmod 0644 "$WORK/docroot/64k"
start_backend "$BACKEND_PORT"   # not pinned: instruction counts do not depend on it
# bench/run.sh's gateway config (plain route, no token, no access records).
write_proxy_gateway_config "$WORK/gateway.toml" callgrind "$ADMIN_PORT" "$PROXY_PORT" "$BACKEND_PORT" open

# h2load with an exact request count on PATH; --h1 for HTTP/1.1.
load() {
    local n=$1 path=$2; shift 2
    timeout 600 h2load "$@" -n "$n" -c "$CONNS" -t 1 "https://$HOST:$PROXY_PORT$path" >"$WORK/h2load.out" 2>&1 \
        || { cat "$WORK/h2load.out" >&2; return 1; }
    grep -q " $n succeeded, 0 failed, 0 errored" "$WORK/h2load.out" || { cat "$WORK/h2load.out" >&2; return 1; }
}

# Prints instructions per request for one proxy ("bare" or a gateway binary) and
# case (h1-small, h1-64k, h2-small, h2-64k). Both run one runtime thread.
count() {
    local bin=$1 case=$2 args=() path=/small n=$N pid ready tag
    [[ $case == h1-* ]] && args=(--h1) || args=(-m "$STREAMS")
    [[ $case == *-64k ]] && { path=/64k; n=$N_64K; }
    rm -f "$WORK"/callgrind.out*
    if [[ $bin == bare ]]; then
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out.%p" \
            "$BARE_BIN" "$HOST:$PROXY_PORT" "$HOST:$BACKEND_PORT" "$WORK/cert.pem" "$WORK/key.pem" \
            >"$WORK/proxy.log" 2>&1 &
        ready="https://$HOST:$PROXY_PORT/small"
    else
        PHR_GATEWAY_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$WORK/callgrind.out.%p" \
            "$bin" run --config "$WORK/gateway.toml" >"$WORK/proxy.log" 2>&1 &
        ready="http://$HOST:$ADMIN_PORT/readyz"
    fi
    pid=$!
    # Slow under valgrind: up to 60 s.
    wait_http_200 "$ready" "$pid" "$bin under valgrind" "$WORK/proxy.log" 60
    load "$WARM" "$path" "${args[@]}"
    callgrind_control -i on "$pid" >/dev/null 2>&1
    load "$n" "$path" "${args[@]}"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    if [[ -n $KEEP ]]; then
        mkdir -p "$KEEP"
        tag=$(basename "$bin")-$case
        for f in "$WORK"/callgrind.out.*; do cp "$f" "$KEEP/callgrind.out.$tag.${f##*.}"; done
    fi
    grep -h '^totals:' "$WORK"/callgrind.out.* | awk -v n="$n" '{s += $2} END {printf "%d\n", s / n}'
}

# Column headers and the rows, in CASES order.
declare -A LABEL=([h1-small]="HTTP/1.1 100 B" [h1-64k]="HTTP/1.1 64 KiB" [h2-small]="HTTP/2 100 B" [h2-64k]="HTTP/2 64 KiB")
declare -A COUNT=()
bins=()
[[ $BARE_BIN == none ]] || bins+=(bare)
bins+=("$@")
for bin in "${bins[@]}"; do
    for c in $CASES; do
        log "$bin, $c…"
        COUNT[$bin/$c]=$(count "$bin" "$c")
    done
done

printf '| instructions per request | '
for c in $CASES; do printf '%s | ' "${LABEL[$c]}"; done
printf '\n|---|'
for c in $CASES; do printf -- '--:|'; done
printf '\n'
for bin in "${bins[@]}"; do
    name=$bin
    [[ $bin == bare ]] && name="bare ($BARE_BIN)"
    printf '| %s | ' "$name"
    for c in $CASES; do printf '%s | ' "${COUNT[$bin/$c]}"; done
    printf '\n'
done
if [[ $BARE_BIN != none ]]; then
    for bin in "$@"; do
        printf '| %s ÷ bare | ' "$bin"
        for c in $CASES; do
            awk -v g="${COUNT[$bin/$c]}" -v b="${COUNT[bare/$c]}" 'BEGIN {printf "%.3f | ", g / b}'
        done
        printf '\n'
    done
fi
