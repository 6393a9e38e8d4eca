#!/usr/bin/env python3
"""Writes the generated seed inputs of tests/fuzz/corpus/<target>/ (gen-*.bin; regress-* files
are kept as they are). Deterministic: rerunning it rewrites the same bytes.

    python3 tests/fuzz/gen_corpus.py

Each seed follows the input layout its target's header comment describes."""
import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def prefix(flag, payload):
    return bytes([flag]) + struct.pack(">I", len(payload)) + payload


def steps(stream, sizes, ctl=0):
    """The deframer's steps: control byte (length | ctl bits) then that many bytes."""
    out, i, k = b"", 0, 0
    while i < len(stream):
        n = min(sizes[k % len(sizes)], 31, len(stream) - i)
        out += bytes([n | ctl]) + stream[i:i + n]
        i += n
        k += 1
    return out


def deframer():
    two = prefix(0, b"hello") + prefix(1, b"\x1f\x8b gz") + prefix(0, b"")
    big = prefix(0, b"x" * 100)
    return {
        "two-small-splits": struct.pack(">HB", 64, 16) + steps(two, [1, 2, 3]),
        "whole-frames": struct.pack(">HB", 64, 16) + steps(two, [31]),
        "held-across-push": struct.pack(">HB", 200, 8) + steps(big + two, [7, 31], 0x60),
        "too-large": struct.pack(">HB", 10, 0) + steps(prefix(0, b"y" * 11), [2]),
        "bad-flag": struct.pack(">HB", 64, 4) + steps(b"\x02\x00\x00\x00\x01z", [1]),
        "prefix-split-each-byte": struct.pack(">HB", 1023, 63) + steps(big * 3, [1, 5, 4, 31]),
    }


def codec():
    seeds = {}
    for i, t in enumerate([b"1S", b"99999999H", b"100m", b"5u", b"0n", b"12345678M", b"5X"]):
        seeds["timeout-%d" % i] = bytes([0, 0]) + t
    for i, m in enumerate([b"plain text", b"100% sure", "caf\u00e9 \u2603\n".encode(), b"%41%zz%",
                           bytes(range(0, 256, 7))]):
        seeds["pct-%d" % i] = bytes([1, 40]) + m
    for i, b in enumerate([b"", b"f", b"fo", b"foo", b"Zm9v", b"Zm9vYg==", b"Zm9vYg", b"Zm9vYmE=",
                           b"@@@@", b"Zg=", bytes(range(48))]):
        seeds["b64-%d" % i] = bytes([2, 8]) + b
    return seeds


def varint(v):
    out = b""
    while v >= 0x80:
        out += bytes([v & 0x7F | 0x80])
        v >>= 7
    return out + bytes([v])


def field(num, wt, payload):
    return varint(num << 3 | wt) + (varint(len(payload)) + payload if wt == 2 else varint(payload))


def pbview():
    header = field(1, 2, b"dir/obj") + field(2, 0, 1234) + field(3, 2, b"\x01" * 32) + field(4, 0, 1)
    return {
        "get": b"\x00" + field(1, 2, b"a/b") + field(2, 0, 5) + field(3, 0, 10) + field(4, 0, 4096),
        "list": b"\x00" + field(1, 2, b"pre"),
        "put-header": b"\x00" + field(1, 2, header),
        "put-header-merged": b"\x00" + field(1, 2, header) + field(1, 2, field(2, 0, 9)),
        "put-data": b"\x00" + field(2, 2, b"payload bytes"),
        "put-header-then-data": b"\x00" + field(1, 2, header) + field(2, 2, b"d" * 40),
        "truncated-length": b"\x00\x0a\x7f" + b"short",
        "unknown-fields": b"\x00" + field(9, 0, 1) + field(10, 2, b"zz") + b"\x5d\x01\x02\x03\x04",
        "get-roundtrip": b"\x01\x07" + bytes(range(1, 21)) + b"name/x",
        "varint": b"\x02" + b"\xff" * 8 + b"\x00",
    }


def gz():
    fixed = gzip.compress(b"hello gzip " * 20, mtime=0)
    bomb = gzip.compress(b"\x00" * (1 << 20), mtime=0)
    return {
        "hello-fits": b"\x00" + struct.pack(">H", 4096) + fixed,
        "hello-too-small": b"\x00" + struct.pack(">H", 100) + fixed,
        "bomb-1mib": b"\x00" + struct.pack(">H", 65535) + bomb,
        "trailing-bytes": b"\x00" + struct.pack(">H", 4096) + fixed + b"xx",
        "truncated": b"\x00" + struct.pack(">H", 4096) + fixed[:-5],
        "two-members": b"\x00" + struct.pack(">H", 4096) + fixed + fixed,
        "empty-member": b"\x00" + struct.pack(">H", 0) + gzip.compress(b"", mtime=0),
        "roundtrip": b"\x35" + struct.pack(">H", 300) + b"abcabcabc" * 20,
        "roundtrip-over": b"\x13" + struct.pack(">H", 10) + b"0123456789a",
        "corrupt-crc": b"\x02" + struct.pack(">H", 4096) + b"\x02" + struct.pack(">HB", 0xFFF8, 1)
        + struct.pack(">HB", 3, 0x10) + b"some text some text some text",
        "corrupt-cut": b"\x02" + struct.pack(">H", 4096) + b"\x01" + struct.pack(">HB", 20, 0)
        + b"cut me short, cut me short",
    }


def name():
    names = [b"a", b"a/b", b"dir/sub/file.txt", b"x" * 255, b"x" * 256, b".", b"..", b"a/../b",
             b"a/./b", b"/a", b"a/", b"a//b", b"...", b".hidden", b"a\x00b", b"a b", b"a\\b",
             "caf\u00e9".encode(), b"-_.", b"..a/b..", b""]
    seeds = {"n%02d" % i: n for i, n in enumerate(names)}
    meta = b"rso1" + struct.pack("<Qq", 42, 1700000000000) + b"\x07" * 32 + b"obj/name"
    seeds["xattr-valid"] = meta
    seeds["xattr-bad-name"] = meta[:-4] + b"/../"
    return seeds


def main():
    targets = {"fuzz_deframer": deframer(), "fuzz_codec": codec(), "fuzz_pbview": pbview(),
               "fuzz_gzip": gz(), "fuzz_name": name()}
    for target, seeds in targets.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("gen-"):
                os.remove(os.path.join(d, f))
        for key, data in seeds.items():
            with open(os.path.join(d, "gen-%s.bin" % key), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
