#!/bin/bash
# perf/unary_ab.sh: two ringstreamd builds side by side under the compare harness's unary load
# (UnaryCall 32 B, h2load -c CONNS -m 10), interleaved, order flipped every round. Per run:
# req/s (h2load), server CPU per call (utime + stime of all threads, /proc/PID/stat, over the
# h2load run) and peak RSS (VmHWM).
# Usage: perf/unary_ab.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS] [SECONDS] [CONNS]
# MAX_CONNS=N in the environment sets the servers' --max-conns (default 4096; perf/compare
# passes its fd limit's share, 9900 with ulimit -n 20000 on 2 CPUs).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} secs=${4:-5} conns=${5:-100}
body=${UNARY_BODY:-/work/cache/compare/bodies-67108864/unary.bin}
port=$((20000 + RANDOM % 10000)) # below the ephemeral range (32768-60999): no clash with clients
data=$(mktemp -d)
spid=
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -rf "$data"' EXIT
hz=$(getconf CLK_TCK)
run() {
    local b=$1 out t0 t1 reqs
    "$b/ringstreamd" --listen "127.0.0.1:$port" --data-dir "$data" --max-conns "${MAX_CONNS:-4096}" 2>/dev/null &
    spid=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    idle=$(awk '/^VmRSS:/ { print $2 }' "/proc/$spid/status")
    t0=$(sed 's/.*) //' "/proc/$spid/stat" | awk '{ print $12 + $13 }')
    out=$(timeout $((secs + 30)) h2load -D "$secs" -c "$conns" -m 10 -d "$body" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$port/grpc.testing.TestService/UnaryCall")
    t1=$(sed 's/.*) //' "/proc/$spid/stat" | awk '{ print $12 + $13 }')
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$spid/status")
    kill "$spid"
    wait "$spid" 2>/dev/null || true
    spid=
    reqs=$(echo "$out" | awk '/^requests:/ { print $8 }')
    rps=$(echo "$out" | awk '/^finished in/ { print $4 }')
    echo "$b rps=$rps cpu_us_per_call=$(awk -v t=$((t1 - t0)) -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }') idle_rss_kib=$idle hwm_kib=$hwm succeeded=$reqs"
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run "$old"; run "$new"; else run "$new"; run "$old"; fi
done
