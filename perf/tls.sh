#!/usr/bin/env bash
# TLS against h2c, side by side in one run, on one server with a TLS and an h2c:// listener:
#   unary gRPC Stat with h2load (https:// vs http://) in requests/s and a new-handshake rate,
#   one-stream 1 GiB Put and Get in MB/s, and the server's CPU seconds for each Get.
# Usage: perf/tls.sh [BUILD_DIR] [SIZE_BYTES]    (defaults: build, 1073741824)
# RS_SERVER_ARGS adds server flags. Prints a markdown table. The server runs on free 127.0.0.1
# ports with a throwaway PKI (scripts/gen-test-certs.sh) and is always stopped.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build}
size=${2:-1073741824}
work=$(mktemp -d "${RS_PERF_DIR:-$repo}/.perf-tls.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

"$repo/scripts/gen-test-certs.sh" "$work/pki" >/dev/null
freeport() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
tport=$(freeport)
cport=$(freeport)
# shellcheck disable=SC2086 # RS_SERVER_ARGS: extra flags, split on spaces
"$build/ringstreamd" --listen "127.0.0.1:$tport" --listen "h2c://127.0.0.1:$cport" \
    --tls-cert "$work/pki/server.pem" --tls-key "$work/pki/server.key" \
    --data-dir "$work/data" ${RS_SERVER_ARGS:-} 2>"$work/server.log" &
pid=$!
for _ in $(seq 50); do
    grep -q "listening on" "$work/server.log" && break
    sleep 0.1
done
grpc=(-H 'content-type: application/grpc' -H 'te: trailers')
"$repo/perf/gen_msgs.py" put perf-object "$size" >"$work/put.bin"
"$repo/perf/gen_msgs.py" get perf-object >"$work/get.bin"
"$repo/perf/gen_msgs.py" stat perf-object >"$work/stat.bin"

h2() { h2load "$@" 2>&1 | tee -a "$work/h2load.log"; }
rate() { awk '/^finished in/ { gsub(",", ""); print $4 }'; }
secs() {
    awk '/^finished in/ { t = $3; gsub(",", "", t);
         if (t ~ /ms$/) { sub("ms", "", t); t /= 1000 } else sub("s", "", t); print t }'
}
ok() { grep -q "succeeded, 0 failed, 0 errored" || { echo "h2load reported failures" >&2; exit 1; }; }
# server CPU seconds (user + system) so far
cpu() { awk '{ print ($14 + $15) / 100 }' "/proc/$pid/stat"; }
mbps() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

declare -A stat_rate conn_rate put_s get_s get_cpu
for scheme in http https; do
    if [ $scheme = https ]; then port=$tport; else port=$cport; fi
    url=$scheme://127.0.0.1:$port
    h2 -n 1 -c 1 -m 1 -d "$work/put.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Put" >"$work/o"
    ok <"$work/o"
    put_s[$scheme]=$(secs <"$work/o")
    h2 -n 100000 -c 10 -m 10 -d "$work/stat.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Stat" \
        >"$work/o"
    ok <"$work/o"
    stat_rate[$scheme]=$(rate <"$work/o")
    # one Stat per connection: the rate of new connections (a full handshake each for TLS)
    h2 -n 1000 -c 1000 -m 1 -d "$work/stat.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Stat" \
        >"$work/o"
    ok <"$work/o"
    conn_rate[$scheme]=$(rate <"$work/o")
    # Put wrote with O_DIRECT: one Get first brings the object into the page cache, so the
    # measured Get is a warm one (without it, the first scheme's Get read from the disk)
    h2 -n 1 -c 1 -m 1 -d "$work/get.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Get" >"$work/o"
    ok <"$work/o"
    c0=$(cpu)
    h2 -n 1 -c 1 -m 1 -d "$work/get.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Get" >"$work/o"
    ok <"$work/o"
    get_s[$scheme]=$(secs <"$work/o")
    get_cpu[$scheme]=$(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { printf "%.2f", b - a }')
done

echo "| scenario | h2c | TLS | TLS / h2c |"
echo "|---|---|---|---|"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f %%", b / a * 100 }'; }
echo "| h2load unary Stat (-n 100000 -c 10 -m 10), req/s | ${stat_rate[http]} | ${stat_rate[https]} | $(ratio "${stat_rate[http]}" "${stat_rate[https]}") |"
echo "| h2load 1000 connections x 1 Stat (new connections), req/s | ${conn_rate[http]} | ${conn_rate[https]} | $(ratio "${conn_rate[http]}" "${conn_rate[https]}") |"
pm_c=$(mbps "${put_s[http]}")
pm_t=$(mbps "${put_s[https]}")
gm_c=$(mbps "${get_s[http]}")
gm_t=$(mbps "${get_s[https]}")
echo "| 1 stream Put $size B, MB/s | $pm_c | $pm_t | $(ratio "$pm_c" "$pm_t") |"
echo "| 1 stream Get $size B (warm), MB/s | $gm_c | $gm_t | $(ratio "$gm_c" "$gm_t") |"
echo "| server CPU s for that Get | ${get_cpu[http]} | ${get_cpu[https]} | |"
