#!/usr/bin/env bash
# One-stream Gets with our client (`ringstream bench get`), TLS against h2c, interleaved, with
# the CPU seconds per GiB of the server and of the client.
#   perf/tls_client_get.sh [ROUNDS] [SIZE] [DURATION] SERVER_BIN:CLIENT_BIN...
#   (defaults: 3 rounds, 256M per call, 6 s per run; no pair: build/ringstreamd:build/ringstream)
# Each SERVER:CLIENT pair gets its own server with a TLS and an h2c:// listener (throwaway PKI
# from scripts/gen-test-certs.sh, free 127.0.0.1 ports, always stopped). A round runs, for every
# pair in turn, `bench get --conns 1 --streams 1` over h2c and over TLS (h2c first in odd
# rounds, TLS first in even ones), so a machine that gets busier or quieter during the run
# affects every column alike. Per run: bytes per second from the client's JSON, the server's
# CPU seconds (utime + stime from /proc/PID/stat) and the client's (GNU time) over the run, both
# divided by the GiB moved. Prints the medians as a markdown table (TLS / h2c: the median of
# the per-round throughput ratios), and every sample to stderr.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-3}
size=${2:-256M}
duration=${3:-6}
shift $(($# < 3 ? $# : 3))
pairs=("$@")
[ ${#pairs[@]} -gt 0 ] || pairs=("$repo/build/ringstreamd:$repo/build/ringstream")
# shellcheck source=perf/lib.sh
. "$repo/perf/lib.sh"
perf_init tlsget "${RS_PERF_DIR:-$repo}"

"$repo/scripts/gen-test-certs.sh" "$work/pki" >/dev/null
declare -a tport cport srv cli
for i in "${!pairs[@]}"; do
    srv[i]=${pairs[i]%%:*}
    cli[i]=${pairs[i]#*:}
    tport[i]=$(freeport)
    cport[i]=$(freeport)
    "${srv[i]}" --listen "127.0.0.1:${tport[i]}" --listen "h2c://127.0.0.1:${cport[i]}" \
        --tls-cert "$work/pki/server.pem" --tls-key "$work/pki/server.key" \
        --data-dir "$work/data$i" 2>"$work/server$i.log" &
    pids[i]=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$work/server$i.log" && break
        sleep 0.1
    done
done

# run I SCHEME: one bench; appends "bytes/s server-cpu/GiB client-cpu/GiB" to $work/I.SCHEME
run() {
    local i=$1 scheme=$2 c0 c1 target
    if [ "$scheme" = tls ]; then
        target=(--server "localhost:${tport[i]}" --ca "$work/pki/ca.pem")
    else
        target=(--server "127.0.0.1:${cport[i]}")
    fi
    c0=$(cpu "${pids[i]}")
    /usr/bin/time -f '%U %S' -o "$work/time" "${cli[i]}" "${target[@]}" bench get \
        --size "$size" --conns 1 --streams 1 --duration "$duration" --json >"$work/o" 2>&1 || {
        echo "bench $scheme on pair $i failed:" >&2
        cat "$work/o" >&2
        exit 1
    }
    c1=$(cpu "${pids[i]}")
    grep -q '"errors":0' "$work/o" || {
        echo "bench $scheme on pair $i had errors:" >&2
        cat "$work/o" >&2
        exit 1
    }
    python3 - "$work/o" "$work/time" "$c0" "$c1" >>"$work/$i.$scheme" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
u, s = (float(x) for x in open(sys.argv[2]).read().split()[-2:])
gib = o["bytes_per_s"] * o["seconds"] / 2**30
print(o["bytes_per_s"], (float(sys.argv[4]) - float(sys.argv[3])) / gib, (u + s) / gib)
EOF
    echo "sample: pair $i $scheme $(tail -1 "$work/$i.$scheme")" >&2
}

for r in $(seq "$rounds"); do
    for i in "${!pairs[@]}"; do
        if [ $((r % 2)) = 1 ]; then
            run "$i" h2c
            run "$i" tls
        else
            run "$i" tls
            run "$i" h2c
        fi
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "| pair (server : client) | h2c MB/s | TLS MB/s | TLS / h2c | server CPU s/GiB h2c | server CPU s/GiB TLS | client CPU s/GiB h2c | client CPU s/GiB TLS |"
echo "|---|---|---|---|---|---|---|---|"
for i in "${!pairs[@]}"; do
    col() { awk -v f="$2" '{ print $f }' "$work/$i.$1" | median; }
    ratio=$(paste "$work/$i.tls" "$work/$i.h2c" | awk '{ print $1 / $4 }' | median)
    printf '| %s | %.0f | %.0f | %.0f %% | %.2f | %.2f | %.2f | %.2f |\n' "${pairs[i]#"$repo/"}" \
        "$(echo "$(col h2c 1) / 1000000" | bc -l)" "$(echo "$(col tls 1) / 1000000" | bc -l)" \
        "$(echo "$ratio * 100" | bc -l)" "$(col h2c 2)" "$(col tls 2)" "$(col h2c 3)" "$(col tls 3)"
done
