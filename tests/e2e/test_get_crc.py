#!/usr/bin/python3
"""End-to-end tests of the read side of the grown Bulk contract (proto/bulk.proto):
Chunk.crc32c on every Get and Echo chunk, and GetRequest.if_match_sha256.

Every chunk's crc32c is checked against CRC32C computed here with python3-crcmod (its C
extension; itself checked against the standard check value and a small table-driven
reference before use).

Groups: "core" (fast; also under the sanitizer build) and "large" (a 64 MiB object).
Usage: test_get_crc.py --server build/ringstreamd [--group core] [--only SUBSTRING]
"""

import os
import sys

import crcmod.predefined
import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BULK, Bulk, CaseFailure, Server, TestRun, channel, check,  # noqa: E402
                     check_eq, expect_status, pb2, sha256)

SC = grpc.StatusCode
KiB = 1024
MiB = 1024 * 1024

crc32c = crcmod.predefined.mkCrcFun("crc-32c")


def _crc32c_ref(data):
    """Bit-reflected CRC32C (polynomial 0x82F63B78), one table lookup per byte."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# The checker must be right before it judges the server.
assert _crc32c_ref(b"123456789") == 0xE3069283
assert crc32c(b"123456789") == 0xE3069283
assert crc32c(b"") == 0
for _probe in (b"\0" * 32, b"\xff" * 32, bytes(range(256)) * 3):
    assert crc32c(_probe) == _crc32c_ref(_probe)

run = TestRun("get_crc")
_ch = None


def bulk(srv):
    global _ch
    if _ch is None:
        _ch = Bulk(channel(srv))
    return _ch


def pattern(n, seed=0):
    base = bytes((i * 131 + seed * 17 + (i >> 7)) & 0xFF for i in range(8192))
    return (base * (n // len(base) + 1))[:n]


def check_crc_chunks(chunks, offset, data, chunk_size, what):
    """Chunks of a Get of `data` (the bytes expected from `offset` on): offsets consecutive,
    sizes as the contract says, each crc32c that of its own data."""
    pos = offset
    for i, c in enumerate(chunks):
        check_eq(c.offset, pos, "%s chunk %d offset" % (what, i))
        if i < len(chunks) - 1:
            check_eq(len(c.data), chunk_size, "%s chunk %d size" % (what, i))
        check(len(c.data) > 0, "%s chunk %d is empty" % (what, i))
        if c.crc32c != crc32c(c.data):
            raise CaseFailure("%s chunk %d (offset %d, %d bytes): crc32c %#010x, want %#010x"
                              % (what, i, c.offset, len(c.data), c.crc32c, crc32c(c.data)))
        pos += len(c.data)
    got = b"".join(c.data for c in chunks)
    check_eq(len(got), len(data), what + " bytes in total")
    check(got == data, what + ": data differs")


def get(b, name, **kw):
    kw.setdefault("timeout", 60)
    timeout = kw.pop("timeout")
    return list(b.Get(b.pb.GetRequest(name=name, **kw), timeout=timeout))


# --- Chunk.crc32c on Get --------------------------------------------------------------------

@run.case("get: whole objects of 1, 65535, 65536, 65537, 300000 bytes: every crc32c right")
def _(srv):
    b = bulk(srv)
    for n in (1, 65535, 65536, 65537, 300000):
        data = pattern(n, n)
        b.put("crc/whole-%d" % n, data, chunk=MiB)
        check_crc_chunks(get(b, "crc/whole-%d" % n), 0, data, 64 * KiB, "Get(%d)" % n)


@run.case("get: a 0-byte object sends no chunk")
def _(srv):
    b = bulk(srv)
    b.put("crc/empty", b"")
    check_eq(len(get(b, "crc/empty")), 0, "chunks of a 0-byte object")
    check_eq(len(get(b, "crc/empty", chunk_size=1)), 0, "chunks of a 0-byte object, chunk 1")


@run.case("get: chunk sizes at boundaries (1, 4095..4097, 65535..65537, 1 MiB, above 1 MiB)")
def _(srv):
    b = bulk(srv)
    data = pattern(3 * MiB + 12345, 5)
    b.put("crc/chunks", data, chunk=MiB)
    for cs in (4095, 4096, 4097, 65535, 65536, 65537, MiB - 1, MiB):
        check_crc_chunks(get(b, "crc/chunks", chunk_size=cs), 0, data, cs, "chunk_size=%d" % cs)
    # above 1 MiB is cut to 1 MiB
    check_crc_chunks(get(b, "crc/chunks", chunk_size=MiB + 1), 0, data, MiB, "chunk_size=1M+1")
    check_crc_chunks(get(b, "crc/chunks", chunk_size=1, offset=100, length=300), 100,
                     data[100:400], 1, "chunk_size=1")


@run.case("get: ranges (offsets inside chunks, lengths cut at the end, empty range)")
def _(srv):
    b = bulk(srv)
    data = pattern(1000003, 8)
    b.put("crc/range", data, chunk=MiB)
    for off, ln, cs in ((1, 0, 0), (65535, 2, 0), (65536, 65536, 0), (999999, 0, 3),
                        (12345, 500000, 100000), (500000, 10 ** 9, 4096), (7, 1, 0)):
        want = data[off:] if ln == 0 else data[off:off + ln]
        check_crc_chunks(get(b, "crc/range", offset=off, length=ln, chunk_size=cs), off, want,
                         cs or 64 * KiB, "offset=%d length=%d chunk=%d" % (off, ln, cs))
    check_eq(len(get(b, "crc/range", offset=len(data))), 0, "chunks at offset == size")
    expect_status(SC.OUT_OF_RANGE, get, b, "crc/range", offset=len(data) + 1)


@run.case("get: with a small --max-msg, cut chunks still fit a message with their crc32c")
def _(srv):
    # The Chunk head now carries crc32c (5 more bytes): the effective chunk size must leave
    # room for it, or the server's own message would exceed --max-msg.
    small = Server(srv.binary, ["--max-msg", "70000"])
    small.start()
    try:
        b = Bulk(channel(small))
        data = pattern(300000, 11)
        b.put("crc/small", data, chunk=60000)
        chunks = get(b, "crc/small", chunk_size=MiB)
        check(len(chunks) > 1, "got %d chunks" % len(chunks))
        check(len(chunks[0].data) >= 70000 - 27, "first chunk only %d bytes" % len(chunks[0].data))
        check(len(chunks[0].SerializeToString()) <= 70000,
              "chunk message %d bytes exceeds --max-msg" % len(chunks[0].SerializeToString()))
        check_crc_chunks(chunks, 0, data, len(chunks[0].data), "Get under --max-msg 70000")
    finally:
        problems = small.stop()
    check(not problems, "second server: %s" % problems)


# --- Chunk.crc32c on Echo -------------------------------------------------------------------

@run.case("echo: every chunk carries the crc32c of its data, 0-length ones included")
def _(srv):
    b = bulk(srv)
    pb = b.pb
    pieces = [b"", b"123456789", pattern(1, 1), b"", pattern(65536, 2), pattern(1000000, 3), b""]
    # a client's crc32c is ignored, wrong or not
    reqs = [pb.Chunk(data=p, crc32c=0xDEADBEEF if i % 2 else 0) for i, p in enumerate(pieces)]
    out = list(b.Echo(iter(reqs), timeout=60))
    check_eq(len(out), len(pieces), "echoed chunks")
    pos = 0
    for i, (c, p) in enumerate(zip(out, pieces)):
        check(c.data == p, "echo chunk %d: data differs" % i)
        check_eq(c.offset, pos, "echo chunk %d offset" % i)
        check_eq(c.crc32c, crc32c(p), "echo chunk %d crc32c" % i)
        pos += len(p)
    check_eq(out[1].crc32c, 0xE3069283, "crc32c of \"123456789\"")


@run.case("echo: gzip-compressed requests: crc32c is that of the inflated data")
def _(srv):
    b = bulk(srv)
    pieces = [b"a" * 100000, pattern(300000, 4), b""]
    out = list(b.Echo(iter([b.pb.Chunk(data=p) for p in pieces]), timeout=60,
                      compression=grpc.Compression.Gzip))
    check_eq([len(c.data) for c in out], [len(p) for p in pieces], "echoed sizes")
    for i, (c, p) in enumerate(zip(out, pieces)):
        check(c.data == p, "gzip echo chunk %d: data differs" % i)
        check_eq(c.crc32c, crc32c(p), "gzip echo chunk %d crc32c" % i)


@run.case("echo: crc32c sent with a wrong wire type is INVALID_ARGUMENT")
def _(srv):
    # field 3 as a varint instead of fixed32: a malformed Chunk, like a wrong type for data
    raw = channel(srv).stream_stream(BULK + "Echo", request_serializer=lambda m: m,
                                     response_deserializer=lambda m: m)
    bad = b"\x0a\x03abc" + b"\x18\x05"
    expect_status(SC.INVALID_ARGUMENT, lambda: list(raw(iter([bad]), timeout=30)))
    # and a correct fixed32 crc32c field is accepted (and ignored)
    good = b"\x0a\x03abc" + b"\x1d\x01\x02\x03\x04"
    out = [pb2().Chunk.FromString(m) for m in raw(iter([good]), timeout=30)]
    check_eq([(c.data, c.crc32c) for c in out], [(b"abc", crc32c(b"abc"))], "echo of a raw Chunk")


# --- GetRequest.if_match_sha256 -------------------------------------------------------------

@run.case("if_match: the current SHA-256 sends the data, another one FAILED_PRECONDITION")
def _(srv):
    b = bulk(srv)
    data = pattern(200000, 21)
    info = b.put("match/obj", data)
    check_crc_chunks(get(b, "match/obj", if_match_sha256=info.sha256), 0, data, 64 * KiB,
                     "Get with the matching if_match")
    check_crc_chunks(get(b, "match/obj", if_match_sha256=sha256(data), offset=150000), 150000,
                     data[150000:], 64 * KiB, "resume with the matching if_match")
    other = bytearray(info.sha256)
    other[31] ^= 1
    e = expect_status(SC.FAILED_PRECONDITION, get, b, "match/obj", if_match_sha256=bytes(other))
    check("match/obj" in (e.details() or ""), "message names the object: %r" % e.details())
    expect_status(SC.FAILED_PRECONDITION, get, b, "match/obj", if_match_sha256=b"\0" * 32)
    # an empty range still checks
    expect_status(SC.FAILED_PRECONDITION, get, b, "match/obj", if_match_sha256=b"\0" * 32,
                  offset=len(data))
    check_eq(len(get(b, "match/obj", if_match_sha256=info.sha256, offset=len(data))), 0,
             "chunks at offset == size with a matching if_match")


@run.case("if_match: 1, 31, 33 and 64 bytes are INVALID_ARGUMENT, also for a missing object")
def _(srv):
    b = bulk(srv)
    b.put("match/len", b"abc")
    for n in (1, 31, 33, 64):
        e = expect_status(SC.INVALID_ARGUMENT, get, b, "match/len", if_match_sha256=b"\1" * n)
        check("if_match_sha256" in (e.details() or ""), "message names the field: %r" % e.details())
        expect_status(SC.INVALID_ARGUMENT, get, b, "match/nothing-here",
                      if_match_sha256=b"\1" * n)
    # empty means unset
    check_eq(b"".join(c.data for c in get(b, "match/len", if_match_sha256=b"")), b"abc",
             "Get with an empty if_match")


@run.case("if_match: a missing object stays NOT_FOUND")
def _(srv):
    b = bulk(srv)
    expect_status(SC.NOT_FOUND, get, b, "match/missing", if_match_sha256=sha256(b"x"))
    b.put("match/gone", b"x")
    b.delete("match/gone")
    expect_status(SC.NOT_FOUND, get, b, "match/gone", if_match_sha256=sha256(b"x"))


@run.case("if_match: resuming with offset after an overwrite is FAILED_PRECONDITION")
def _(srv):
    b = bulk(srv)
    v1 = pattern(500000, 31)
    info = b.put("match/resume", v1)
    # a download breaks after its first 3 chunks ...
    it = b.Get(b.pb.GetRequest(name="match/resume", if_match_sha256=info.sha256), timeout=60)
    first = [next(it) for _ in range(3)]
    it.cancel()
    check_crc_chunks(first, 0, v1[:3 * 64 * KiB], 64 * KiB, "first part")
    resume_at = 3 * 64 * KiB
    # ... the object is overwritten (same size, other bytes) ...
    v2 = pattern(500000, 32)
    b.put("match/resume", v2, overwrite=True)
    # ... and the resume must not splice v2's tail onto v1's head
    expect_status(SC.FAILED_PRECONDITION, get, b, "match/resume", offset=resume_at,
                  if_match_sha256=info.sha256)
    # an overwrite with a shorter object: the change wins over the offset past its end
    b.put("match/resume", b"short", overwrite=True)
    expect_status(SC.FAILED_PRECONDITION, get, b, "match/resume", offset=resume_at,
                  if_match_sha256=info.sha256)
    expect_status(SC.OUT_OF_RANGE, get, b, "match/resume", offset=resume_at)
    # resuming against the current version works
    b.put("match/resume", v2, overwrite=True)
    check_crc_chunks(get(b, "match/resume", offset=resume_at, if_match_sha256=sha256(v2)),
                     resume_at, v2[resume_at:], 64 * KiB, "resume of v2")


@run.case("if_match: a Get that matched at its start sends that version whole, overwrite or not")
def _(srv):
    b = bulk(srv)
    v1 = pattern(4 * MiB, 51)
    info = b.put("match/overlap", v1)
    it = b.Get(b.pb.GetRequest(name="match/overlap", if_match_sha256=info.sha256), timeout=60)
    chunks = [next(it)]
    v2 = pattern(4 * MiB, 52)
    b.put("match/overlap", v2, overwrite=True)  # while the Get is under way
    chunks += list(it)
    check_crc_chunks(chunks, 0, v1, 64 * KiB, "Get overlapping an overwrite")
    # the next one sees v2 and no longer matches
    expect_status(SC.FAILED_PRECONDITION, get, b, "match/overlap", if_match_sha256=info.sha256)


@run.case("if_match: a bad name is still INVALID_ARGUMENT; malformed field type rejected")
def _(srv):
    b = bulk(srv)
    expect_status(SC.INVALID_ARGUMENT, get, b, "../x", if_match_sha256=sha256(b""))
    raw = channel(srv).unary_stream(BULK + "Get", request_serializer=lambda m: m,
                                    response_deserializer=lambda m: m)
    # GetRequest { name = "match/len"; if_match_sha256 as a varint }
    bad = b"\x0a\x09match/len" + b"\x28\x01"
    expect_status(SC.INVALID_ARGUMENT, lambda: list(raw(bad, timeout=30)))


# --- large ----------------------------------------------------------------------------------

@run.case("get: a 64 MiB object in default and 1 MiB chunks, every crc32c checked",
          group="large")
def _(srv):
    b = bulk(srv)
    size = 64 * MiB
    piece = pattern(MiB + 7, 41)  # not a multiple of the chunk sizes: chunks differ

    def body():
        left = size
        while left > 0:
            n = min(len(piece), left)
            yield piece[:n]
            left -= n

    data = b"".join(body())
    info = b.Put(iter([b.pb.PutRequest(header=b.pb.PutHeader(name="large/crc", size=size))] +
                      [b.pb.PutRequest(data=data[i:i + MiB]) for i in range(0, size, MiB)]),
                 timeout=240)
    check_eq(info.size, size, "Put size")
    for cs in (0, MiB):
        n = 0
        pos = 0
        for c in b.Get(b.pb.GetRequest(name="large/crc", chunk_size=cs,
                                       if_match_sha256=info.sha256), timeout=240):
            check_eq(c.offset, pos, "chunk %d offset" % n)
            if c.crc32c != crc32c(c.data):
                raise CaseFailure("chunk_size=%d chunk %d (offset %d): crc32c %#010x, want %#010x"
                                  % (cs, n, c.offset, c.crc32c, crc32c(c.data)))
            check(c.data == data[pos:pos + len(c.data)], "chunk %d data differs" % n)
            pos += len(c.data)
            n += 1
        check_eq(pos, size, "chunk_size=%d bytes" % cs)
        check_eq(n, size // (cs or 64 * KiB), "chunk_size=%d chunk count" % cs)


run.main()
