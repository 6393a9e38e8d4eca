#!/bin/bash
# perf/echo-stall/loop.sh N BODY TAG [server args...]: N fresh-server Bulk/Echo runs of BODY
# (a file of perf/compare's bodies) through h2load, each bounded by 60 s; prints wall and
# server CPU per run and, while a run is past 4 s, a 0.5 s timeline of the connection
# (ss -tinmo: queues, windows, timers) and the thread states of both ends into OUT/tl-TAG-i.txt.
# Environment: BUILD (default build), BODIES (default $RS_CACHE_DIR/compare/bodies-1073741824),
# OUT (default /tmp/echo-stall), PRE_PUT=1 (a 1 GiB Put first), SRVPFX/CLIPFX (e.g. taskset -c 0).
N=$1; BODY=$2; TAG=$3; shift 3
BUILD=${BUILD:-build}; BODIES=${BODIES:-${RS_CACHE_DIR:-build}/compare/bodies-1073741824}
OUT=${OUT:-/tmp/echo-stall}; mkdir -p "$OUT"
hdr=(-H 'content-type: application/grpc' -H 'te: trailers')
for i in $(seq 1 "$N"); do
    port=$((21000 + RANDOM % 20000)); data=$(mktemp -d "$OUT/data.XXXX")
    $SRVPFX "$BUILD/ringstreamd" --listen "127.0.0.1:$port" --data-dir "$data" --max-conns 4096 "$@" \
        >"$OUT/srv-$TAG-$i.log" 2>&1 &
    sp=$!
    sleep 0.3
    [ -n "$PRE_PUT" ] && timeout 60 h2load -n 1 -c 1 -m 1 -d "$BODIES/put-64k.bin" "${hdr[@]}" \
        "http://127.0.0.1:$port/ringstream.v1.Bulk/Put" >/dev/null 2>&1
    c0=$(awk '{ print $14 + $15 }' "/proc/$sp/stat"); t0=$(date +%s.%N)
    $CLIPFX timeout 60 h2load -n 1 -c 1 -m 1 -d "$BODIES/$BODY" "${hdr[@]}" \
        "http://127.0.0.1:$port/ringstream.v1.Bulk/Echo" >"$OUT/cli-$TAG-$i.log" 2>&1 &
    cp=$!
    for k in $(seq 1 650); do
        kill -0 "$cp" 2>/dev/null || break
        sleep 0.1
        if [ "$k" -ge 40 ] && [ $((k % 5)) = 0 ]; then
            hp=$(pgrep -x h2load -P "$cp")
            { echo "== $(date -u +%T.%N)"
              ss -tinmo "( sport = :$port or dport = :$port )" | grep -A1 ESTAB
              for t in /proc/$hp/task/* /proc/$sp/task/*; do
                  echo "$t $(awk '{ print $3, $14 + $15 }' "$t/stat") $(head -1 "$t/stack")"
              done; } >>"$OUT/tl-$TAG-$i.txt" 2>&1
        fi
    done
    wait "$cp"; rc=$?
    t1=$(date +%s.%N); c1=$(awk '{ print $14 + $15 }' "/proc/$sp/stat")
    kill "$sp"; wait "$sp" 2>/dev/null
    rm -rf "$data"
    echo "$TAG $i wall=$(echo "$t1 - $t0" | bc) cpu=$(echo "scale=2; ($c1 - $c0) / 100" | bc) rc=$rc" \
        "$(grep -o '[0-9]* succeeded' "$OUT/cli-$TAG-$i.log")"
done
