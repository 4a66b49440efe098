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
#   PHR_GATEWAY_BIN=/path/to/phr-gateway bench/callgrind.sh   # no argument: that binary
#
# Needs valgrind (callgrind_control), nginx (the backend) and h2load (nghttp2-client).
# Everything listens on 127.0.0.1 (ports 18090 backend, 18453 gateway, 19911 admin);
# every run is bounded by `timeout`; the work directory is removed on exit.
set -euo pipefail
shopt -s inherit_errexit   # a failed load inside $(count ...) ends the script

LOG_TAG=callgrind
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-10000}            # measured requests per protocol
WARM=${WARM:-2000}       # unmeasured requests first (pools, caches, lazy statics)
CONNS=${CONNS:-8}        # keep-alive connections
STREAMS=${STREAMS:-8}    # HTTP/2 concurrent streams per connection
BACKEND_PORT=18090
GATEWAY_PORT=18453
ADMIN_PORT=19911

if [[ $# -eq 0 && -n ${PHR_GATEWAY_BIN:-} ]]; then set -- "$PHR_GATEWAY_BIN"; fi
[[ $# -ge 1 ]] || { echo "usage: $0 GATEWAY_BINARY... (or PHR_GATEWAY_BIN=GATEWAY_BINARY $0)" >&2; exit 2; }
for cmd in valgrind callgrind_control nginx h2load openssl curl; do
    command -v "$cmd" >/dev/null || { echo "missing: $cmd (apt-get install valgrind nginx-light nghttp2-client)" >&2; exit 2; }
done

setup_workdir phr-callgrind
install_cleanup
make_cert
make_small_file
start_backend "$BACKEND_PORT"   # not pinned: instruction counts do not depend on it
# bench/run.sh's gateway config (plain route, no token, no access records).
write_proxy_gateway_config "$WORK/gateway.toml" callgrind "$ADMIN_PORT" "$GATEWAY_PORT" "$BACKEND_PORT" open

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
    # Slow under valgrind: up to 60 s.
    wait_http_200 "http://$HOST:$ADMIN_PORT/readyz" "$pid" "phr-gateway under valgrind" "$WORK/gateway.log" 60
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
