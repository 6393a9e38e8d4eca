#!/usr/bin/env bash
# scripts/wolfssl/build.sh: build wolfSSL from Debian's own source package (same version and
# security patches as the libwolfssl35 binary) with its x86-64 assembly switched on: AES-NI,
# AVX1/AVX2 for AES-GCM, SHA-2, ChaCha20-Poly1305, and the SP maths for ECC/RSA.
#
# It never touches the machine's apt configuration: the deb-src entries are derived from the
# system's Debian entries into a private apt directory with its own lists and cache, and every
# apt call points at that directory with -o options. The result is a static libwolfssl.a
# installed into a cache prefix with a stamp file; a second run with the same version and
# options returns at once, without network access.
#
# Usage: scripts/wolfssl/build.sh [--prefix DIR] [--emit-prefix FILE] [--jobs N] [--refresh]
#                                 [--keep-build]
#   --prefix DIR       install here (default: $RS_CACHE_DIR/wolfssl-<debian version>-<options
#                      hash>, so builds with other options share the cache without
#                      replacing each other; RS_CACHE_DIR defaults to <repo>/build/_deps)
#   --emit-prefix FILE write the install prefix into FILE (for cmake/wolfssl.cmake)
#   --jobs N           parallel make jobs (default: nproc)
#   --refresh          re-read the Debian source indexes even when a cached copy exists
#   --keep-build       keep the unpacked, built source tree (default: removed after install)
# Environment:
#   RS_CACHE_DIR                where the private apt dir, downloads and prefixes live
#   RS_WOLFSSL_DEB_VERSION      pin a Debian source version (e.g. 5.5.4-2+deb12u3)
#   RS_WOLFSSL_APT_SOURCES      a deb822 .sources file with deb-src entries to use instead
#   RS_WOLFSSL_CONFIGURE_EXTRA  extra ./configure arguments (e.g. --enable-opensslextra)
#   RS_WOLFSSL_CFLAGS           CFLAGS for the build (default: -O2)
#   RS_WOLFSSL_NO_INSTALL=1     never apt-get install missing build tools; fail instead
# Exit status: 0 on success; 2 when the source cannot be had; 3 when the build fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${RS_CACHE_DIR:-$repo/build/_deps}
prefix=
emit=
jobs=$(nproc 2>/dev/null || echo 2)
refresh=0
keep_build=0

while [ $# -gt 0 ]; do
    case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --emit-prefix) emit=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --refresh) refresh=1; shift ;;
    --keep-build) keep_build=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $1" >&2; exit 64 ;;
    esac
done

# What we build. Only the native wolfSSL API is needed by core/tls, so no opensslextra.
configure_args=(
    --enable-static --disable-shared --with-pic
    --enable-intelasm --enable-aesni
    --enable-sp --enable-sp-asm
    --enable-tls13 --enable-tlsv12 --disable-oldtls
    --enable-alpn --enable-sni --enable-session-ticket --enable-supportedcurves
    --enable-altnames
    --enable-aesgcm --enable-aesgcm-stream --enable-chacha --enable-poly1305 --enable-curve25519
    --disable-examples --disable-crypttests --disable-silent-rules
)
if [ -n "${RS_WOLFSSL_CONFIGURE_EXTRA:-}" ]; then
    # shellcheck disable=SC2206 # word splitting of the extra arguments is intended
    configure_args+=(${RS_WOLFSSL_CONFIGURE_EXTRA})
fi
cflags=${RS_WOLFSSL_CFLAGS:--O2}
# KEEP_PEER_CERT: wolfSSL_get_peer_certificate(), for the mTLS identity handed to handlers. No
# configure switch sets it alone; CPPFLAGS reach options.h, so our includes agree with it.
# LARGE_STATIC_BUFFERS: the input and output record buffers inside struct WOLFSSL hold a whole
# record (16491 bytes each, +32 KiB per connection) instead of a 5-byte header, so a bulk
# transfer does not malloc, grow and free (ShrinkInputBuffer/ShrinkOutputBuffer) a dynamic
# buffer for every 16 KiB record (perf/RESULTS.md, TLS: -5 % CPU per GiB on each side).
cppflags="-DKEEP_PEER_CERT -DLARGE_STATIC_BUFFERS"
# --enable-aesgcm-stream and wolfssl/internal.h (installed next to the public headers, below):
# core/tls.c seals TLS 1.3 AES-GCM records itself, straight from the caller's buffers into the
# output (wc_AesGcmEncryptUpdate over the pieces of a record), with wolfSSL's own cipher object,
# IV and sequence number, so wolfSSL's later records (alerts, KeyUpdate, close_notify) follow on.
# The struct layout in internal.h depends on options.h alone, which is installed with it.
extra_headers="wolfssl/internal.h"

say() {
    echo "-- wolfssl: $*"
}

# Loud, unmissable failure: CMake shows our stderr and then falls back to the system library.
die() {
    local code=$1
    shift
    {
        echo
        echo "##########################################################################"
        echo "## ringstream: wolfSSL from Debian source FAILED"
        local line
        for line in "$@"; do
            echo "## $line"
        done
        echo "##########################################################################"
        echo
    } >&2
    exit "$code"
}

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
aptdir=$cache/wolfssl-apt

# Two configures sharing a cache (two build dirs, CI matrix) must not build at the same time.
exec 9>"$cache/wolfssl.lock"
flock 9

# --- private apt directory ---------------------------------------------------------------
apt_opts=(
    -o "Dir::Etc::SourceList=$aptdir/sources.list"
    -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "Dir::Cache::archives=$aptdir/cache/archives"
    -o "APT::Get::List-Cleanup=0"
)

# Prints deb822 stanzas with "Types: deb-src" for every enabled Debian "deb" entry of the
# system, from both the deb822 and the one-line formats. "Debian" means: a URI that names
# debian and a "main" component (wolfssl is in main; this also skips third-party repos such as
# download.docker.com/linux/debian with their own components). Comments are dropped; other
# fields (Signed-By, even an inline key) are copied unchanged.
derive_sources() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk '
        function flush(   i) {
            if (n > 0 && is_deb && is_debian && has_main && enabled) {
                print "Types: deb-src"
                for (i = 1; i <= n; i++)
                    print lines[i]
                print ""
            }
            n = 0; is_deb = 0; is_debian = 0; has_main = 0; enabled = 1; field = ""
        }
        BEGIN { n = 0; is_deb = 0; is_debian = 0; has_main = 0; enabled = 1 }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        {
            if ($0 ~ /^[^ \t]/)
                field = tolower(substr($0, 1, index($0, ":") - 1))
            value = ($0 ~ /^[^ \t]/) ? substr($0, index($0, ":") + 1) : $0
            if (field == "types") {
                if ((" " value " ") ~ /[ \t]deb[ \t]/)
                    is_deb = 1
                next
            }
            if (field == "uris" && tolower(value) ~ /debian/)
                is_debian = 1
            if (field == "components" && (" " value " ") ~ /[ \t]main[ \t]/)
                has_main = 1
            if (field == "enabled" && tolower(value) ~ /no/)
                enabled = 0
            lines[++n] = $0
        }
        END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '
        /^[ \t]*deb[ \t]/ {
            line = $0
            sub(/^[ \t]*deb[ \t]+/, "", line)
            opts = ""
            if (line ~ /^\[/) {
                opts = substr(line, 2, index(line, "]") - 2)
                line = substr(line, index(line, "]") + 1)
            }
            split(line, w, /[ \t]+/)
            k = (w[1] == "") ? 2 : 1
            uri = w[k]; suite = w[k + 1]; comps = ""
            for (i = k + 2; i in w; i++)
                if (w[i] != "")
                    comps = comps " " w[i]
            if (tolower(uri) !~ /debian/ || uri ~ /^cdrom:/ || (comps " ") !~ / main /)
                next
            print "Types: deb-src"
            print "URIs: " uri
            print "Suites: " suite
            if (comps != "")
                print "Components:" comps
            n = split(opts, o, /[ \t]+/)
            for (i = 1; i <= n; i++)
                if (tolower(o[i]) ~ /^signed-by=/)
                    print "Signed-By: " substr(o[i], 11)
            print ""
        }
        ' "$f"
    done
}

setup_apt() {
    local want
    mkdir -p "$aptdir/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial" \
        "$aptdir/src"
    : >"$aptdir/sources.list" # no one-line entries: all of ours are deb822
    if [ -n "${RS_WOLFSSL_APT_SOURCES:-}" ]; then
        want=$(cat "$RS_WOLFSSL_APT_SOURCES")
    else
        want=$(derive_sources)
    fi
    if [ -z "$want" ]; then
        die 2 "no Debian apt entries found in /etc/apt/sources.list{,.d/*.sources,.d/*.list}" \
            "to derive deb-src entries from." \
            "Fix: set RS_WOLFSSL_APT_SOURCES to a deb822 file with 'Types: deb-src' entries," \
            "or configure with -DRS_WOLFSSL=system."
    fi
    # Rewrite only on change, so an unchanged setup keeps its downloaded indexes valid.
    if [ "$want" != "$(cat "$aptdir/sources.list.d/wolfssl-src.sources" 2>/dev/null)" ]; then
        printf '%s\n' "$want" >"$aptdir/sources.list.d/wolfssl-src.sources"
        rm -f "$aptdir/lists/"*_Sources* "$aptdir/lists/"*Release*
    fi
}

apt_update() {
    say "reading Debian source indexes (private apt dir $aptdir)"
    # A failed index is not fatal by itself (another entry may carry wolfssl); having no
    # wolfssl source afterwards is, and source_version's caller says so.
    if ! apt-get "${apt_opts[@]}" -qq update >"$aptdir/update.log" 2>&1 ||
        grep -q '^\(E:\|W: Failed\)' "$aptdir/update.log"; then
        sed 's/^/-- wolfssl: apt: /' "$aptdir/update.log" >&2
    fi
}

# Newest wolfssl source version the private indexes know, or the pinned one; empty if none.
source_version() {
    local v best=
    if [ -n "${RS_WOLFSSL_DEB_VERSION:-}" ]; then
        echo "$RS_WOLFSSL_DEB_VERSION"
        return
    fi
    for v in $(apt-cache "${apt_opts[@]}" showsrc --only-source wolfssl 2>/dev/null |
        sed -n 's/^Version: //p'); do
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then
            best=$v
        fi
    done
    echo "$best"
}

setup_apt
updated=0
if [ "$refresh" = 1 ] || ! ls "$aptdir/lists/"*_Sources* >/dev/null 2>&1; then
    apt_update
    updated=1
fi
version=$(source_version)
if [ -z "$version" ] && [ "$updated" = 0 ]; then
    apt_update # cached indexes may predate the package; try once with fresh ones
    version=$(source_version)
fi
if [ -z "$version" ]; then
    die 2 "no 'wolfssl' source package found (apt-get update of the deb-src entries in" \
        "$aptdir/sources.list.d/wolfssl-src.sources failed or found none)." \
        "Fix: check the network to the Debian mirror (log: $aptdir/update.log), or set" \
        "RS_WOLFSSL_APT_SOURCES, or configure with -DRS_WOLFSSL=system to use Debian's" \
        "binary libwolfssl-dev instead."
fi

stamp_want=$(printf 'version=%s\ncflags=%s\ncppflags=%s\nconfigure=%s\nheaders=%s\ncc=%s\n' \
    "$version" "$cflags" "$cppflags" "${configure_args[*]}" "$extra_headers" \
    "$(${CC:-cc} --version 2>/dev/null | head -n 1)")
[ -n "$prefix" ] ||
    prefix=$cache/wolfssl-$version-$(printf '%s' "$stamp_want" | sha256sum | cut -c1-8)
stamp=$prefix/.rs-wolfssl-stamp

emit_prefix() {
    if [ -n "$emit" ]; then
        mkdir -p "$(dirname "$emit")"
        printf '%s\n' "$prefix" >"$emit"
    fi
}

if [ -f "$stamp" ] && [ -f "$prefix/lib/libwolfssl.a" ] &&
    [ "$(sed '/^seconds=/d' "$stamp")" = "$stamp_want" ]; then
    say "up to date: $prefix (Debian source $version, built in $(sed -n 's/^seconds=//p' "$stamp")s)"
    emit_prefix
    exit 0
fi

# --- tools -------------------------------------------------------------------------------
# Debian's source is the upstream git tarball without ./configure (debian/rules relies on
# dh_autoreconf), so autoconf, automake and libtool are needed besides a compiler.
missing=()
command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
command -v make >/dev/null || missing+=(build-essential)
command -v "${CC:-cc}" >/dev/null || missing+=(build-essential)
command -v autoreconf >/dev/null || missing+=(autoconf)
command -v aclocal >/dev/null || missing+=(automake)
command -v libtoolize >/dev/null || missing+=(libtool)
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$(id -u)" != 0 ] || [ "${RS_WOLFSSL_NO_INSTALL:-0}" = 1 ]; then
        die 3 "missing build tools: ${missing[*]}" \
            "Fix: sudo apt-get install --no-install-recommends ${missing[*]}"
    fi
    say "installing build tools: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2 || die 3 "apt-get install ${missing[*]} failed"
fi

# --- source ------------------------------------------------------------------------------
srcdir=$aptdir/src
dsc=$(ls "$srcdir"/wolfssl_"${version#*:}".dsc 2>/dev/null || true)
if [ -z "$dsc" ]; then
    say "downloading Debian source wolfssl=$version"
    if ! (cd "$srcdir" && apt-get "${apt_opts[@]}" -q source --download-only "wolfssl=$version") \
        >"$aptdir/source.log" 2>&1; then
        cat "$aptdir/source.log" >&2
        die 2 "apt-get source wolfssl=$version failed." \
            "Fix: check the network to the Debian mirror (or RS_WOLFSSL_DEB_VERSION), or" \
            "configure with -DRS_WOLFSSL=system."
    fi
    dsc=$srcdir/wolfssl_${version#*:}.dsc
fi

start=$(date +%s)
work=$cache/wolfssl-$version-build
log=$cache/wolfssl-$version-build.log
rm -rf "$work"
say "unpacking $(basename "$dsc") with Debian's patches"
dpkg-source -x "$dsc" "$work" >"$log" 2>&1 || {
    cat "$log" >&2
    die 2 "dpkg-source -x $dsc failed (corrupt download? remove $srcdir and retry)"
}

build_failed() {
    tail -n 60 "$log" >&2
    die 3 "$1 failed; full log: $log"
}

say "autogen + configure (${configure_args[*]})"
(cd "$work" && ./autogen.sh) >>"$log" 2>&1 || build_failed "autogen.sh"
(cd "$work" && CFLAGS="$cflags" CPPFLAGS="$cppflags" ./configure --prefix="$prefix" "${configure_args[@]}") \
    >>"$log" 2>&1 || build_failed "configure"
say "make -j$jobs (log: $log)"
make -C "$work" -j"$jobs" >>"$log" 2>&1 || build_failed "make"
rm -rf "$prefix"
make -C "$work" install >>"$log" 2>&1 || build_failed "make install"
for h in $extra_headers; do
    install -m 0644 "$work/$h" "$prefix/include/$h" || build_failed "install $h"
done
cp "$log" "$prefix/build.log"
for opt in WOLFSSL_AESNI USE_INTEL_SPEEDUP WOLFSSL_SP_X86_64 HAVE_CURVE25519 HAVE_ALPN \
    KEEP_PEER_CERT WOLFSSL_ALT_NAMES; do
    grep -q "#define $opt\b" "$prefix/include/wolfssl/options.h" ||
        grep -q -- "-D$opt\b" "$prefix/build.log" ||
        say "note: $opt is not set in this build"
done
[ "$keep_build" = 1 ] || rm -rf "$work"

seconds=$(($(date +%s) - start))
printf '%s\nseconds=%s\n' "$stamp_want" "$seconds" >"$stamp"
say "installed wolfSSL $version into $prefix in ${seconds}s"
emit_prefix
