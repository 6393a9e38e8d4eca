#!/usr/bin/env bash
# What Chunk.crc32c costs a Get: one-stream Get throughput (rsload) and the server's CPU time
# against two ringstreamd of the same build, "crc" (as shipped: the CRC32C of every chunk,
# computed as each read completes) and "nocrc" (started with RS_BENCH_NO_CRC=1, a
# benchmark-only switch: crc32c is sent as 0, so the bytes on the wire are the same).
# Each server holds its own copy of one object (read once before the rounds, so warm); rounds
# alternate which server goes first so that machine noise hits both alike; medians at the end.
# With 2+ CPUs the servers run on CPU 0 and rsload on CPU 1 (taskset). rsload checks SHA-256
# (--no-pattern, --no-crc: its CRC check would fail against "nocrc" and is the client's cost).
#   perf/get_crc.sh [BUILD_DIR] [ROUNDS] [SIZE]     (defaults: build, 7, 1G)
# RS_PROFILE=1 then profiles the "crc" server (perf record -e cpu-clock) over 3 more Gets and
# prints its top symbols: the CRC's share of the server's CPU, without the on/off noise.
# Server CPU = the server's task-clock across the Get (perf stat -p, all its threads), or,
# without a usable perf, utime + stime from /proc/PID/stat (10 ms ticks).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build}
rounds=${2:-7}
size=${3:-1G}
rsload=$build/perf/rsload
tmp=$(mktemp -d "${RS_PERF_DIR:-$repo}/.perf-getcrc.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pin_srv=() pin_load=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin_srv=(taskset -c 0) pin_load=(taskset -c 1)
fi
crc_port=$(port)
nocrc_port=$(port)
"${pin_srv[@]}" "$build/ringstreamd" --listen 127.0.0.1:"$crc_port" --data-dir "$tmp/crc" \
    --workers 1 2>"$tmp/crc.log" &
crc_pid=$!
pids+=("$crc_pid")
RS_BENCH_NO_CRC=1 "${pin_srv[@]}" "$build/ringstreamd" --listen 127.0.0.1:"$nocrc_port" \
    --data-dir "$tmp/nocrc" --workers 1 2>"$tmp/nocrc.log" &
nocrc_pid=$!
pids+=("$nocrc_pid")
for p in $crc_port $nocrc_port; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
        sleep 0.05
    done
done
grep -q RS_BENCH_NO_CRC "$tmp/nocrc.log" ||
    { echo "get_crc.sh: nocrc server ignored RS_BENCH_NO_CRC" >&2; exit 1; }
for p in $crc_port $nocrc_port; do
    "$rsload" --addr 127.0.0.1:"$p" --quiet put perf/get-crc "$size" >/dev/null
done

ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; } # utime stime, in clock ticks
hz=$(getconf CLK_TCK)
use_perf=no
if command -v perf >/dev/null && perf stat -e task-clock -x, -o /dev/null -- true 2>/dev/null; then
    use_perf=yes
fi
# one Get: prints "MB/s server-cpu-seconds server-user-seconds" (user: from the ticks)
run() {
    local port=$1 pid=$2 t0 t1 out ppid=
    if [ $use_perf = yes ]; then
        perf stat -e task-clock -x, -p "$pid" -o "$tmp/perf.out" &
        ppid=$!
        sleep 0.3 # attached before the Get starts
    fi
    t0=$(ticks "$pid")
    out=$("${pin_load[@]}" "$rsload" --addr 127.0.0.1:"$port" --quiet --no-crc --no-pattern \
        get perf/get-crc | grep '^RESULT mode=get')
    t1=$(ticks "$pid")
    if [ -n "$ppid" ]; then
        kill -INT "$ppid"
        wait "$ppid" || true
    fi
    case $out in *" ok=1 "*) ;; *) echo "get_crc.sh: Get failed: $out" >&2; exit 1 ;; esac
    printf '%s ' "$(sed 's/.* MBps=\([0-9.]*\).*/\1/' <<<"$out")"
    if [ -n "$ppid" ]; then
        awk -F, '$3 ~ /task-clock/ { printf "%.3f ", $1 / 1000 }' "$tmp/perf.out"
    else
        awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { split(a, x, " "); split(b, y, " ");
            printf "%.3f ", (y[1] + y[2] - x[1] - x[2]) / hz }'
    fi
    awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.2f\n", (y[1] - x[1]) / hz }'
}
# a first Get of each, not counted: Put wrote with O_DIRECT, so this one reads from the device
run $crc_port $crc_pid >/dev/null
run $nocrc_port $nocrc_pid >/dev/null
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(uname -r), $(date -u '+%F %H:%M UTC')"
echo "# one-stream Get of $size, rsload --no-crc --no-pattern, 1 worker each;" \
    "pinned: ${pin_srv[*]:-no}; CPU from perf stat: $use_perf"
echo -e "round\tcrc_MBps\tcrc_cpu_s\tcrc_user_s\tnocrc_MBps\tnocrc_cpu_s\tnocrc_user_s"
rows=()
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then a=$(run $crc_port $crc_pid); b=$(run $nocrc_port $nocrc_pid); else
        b=$(run $nocrc_port $nocrc_pid); a=$(run $crc_port $crc_pid); fi
    echo -e "$r\t${a// /\\t}\t${b// /\\t}"
    rows+=("$a $b")
done
printf '%s\n' "${rows[@]}" | /usr/bin/python3 -c '
import statistics, sys
cols = list(zip(*(map(float, l.split()) for l in sys.stdin if l.strip())))
m = [statistics.median(c) for c in cols]
print("median\t%.0f\t%.3f\t%.2f\t%.0f\t%.3f\t%.2f" % tuple(m))
print("# crc/nocrc: throughput %+.1f %%, server CPU %+.1f %% (user time %+.2f s)"
      % (100 * (m[0] / m[3] - 1), 100 * (m[1] / m[4] - 1), m[2] - m[5]))'
if [ "${RS_PROFILE:-0}" = 1 ] && [ $use_perf = yes ]; then
    perf record -q -e cpu-clock -F 4999 -p "$crc_pid" -o "$tmp/perf.data" 2>/dev/null &
    rpid=$!
    sleep 0.3
    for _ in 1 2 3; do
        "${pin_load[@]}" "$rsload" --addr 127.0.0.1:"$crc_port" --quiet --no-crc --no-pattern \
            get perf/get-crc >/dev/null
    done
    kill -INT "$rpid"
    wait "$rpid" || true
    echo "# profile of the crc server over 3 Gets (perf record -e cpu-clock), top symbols:"
    perf report -i "$tmp/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
        grep -E '^ +[0-9]' | head -12 | sed 's/^/# /'
fi
