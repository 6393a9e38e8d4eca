#!/usr/bin/env bash
# One-stream bulk transfers over TLS and h2c, interleaved, with the server's CPU per GiB.
#   perf/tls_bulk.sh [ROUNDS] [SIZE_BYTES] [BINARY...]   (defaults: 5, 1073741824, build/ringstreamd)
# Each binary runs as one server with a TLS listener and an h2c:// listener (throwaway PKI from
# scripts/gen-test-certs.sh, free 127.0.0.1 ports, always stopped). First the object to Get is
# put and read once over each transport (Put writes with O_DIRECT, so the first Get after it
# reads from the disk: every measured Get must find it in the page cache); then ROUNDS rounds;
# a round does, for every binary in turn, Get over h2c and over TLS (h2c first in odd rounds,
# TLS first in even ones), then Put of another object over h2c and over TLS (h2load, one
# connection, one stream), so a machine that gets busier or quieter during the run affects
# every column alike. Per transfer: wall seconds from h2load and the server's CPU seconds
# (utime + stime from /proc/PID/stat) over the transfer. Prints the medians as a markdown
# table (TLS / h2c: the median of the per-round ratios), and every sample to stderr.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-5}
size=${2:-1073741824}
shift $(($# < 2 ? $# : 2))
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$repo/build/ringstreamd")
# shellcheck source=perf/lib.sh
. "$repo/perf/lib.sh"
perf_init tls "${RS_PERF_DIR:-$repo}"

"$repo/scripts/gen-test-certs.sh" "$work/pki" >/dev/null
declare -a tport cport
for i in "${!bins[@]}"; do
    tport[i]=$(freeport)
    cport[i]=$(freeport)
    # shellcheck disable=SC2086 # RS_SERVER_ARGS: extra flags, split on spaces
    "${bins[i]}" --listen "127.0.0.1:${tport[i]}" --listen "h2c://127.0.0.1:${cport[i]}" \
        --tls-cert "$work/pki/server.pem" --tls-key "$work/pki/server.key" \
        --data-dir "$work/data$i" ${RS_SERVER_ARGS:-} 2>"$work/server$i.log" &
    pids[i]=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$work/server$i.log" && break
        sleep 0.1
    done
done
grpc=(-H 'content-type: application/grpc' -H 'te: trailers')
"$repo/perf/gen_msgs.py" put perf-object "$size" >"$work/seed.bin"
"$repo/perf/gen_msgs.py" put perf-put "$size" >"$work/put.bin"
"$repo/perf/gen_msgs.py" get perf-object >"$work/get.bin"

secs() {
    awk '/^finished in/ { t = $3; gsub(",", "", t);
         if (t ~ /ms$/) { sub("ms", "", t); t /= 1000 } else sub("s", "", t); print t }'
}
# run I SCHEME METHOD BODY: one transfer; appends "seconds server-cpu client-cpu" to
# $work/I.SCHEME.METHOD
run() {
    local i=$1 scheme=$2 method=$3 body=$4 port c0 s t
    if [ "$scheme" = https ]; then port=${tport[i]}; else port=${cport[i]}; fi
    c0=$(cpu "${pids[i]}")
    t=$({
        TIMEFORMAT='%U %S'
        time h2load -n 1 -c 1 -m 1 -d "$body" "${grpc[@]}" \
            "$scheme://127.0.0.1:$port/ringstream.v1.Bulk/$method" >"$work/o" 2>&1
    } 2>&1)
    grep -q "succeeded, 0 failed, 0 errored" "$work/o" || {
        echo "h2load $scheme $method on ${bins[i]} failed:" >&2
        cat "$work/o" >&2
        exit 1
    }
    s=$(secs <"$work/o")
    echo "$s $(awk -v a="$c0" -v b="$(cpu "${pids[i]}")" 'BEGIN { print b - a }') $(echo "$t" |
        awk '{ print $1 + $2 }')" >>"$work/$i.$scheme.$method"
    echo "sample: bin $i $scheme $method $(tail -1 "$work/$i.$scheme.$method")" >&2
}
for i in "${!bins[@]}"; do # not measured: the object, into the page cache
    run "$i" http Put "$work/seed.bin"
    run "$i" http Get "$work/get.bin"
    run "$i" https Get "$work/get.bin"
    rm -f "$work/$i".*
done
for r in $(seq "$rounds"); do
    for i in "${!bins[@]}"; do
        if [ $((r % 2)) = 1 ]; then
            run "$i" http Get "$work/get.bin"
            run "$i" https Get "$work/get.bin"
        else
            run "$i" https Get "$work/get.bin"
            run "$i" http Get "$work/get.bin"
        fi
        run "$i" http Put "$work/put.bin"
        run "$i" https Put "$work/put.bin"
    done
done

# median COLUMN FILE
median() { sort -g -k"$1" "$2" | awk -v k="$1" '{ v[NR] = $k } END {
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
gib=$(awk -v b="$size" 'BEGIN { print b / 1073741824 }')
echo "| binary | transfer | h2c MB/s | TLS MB/s | TLS / h2c | server CPU s/GiB h2c | TLS | h2load CPU s/GiB h2c | TLS |"
echo "|---|---|---|---|---|---|---|---|---|"
for i in "${!bins[@]}"; do
    for m in Get Put; do
        # per-round TLS / h2c throughput = h2c seconds / TLS seconds
        paste -d' ' "$work/$i.http.$m" "$work/$i.https.$m" |
            awk '{ print $1 / $4 }' >"$work/$i.ratio.$m"
        ratio=$(median 1 "$work/$i.ratio.$m")
        hs=$(median 1 "$work/$i.http.$m")
        ts=$(median 1 "$work/$i.https.$m")
        hc=$(median 2 "$work/$i.http.$m")
        tc=$(median 2 "$work/$i.https.$m")
        hk=$(median 3 "$work/$i.http.$m")
        tk=$(median 3 "$work/$i.https.$m")
        awk -v n="${bins[i]}" -v m="$m" -v b="$size" -v g="$gib" -v hs="$hs" -v ts="$ts" \
            -v hc="$hc" -v tc="$tc" -v hk="$hk" -v tk="$tk" -v r="$ratio" 'BEGIN {
            printf "| %s | %s | %.0f | %.0f | %.0f %% | %.2f | %.2f | %.2f | %.2f |\n",
            n, m, b / hs / 1e6, b / ts / 1e6, r * 100, hc / g, tc / g, hk / g, tk / g }'
    done
done
echo
echo "medians of $rounds interleaved rounds, $size bytes per transfer; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) vCPUs"
