#!/usr/bin/env bash
# perf/crypto.sh: build and run the crypto microbenchmark and record it in perf/RESULTS.md.
#
# Runs build/perf/crypto (wolfCrypt as ringstream links it, normally Debian's wolfssl source
# built with AES-NI/AVX2 by scripts/wolfssl/build.sh, plus libcrypto as the peer) and
# build/perf/crypto_system (the same program against Debian's libwolfssl.so.35), then writes one
# table under "## Crypto (perf/crypto)" in perf/RESULTS.md, replacing that section only.
#
# Usage: perf/crypto.sh [--build-dir DIR] [--seconds S] [--repeats N] [--no-record]
#   --build-dir DIR  CMake build directory (default: <repo>/build-perf)
#   --seconds S      minimum time per measurement (default 0.25)
#   --repeats N      measurements per figure; the median is kept (default 5)
#   --no-record      print the table, leave perf/RESULTS.md alone
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$repo/build-perf
seconds=0.25
repeats=5
record=1
while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --no-record) record=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "crypto.sh: unknown argument: $1" >&2; exit 64 ;;
    esac
done

cmake -S "$repo" -B "$build" >/dev/null
cmake --build "$build" --target crypto crypto_system -j"$(nproc)" >/dev/null
src_bin=$build/perf/crypto
sys_bin=$build/perf/crypto_system
[ -x "$sys_bin" ] || { echo "crypto.sh: $sys_bin was not built (libwolfssl-dev missing?)" >&2; exit 1; }

load=$(cut -d' ' -f1-3 /proc/loadavg) # other work on the host skews the figures; say so
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(--tsv --seconds "$seconds" --repeats "$repeats")
echo "running $src_bin ${args[*]}" >&2
"$src_bin" "${args[@]}" >"$tmp/src.tsv"
echo "running $sys_bin ${args[*]} --wolfcrypt-only" >&2
"$sys_bin" "${args[@]}" --wolfcrypt-only >"$tmp/sys.tsv"

# Rows keyed by algorithm, op and size; columns: wolfCrypt source, wolfCrypt system, libcrypto.
awk -F'\t' '
    function size(b) { return b >= 1048576 ? (b / 1048576) " MiB" : (b / 1024) " KiB" }
    FNR == 1 { file++ }
    /^#/ { next }
    {
        key = $1 SUBSEP $2 SUBSEP $3
        if (!(key in seen)) { seen[key] = 1; order[++n] = key }
        if (file == 1 && $4 == "wolfcrypt") src[key] = $5
        if (file == 1 && $4 == "libcrypto") ossl[key] = $5
        if (file == 2 && $4 == "wolfcrypt") sys[key] = $5
    }
    END {
        print "| Algorithm | Op | Size | wolfCrypt, Debian source + asm | wolfCrypt, Debian libwolfssl35 | libcrypto (OpenSSL) | source / system |"
        print "|---|---|---|--:|--:|--:|--:|"
        for (i = 1; i <= n; i++) {
            split(order[i], f, SUBSEP)
            k = order[i]
            ratio = (sys[k] > 0) ? sprintf("%.1fx", src[k] / sys[k]) : "-"
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], size(f[3]), \
                src[k], sys[k], ossl[k], ratio
        }
    }' "$tmp/src.tsv" "$tmp/sys.tsv" >"$tmp/table.md"

rel=${build#"$repo"/}
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "## Crypto (perf/crypto)"
    echo
    echo "Command: \`perf/crypto.sh --seconds $seconds --repeats $repeats\`, which runs"
    echo "\`$rel/perf/crypto ${args[*]}\` and"
    echo "\`$rel/perf/crypto_system ${args[*]} --wolfcrypt-only\`."
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Host: ${cpu:-unknown CPU}, $(nproc) CPUs,"
    echo "Linux $(uname -r), load average $load at start. One thread; MB/s = 10^6 input"
    echo "bytes per second, median of $repeats runs of at least ${seconds} s each. Seal = encrypt +"
    echo "tag, open = decrypt + verify (13 bytes of AAD, 16-byte tag); a 16 KiB row is one TLS"
    echo "record per call."
    echo
    echo "- \`crypto\`: $(sed -n 's/^# //p' "$tmp/src.tsv")"
    echo "- \`crypto_system\`: $(sed -n 's/^# //p' "$tmp/sys.tsv")"
    echo
    cat "$tmp/table.md"
    echo
    echo "Both programs first check that wolfCrypt and libcrypto produce the same digests,"
    echo "ciphertexts and tags and refuse a forged tag. Debian's libwolfssl35 is built without"
    echo "\`--enable-aesni\`/\`--enable-intelasm\` (C AES with 4-bit GCM tables), which is what the"
    echo "source build fixes. wolfSSL 5.5.4 has no SHA-NI code for SHA-256 (AVX2 at best), so"
    echo "object hashing stays on libcrypto (core/sha256.c)."
    echo
} >"$tmp/section.md"

cat "$tmp/section.md"
[ "$record" = 1 ] || exit 0

# Replace our section (up to the next "## " heading) and keep everything else as it is.
results=$repo/perf/RESULTS.md
[ -f "$results" ] || printf '# ringstream performance results\n\n' >"$results"
awk -v section="$tmp/section.md" '
    function emit(   line) { while ((getline line < section) > 0) print line; done = 1 }
    /^## / { skip = 0 }
    /^## Crypto \(perf\/crypto\)[[:space:]]*$/ { skip = 1; emit(); next }
    !skip { print; last = $0 }
    END { if (!done) { if (last != "") print ""; emit() } }
' "$results" >"$tmp/results.md"
cp "$tmp/results.md" "$results"
echo "recorded in $results" >&2
