#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing ringstream need.
# Fast when everything is already there: apt is only run for missing packages.
set -euo pipefail

PACKAGES=(
    # build
    cmake gcc pkg-config
    liburing-dev libnghttp2-dev libnanopb-dev nanopb protobuf-compiler
    libwolfssl-dev libcunit1-dev libssl-dev zlib1g-dev
    # wolfSSL built from Debian's source
    dpkg-dev build-essential autoconf automake libtool
    # end-to-end tests
    python3-grpcio python3-protobuf nghttp2-client curl
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
