#!/usr/bin/env bash
# perf/ab_throughput.sh: single-stream Put, Get and Echo throughput of two builds, measured in
# one run, alternating, so both see the same machine state (the VM's noise is large).
# Usage: perf/ab_throughput.sh OLD_BUILD_DIR NEW_BUILD_DIR [SIZE] [ROUNDS]
#   (defaults 1G and 3). Both servers run side by side with default flags on free 127.0.0.1
#   ports, each with a fresh data dir under $RS_PERF_DIR (default: the checkout); traffic is
#   NEW_BUILD_DIR/perf/rsload (`put NAME SIZE`, `get NAME` of what was just put, `echo SIZE`),
#   SHA-256 checked by the client. Each round runs put, get, echo on one server then the other;
#   the order of the two servers flips every round. Prints one line per transfer and a table
#   of the MB/s (10^6 B/s, as rsload reports them) with the median of each. Servers are
#   stopped by PID at exit.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
old=${1:?usage: perf/ab_throughput.sh OLD_BUILD_DIR NEW_BUILD_DIR [SIZE] [ROUNDS]}
new=${2:?usage: perf/ab_throughput.sh OLD_BUILD_DIR NEW_BUILD_DIR [SIZE] [ROUNDS]}
size=${3:-1G}
rounds=${4:-3}
rsload=$new/perf/rsload
work=$(mktemp -d "${RS_PERF_DIR:-$repo}/.perf-ab.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
declare -A port
for which in old new; do
    dir=$old
    [ "$which" = new ] && dir=$new
    port[$which]=$(free_port)
    mkdir -p "$work/$which"
    "$dir/ringstreamd" --listen "127.0.0.1:${port[$which]}" --data-dir "$work/$which/data" \
        2>"$work/$which/server.log" &
    pids+=($!)
    for _ in $(seq 50); do
        grep -q "listening on" "$work/$which/server.log" && break
        sleep 0.1
    done
done

mbps() { sed -n 's/.* MBps=\([0-9.]*\).*/\1/p'; }
declare -A res
for r in $(seq "$rounds"); do
    order="old new"
    [ $((r % 2)) = 0 ] && order="new old"
    for which in $order; do
        a=127.0.0.1:${port[$which]}
        p=$("$rsload" --addr "$a" --quiet put "ab-$r" "$size" | mbps)
        g=$("$rsload" --addr "$a" --quiet get "ab-$r" | mbps)
        e=$("$rsload" --addr "$a" --quiet echo "$size" | mbps)
        echo "round $r $which: put $p get $g echo $e MB/s"
        res[$which,put]+="$p "
        res[$which,get]+="$g "
        res[$which,echo]+="$e "
    done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
echo "| build | Put MB/s | Put median | Get MB/s | Get median | Echo MB/s | Echo median |"
echo "|---|---|--:|---|--:|---|--:|"
for which in old new; do
    dir=$old
    [ "$which" = new ] && dir=$new
    row="| $which ($dir) |"
    for op in put get echo; do
        row+=" $(echo "${res[$which,$op]}" | sed 's/ $//; s/ /, /g') | $(echo "${res[$which,$op]}" | median) |"
    done
    echo "$row"
done
