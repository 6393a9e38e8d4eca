#!/usr/bin/env bash
# One-stream Get of 1 GiB, old binary against new, interleaved (issue 17): the h2load command of
# perf/compare/run (get-64k, get-1m), CPU of the server from /proc/PID/stat (utime + stime, all
# threads) around each h2load run, GB/s from h2load's time. Both servers stay up, each with
# its own copy of the object (warmed before every run); each round runs every scenario on both
# binaries, alternating which goes first. Prints every run, then medians and the median of the
# per-round new/old ratios (pairs run seconds apart, so noise from a busy machine hits both).
#   perf/get_ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SCENARIOS]   (defaults: 8, get-64k,get-1m)
# RS_PIN=1: the servers on CPU 0, h2load on CPU 1 (taskset), as perf/get_crc.sh does.
# Needs the request bodies perf/compare/run writes: ${RS_CACHE_DIR:-build}/compare/bodies-1073741824.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bins=("$1" "$2")
rounds=${3:-8}
scenarios=${4:-get-64k,get-1m}
bodies=${RS_CACHE_DIR:-$repo/build}/compare/bodies-1073741824
[ -f "$bodies/seed.bin" ] || { echo "get_ab.sh: no $bodies: run perf/compare/run once" >&2; exit 1; }
# shellcheck source=perf/lib.sh
. "$repo/perf/lib.sh"
perf_init get_ab
hdr=(-H 'content-type: application/grpc' -H 'te: trailers')
ports=()
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
hz=$(getconf CLK_TCK)
pin_srv=() pin_load=()
if [ "${RS_PIN:-0}" = 1 ]; then pin_srv=(taskset -c 0) pin_load=(taskset -c 1); fi
for i in 0 1; do
    p=$(freeport)
    mkdir -p "$work/d$i"
    "${pin_srv[@]}" "${bins[$i]}" --listen "127.0.0.1:$p" --data-dir "$work/d$i" 2>"$work/log$i" &
    pids+=($!)
    ports+=("$p")
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
    timeout 300 h2load -n 1 -c 1 -m 1 -d "$bodies/seed.bin" "${hdr[@]}" \
        "http://127.0.0.1:$p/ringstream.v1.Bulk/Put" >"$work/seed$i" 2>&1
done
echo "round scenario binary seconds GB/s cpu_ms_per_GiB" | tee "$work/runs"
for r in $(seq "$rounds"); do
    for sc in ${scenarios//,/ }; do
        order="0 1"
        [ $((r % 2)) = 0 ] && order="1 0"
        for i in $order; do
            find "$work/d$i" -type f -size +1M -exec cat {} + >/dev/null
            cat "$bodies/$sc.bin" >/dev/null
            c0=$(ticks "${pids[$i]}")
            timeout 120 "${pin_load[@]}" h2load -n 1 -c 1 -m 1 -d "$bodies/$sc.bin" "${hdr[@]}" \
                "http://127.0.0.1:${ports[$i]}/ringstream.v1.Bulk/Get" >"$work/out" 2>&1 || true
            c1=$(ticks "${pids[$i]}")
            grep -q '^requests: 1 total, 1 started, 1 done, 1 succeeded' "$work/out" ||
                { echo "get_ab.sh: $sc on ${bins[$i]} failed:" >&2; tail -5 "$work/out" >&2; exit 1; }
            awk -v r="$r" -v sc="$sc" -v b="$([ "$i" = 0 ] && echo old || echo new)" \
                -v c=$((c1 - c0)) -v hz="$hz" '/^finished in/ {
                    t = $3; gsub(",", "", t)
                    if (t ~ /ms$/) { sub("ms", "", t); t /= 1000 } else sub("s", "", t)
                    printf "%d %s %s %.3f %.2f %.0f\n", r, sc, b, t, 1.073741824 / t, c * 1000 / hz }' \
                "$work/out" | tee -a "$work/runs"
        done
    done
done
python3 - "$work/runs" <<'PY'
import collections, statistics as st, sys
runs = [l.split() for l in open(sys.argv[1]).readlines()[1:]]
by = collections.defaultdict(list)
pair = collections.defaultdict(dict)
for r, sc, b, _, gbps, cpu in runs:
    by[(sc, b)].append((float(gbps), float(cpu)))
    pair[(sc, r)][b] = (float(gbps), float(cpu))
for (sc, b), v in sorted(by.items()):
    g, c = [x[0] for x in v], [x[1] for x in v]
    print("%-8s %s: %.2f GB/s (%.2f-%.2f), %.0f ms CPU/GiB (%.0f-%.0f), %d runs"
          % (sc, b, st.median(g), min(g), max(g), st.median(c), min(c), max(c), len(v)))
for sc in sorted({k[0] for k in pair}):
    rg = [p["new"][0] / p["old"][0] for k, p in pair.items() if k[0] == sc and len(p) == 2]
    rc = [p["new"][1] / p["old"][1] for k, p in pair.items() if k[0] == sc and len(p) == 2]
    print("%-8s new/old per round, median: GB/s x%.2f, CPU/GiB x%.2f (CPU ratios: %s)"
          % (sc, st.median(rg), st.median(rc), " ".join("%.2f" % x for x in sorted(rc))))
PY
