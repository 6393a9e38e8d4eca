#!/usr/bin/env bash
# perf/compare/build.sh: installs what perf/compare needs from Debian (apt-get, only the
# packages that are missing) and builds the peer servers into CACHE (outside the sources):
#   CACHE/compare-go   grpc-go 1.33 (golang-google-grpc-dev), perf/compare/go/main.go
#   CACHE/compare-cpp  gRPC C++ 1.51 (libgrpc++-dev), perf/compare/cpp/server.cc
# Each is rebuilt only when its sources or the .proto files changed (a stamp of their
# SHA-256). There is no network for Go modules: Go builds in GOPATH mode (GO111MODULE=off)
# from /usr/share/gocode, with the stubs protoc-gen-go 1.3.5 generates (plugins=grpc).
# Usage: perf/compare/build.sh CACHE
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:?usage: perf/compare/build.sh CACHE}
mkdir -p "$cache"

packages=(
    nghttp2-client nghttp2-server h2o iperf3 # h2load, nghttpd, h2o, the loopback ceiling
    golang-go golang-google-grpc-dev golang-goprotobuf-dev # grpc-go and protoc-gen-go
    libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libssl-dev g++ pkg-config # gRPC C++
    python3-grpcio python3-protobuf # the status checks
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "perf/compare: installing ${missing[*]}" >&2
    sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

go_stamp=$(stamp_of "$here/go/main.go" "$repo/proto/bulk.proto" "$repo/proto/grpc_testing.proto")
if [ "$(cat "$cache/compare-go.stamp" 2>/dev/null)" != "$go_stamp" ]; then
    echo "perf/compare: building compare-go" >&2
    gp=$(mktemp -d "$cache/gopath.XXXXXX")
    mkdir -p "$gp/src/rsbulk" "$gp/src/rstesting" "$gp/src/comparego"
    protoc -I "$repo/proto" --go_out=plugins=grpc:"$gp/src/rsbulk" bulk.proto
    protoc -I "$repo/proto" --go_out=plugins=grpc:"$gp/src/rstesting" grpc_testing.proto
    cp "$here/go/main.go" "$gp/src/comparego/"
    (cd "$gp/src/comparego" &&
        GO111MODULE=off GOPATH="$gp:/usr/share/gocode" GOCACHE="$cache/gocache" GOFLAGS='' \
            go build -o "$cache/compare-go" .)
    rm -rf "$gp"
    echo "$go_stamp" >"$cache/compare-go.stamp"
fi

cpp_stamp=$(stamp_of "$here/cpp/server.cc" "$repo/proto/bulk.proto" "$repo/proto/grpc_testing.proto")
if [ "$(cat "$cache/compare-cpp.stamp" 2>/dev/null)" != "$cpp_stamp" ]; then
    echo "perf/compare: building compare-cpp" >&2
    gen=$(mktemp -d "$cache/cppgen.XXXXXX")
    protoc -I "$repo/proto" --cpp_out="$gen" --grpc_out="$gen" \
        --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" bulk.proto grpc_testing.proto
    # shellcheck disable=SC2046 # pkg-config prints several flags
    g++ -O2 -g -msse4.2 -std=c++17 -I"$gen" -o "$cache/compare-cpp" "$here/cpp/server.cc" \
        "$gen"/bulk.pb.cc "$gen"/bulk.grpc.pb.cc "$gen"/grpc_testing.pb.cc \
        "$gen"/grpc_testing.grpc.pb.cc $(pkg-config --cflags --libs grpc++ protobuf) -lcrypto
    rm -rf "$gen"
    echo "$cpp_stamp" >"$cache/compare-cpp.stamp"
fi
