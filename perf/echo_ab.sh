#!/usr/bin/env bash
# perf/echo_ab.sh ROUNDS BODY BIN_A [BIN_B ...]: interleaved A/B of Bulk/Echo through h2load.
# For every round, every binary: a fresh ringstreamd on a free 127.0.0.1 port, the request body
# read once into the page cache, one `h2load -n 1 -c 1 -m 1 -d BODY` Echo call (bounded by
# 120 s), then the server stopped. Prints one line per call: GB/s per direction (body bytes /
# h2load's wall time), the server's CPU time (utime + stime, /proc/PID/stat) and h2load's
# (/usr/bin/time) in ms per GiB, the machine's idle CPU % over the call (/proc/stat: the other
# load on a shared machine shows here), and a median per binary at the end.
# BODY: a file of perf/compare's request bodies, e.g.
# ${RS_CACHE_DIR:-build}/compare/bodies-1073741824/echo-64k.bin (made by perf/compare/run).
# Extra server flags: SRV_ARGS="--stream-buffer 4194304". Compare binaries only side by side:
# on a shared machine the absolute figures move, the ratios much less.
set -euo pipefail
rounds=$1
body=$2
shift 2
bins=("$@")
size=$(stat -c %s "$body")
hdr=(-H 'content-type: application/grpc' -H 'te: trailers')
clk=$(getconf CLK_TCK)
# shellcheck source=perf/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
perf_init echo_ab
for r in $(seq "$rounds"); do
    for i in "${!bins[@]}"; do
        b=${bins[i]}
        port=$(freeport)
        mkdir -p "$work/data"
        # shellcheck disable=SC2086
        "$b" --listen "127.0.0.1:$port" --data-dir "$work/data" --max-conns 1024 ${SRV_ARGS:-} \
            2>"$work/srv.log" &
        spid=$!
        pids=("$spid")
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        cat "$body" >/dev/null
        c0=$(sed 's/.*) //' "/proc/$spid/stat" | awk '{ print $12 + $13 }')
        i0=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
        t0=$(date +%s.%N)
        /usr/bin/time -f '%U %S' -o "$work/time" timeout 120 h2load -n 1 -c 1 -m 1 -d "$body" \
            "${hdr[@]}" "http://127.0.0.1:$port/ringstream.v1.Bulk/Echo" >"$work/out" 2>&1 || true
        t1=$(date +%s.%N)
        i1=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
        c1=$(sed 's/.*) //' "/proc/$spid/stat" | awk '{ print $12 + $13 }')
        kill "$spid"
        wait "$spid" 2>/dev/null || true
        pids=()
        rm -rf "$work/data"
        ok=$(grep -o '[0-9]* succeeded' "$work/out" | cut -d' ' -f1)
        secs=$(grep -oE 'finished in [0-9.]+(ms|s)' "$work/out" | awk '{ v = $3; if (v ~ /ms$/) { sub(/ms/, "", v); v /= 1000 } else sub(/s/, "", v); print v }')
        awk -v tag="$i:$(basename "$(dirname "$b")")/$(basename "$b")" -v r="$r" -v sz="$size" \
            -v s="$secs" -v c0="$c0" -v c1="$c1" -v clk="$clk" -v ok="${ok:-0}" \
            -v t="$(cat "$work/time")" -v w="$(echo "$t1 - $t0" | bc)" -v idle="$i0 $i1" 'BEGIN {
            split(idle, q, " "); ip = (q[4] > q[2]) ? 100 * (q[3] - q[1]) / (q[4] - q[2]) : 0
            split(t, u, " "); gib = sz / 1073741824
            printf "round %d %-28s %6.3f GB/s  server %5.0f ms/GiB  h2load %5.0f ms/GiB  wall %.2f s  idle %2.0f %%  ok %s\n",
                r, tag, sz / s / 1e9, (c1 - c0) / clk * 1000 / gib, (u[1] + u[2]) * 1000 / gib, w, ip, ok }'
    done
done | tee "$work/all"
echo "medians:"
awk '{ k = $3; n[k]++; g[k, n[k]] = $4; s[k, n[k]] = $7; h[k, n[k]] = $10 }
    function med(a, k, m,   i, j, t, v) { for (i = 1; i <= m; i++) v[i] = a[k, i]
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
    END { for (k in n) printf "  %-28s %6.3f GB/s  server %5.0f ms/GiB  h2load %5.0f ms/GiB  (%d runs)\n",
        k, med(g, k, n[k]), med(s, k, n[k]), med(h, k, n[k]), n[k] }' "$work/all" | sort
