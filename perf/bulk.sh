#!/usr/bin/env bash
# Throughput of ringstreamd as its users measure it, with h2load on loopback:
#   GET / and a unary gRPC call (Stat) in requests/s, and one-stream 1 GiB Put and Get in MB/s
#   (Get cold, after dropping the page cache when root, then warm).
# Usage: perf/bulk.sh [BUILD_DIR] [SIZE_BYTES]    (defaults: build, 1073741824)
# RS_SERVER_ARGS="--send-zc-threshold 65536" adds server flags.
# Prints a markdown table. The server runs on a free 127.0.0.1 port and is always stopped.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build}
size=${2:-1073741824}
work=$(mktemp -d "${RS_PERF_DIR:-$repo}/.perf-bulk.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086 # RS_SERVER_ARGS: extra flags, split on spaces
"$build/ringstreamd" --listen "127.0.0.1:$port" --data-dir "$work/data" ${RS_SERVER_ARGS:-} 2>"$work/server.log" &
pid=$!
for _ in $(seq 50); do
    grep -q "listening on" "$work/server.log" && break
    sleep 0.1
done
url=http://127.0.0.1:$port
grpc=(-H 'content-type: application/grpc' -H 'te: trailers')
"$repo/perf/gen_msgs.py" put perf-object "$size" >"$work/put.bin"
"$repo/perf/gen_msgs.py" get perf-object >"$work/get.bin"
"$repo/perf/gen_msgs.py" stat perf-object >"$work/stat.bin"

# h2load prints "finished in Xs, R req/s, T MB/s"; keep the request rate and the time.
h2() { h2load "$@" 2>&1 | tee -a "$work/h2load.log"; }
rate() { awk '/^finished in/ { gsub(",", ""); print $4 }'; }
secs() {
    awk '/^finished in/ { t = $3; gsub(",", "", t);
         if (t ~ /ms$/) { sub("ms", "", t); t /= 1000 } else sub("s", "", t); print t }'
}
ok() { grep -q "succeeded, 0 failed, 0 errored" || { echo "h2load reported failures" >&2; exit 1; }; }

h2 -n 200000 -c 10 -m 10 "$url/" >"$work/o1"; ok <"$work/o1"
get_root=$(rate <"$work/o1")
h2 -n 1 -c 1 -m 1 -d "$work/put.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Put" >"$work/o2"; ok <"$work/o2"
put_s=$(secs <"$work/o2")
h2 -n 100000 -c 10 -m 10 -d "$work/stat.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Stat" >"$work/o3"; ok <"$work/o3"
stat_rate=$(rate <"$work/o3")
cold=warm
if [ "$(id -u)" = 0 ]; then sync; echo 1 >/proc/sys/vm/drop_caches; cold=cold; fi
h2 -n 1 -c 1 -m 1 -d "$work/get.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Get" >"$work/o4"; ok <"$work/o4"
get1_s=$(secs <"$work/o4")
h2 -n 1 -c 1 -m 1 -d "$work/get.bin" "${grpc[@]}" "$url/ringstream.v1.Bulk/Get" >"$work/o5"; ok <"$work/o5"
get2_s=$(secs <"$work/o5")
# h2load counts :status only: prove the Stat answers carried grpc-status 0 with one real call.
/usr/bin/python3 - "$repo" "$port" <<'PY'
import subprocess, sys, tempfile
repo, port = sys.argv[1], sys.argv[2]
d = tempfile.mkdtemp()
subprocess.run(["protoc", "--python_out=" + d, "-I", repo + "/proto", "bulk.proto"], check=True)
sys.path.insert(0, d)
import grpc, bulk_pb2 as pb
ch = grpc.insecure_channel("127.0.0.1:" + port)
info = ch.unary_unary("/ringstream.v1.Bulk/Stat", request_serializer=pb.StatRequest.SerializeToString,
                      response_deserializer=pb.ObjectInfo.FromString)(pb.StatRequest(name="perf-object"))
assert info.name == "perf-object", info
PY
mb() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
echo "| scenario | result |"
echo "|---|--:|"
echo "| h2load GET / (-n 200000 -c 10 -m 10) | $get_root req/s |"
echo "| h2load unary Stat (-n 100000 -c 10 -m 10) | $stat_rate req/s |"
echo "| Put $size bytes, one stream | $(mb "$put_s") MB/s ($put_s s) |"
echo "| Get $size bytes, one stream, $cold | $(mb "$get1_s") MB/s ($get1_s s) |"
echo "| Get $size bytes, one stream, warm | $(mb "$get2_s") MB/s ($get2_s s) |"
