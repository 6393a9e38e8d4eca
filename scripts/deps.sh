#!/usr/bin/env bash
# Installs the Debian 12 packages ringstream needs. Fast when everything is already there: apt
# is only run for missing packages.
#   scripts/deps.sh           building, serving and testing (scripts/test)
#   scripts/deps.sh --serve   only building and serving ringstreamd (scripts/run): no test
#                             packages, no clang/fuzzing toolchain, no node/npm
set -euo pipefail

serve_only=false
case "${1:-}" in
--serve) serve_only=true ;;
"") ;;
*)
    echo "usage: scripts/deps.sh [--serve]" >&2
    exit 2
    ;;
esac

# What building and running ringstreamd needs.
SERVE_PACKAGES=(
    cmake gcc pkg-config
    liburing-dev libnghttp2-dev libnanopb-dev nanopb protobuf-compiler
    libwolfssl-dev libssl-dev zlib1g-dev
    liblmdb-dev # the bulk store's sorted index of names (workers/bulk/index.c)
    libinih-dev # ringstreamd --config FILE (INI) parsing (workers/main.c)
    libisal-dev # CRC32C of ChecksummedData and Chunk.crc32c (core/crc32c.c, Intel ISA-L)
    libipsec-mb-dev # AES-GCM with VAES/AVX-512 for the TLS 1.3 records we seal (core/tls.c)
    libmicrohttpd-dev # --metrics-listen: Prometheus' HTTP/1.1 scrape (workers/metrics_http.c)
    # wolfSSL built from Debian's source
    dpkg-dev build-essential autoconf automake libtool
)

# What the tests, the sanitizer and clang builds and the fuzzers need on top.
TEST_PACKAGES=(
    libcunit1-dev # tests/unit
    # build-clang/ and the libFuzzer targets (libclang_rt.fuzzer-x86_64.a is in
    # libclang-rt-14-dev on Debian 12)
    clang libclang-rt-14-dev
    # end-to-end tests
    python3-grpcio python3-protobuf nghttp2-client curl
    # raw HTTP/2 frames for tests/e2e/test_protocol.py (pulls python3-hyperframe, python3-hpack)
    python3-h2
    # tests/e2e/test_attacks.py: ss(8) reads the bytes a server socket sent
    iproute2
    # tests/e2e/test_service.py: parses GET /metrics with Prometheus' own parser
    python3-prometheus-client
    # tests/e2e/test_get_crc.py: CRC32C of every Get and Echo chunk (C extension); also
    # tests/e2e/test_client.py (its fake resumable-upload server checks ChecksummedData)
    python3-crcmod
    # scripts/gen-test-certs.sh and tests/e2e/test_tls.py (s_client)
    openssl
    # tests/e2e/test_reflection_go.py: grpc-go's own server reflection client, built offline
    # in GOPATH mode from /usr/share/gocode (Debian 12 has no grpcurl package)
    golang-go golang-google-grpc-dev
)

PACKAGES=("${SERVE_PACKAGES[@]}")
if ! $serve_only; then
    PACKAGES+=("${TEST_PACKAGES[@]}")
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

if [ ${#missing[@]} -ne 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi

if $serve_only; then
    exit 0
fi

# --- grpc-js interop client (tests/e2e/grpcjs) ---------------------------------------------
# node and npm come preinstalled; Debian's nodejs/npm are the fallback. node_modules is never
# committed: `npm ci` installs exactly package-lock.json when node_modules is missing or older
# than the lock file.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "deps: installing nodejs npm" >&2
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends nodejs npm
fi
grpcjs="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e/grpcjs"
if [ ! -f "$grpcjs/node_modules/.package-lock.json" ] ||
   [ "$grpcjs/package-lock.json" -nt "$grpcjs/node_modules/.package-lock.json" ]; then
    echo "deps: npm ci in $grpcjs" >&2
    (cd "$grpcjs" && npm ci --no-audit --no-fund)
fi
