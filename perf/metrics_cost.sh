#!/usr/bin/env bash
# What the per-worker metrics cost on the hot path: h2load unary EmptyCall req/s against two
# ringstreamd servers of the same build, one counting every series and serving
# --metrics-listen (and a scraper polling it every 100 ms), one with --metrics off (the
# per-method series - started, messages, the handling-time histogram - are then not counted;
# handled_total, connections and bytes always are: STATUS= and the watchdog read them).
# Rounds alternate between the two so that machine noise hits both alike. With 2+ CPUs the
# servers run on CPU 0 and h2load on CPU 1 (taskset), so they do not trade cores.
#   perf/metrics_cost.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build}
rounds=${2:-5}
n=${RS_H2LOAD_N:-200000}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
on_port=$(port); off_port=$(port); m_port=$(port)
pin_srv=() pin_load=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin_srv=(taskset -c 0) pin_load=(taskset -c 1)
fi
"${pin_srv[@]}" "$build/ringstreamd" --listen 127.0.0.1:$on_port --data-dir "$tmp/on" --workers 1 \
    --metrics-listen 127.0.0.1:$m_port 2>"$tmp/on.log" &
pids+=($!)
"${pin_srv[@]}" "$build/ringstreamd" --listen 127.0.0.1:$off_port --data-dir "$tmp/off" --workers 1 \
    --metrics off 2>"$tmp/off.log" &
pids+=($!)
for p in $on_port $off_port $m_port; do
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break
        sleep 0.05
    done
done
# a Prometheus-like scraper, far more eager than one (15 s is usual)
(while :; do curl -s -o /dev/null http://127.0.0.1:$m_port/metrics || true; sleep 0.1; done) &
pids+=($!)
printf '\0\0\0\0\0' >"$tmp/empty.grpc" # an empty grpc.testing.Empty, 5-byte prefix
run() {
    "${pin_load[@]}" h2load -n "$n" -c 4 -m 10 -t 1 -d "$tmp/empty.grpc" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://127.0.0.1:$1/grpc.testing.TestService/EmptyCall" |
        awk '/^finished in/ { gsub(",", "", $4); print $4 }'
}
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(uname -r), $(date -u '+%F %H:%M UTC')"
echo "# h2load -n $n -c 4 -m 10 -t 1, EmptyCall, 1 worker each; req/s per round; pinned: ${pin_srv[*]:-no}"
echo -e "round\tmetrics_on\tmetrics_off"
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then a=$(run $on_port); b=$(run $off_port); else
        b=$(run $off_port); a=$(run $on_port); fi
    echo -e "$r\t$a\t$b"
done
curl -s http://127.0.0.1:$m_port/metrics | grep -c '^grpc_server_handling_seconds_bucket' |
    sed 's/^/# histogram bucket series exposed by the on server: /'
