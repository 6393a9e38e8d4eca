#!/usr/bin/python3
"""End-to-end tests of ringstream.v1.Bulk (proto/bulk.proto) with the real gRPC client.

Groups: "core" (every method and every status code of the spec; fast enough for the
sanitizer build) and "concurrency" (many calls and channels at once).
Usage: test_bulk.py --server build/ringstreamd [--group core] [--only SUBSTRING]
"""

import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (MAX_MSG, Bulk, CaseFailure, TestRun, channel, check, check_eq,  # noqa: E402
                     expect_status, pb2, run_with_timeout, sha256)

SC = grpc.StatusCode
KiB = 1024
MiB = 1024 * 1024
T0_MS = int(time.time() * 1000)

run = TestRun("bulk")
_ch = None


def bulk(srv):
    """One shared channel for the sequential cases."""
    global _ch
    if _ch is None:
        _ch = Bulk(channel(srv))
    return _ch


def pattern(n, seed=0):
    """n deterministic bytes that differ from one seed to the next."""
    base = bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(4096))
    reps = n // len(base) + 1
    return (base * reps)[:n]


def check_info(info, name, data, what):
    check_eq(info.name, name, what + " name")
    check_eq(info.size, len(data), what + " size")
    check_eq(info.sha256, sha256(data), what + " sha256")
    now_ms = int(time.time() * 1000)
    check(T0_MS - 5000 <= info.modified_unix_ms <= now_ms + 5000,
          "%s modified_unix_ms %d not within the test run [%d, %d]"
          % (what, info.modified_unix_ms, T0_MS, now_ms))


def check_chunks(chunks, offset, total, chunk_size, data, what):
    """Chunks of a Get: consecutive offsets from `offset`, every chunk but the last exactly
    chunk_size, `total` bytes in all, equal to `data`."""
    pos = offset
    for i, c in enumerate(chunks):
        check_eq(c.offset, pos, "%s chunk %d offset" % (what, i))
        if i < len(chunks) - 1:
            check_eq(len(c.data), chunk_size, "%s chunk %d size" % (what, i))
        else:
            check(0 < len(c.data) <= chunk_size,
                  "%s last chunk has %d bytes (chunk size %d)" % (what, len(c.data), chunk_size))
        pos += len(c.data)
    check_eq(pos - offset, total, what + " bytes in total")
    got = b"".join(c.data for c in chunks)
    check(sha256(got) == sha256(data), what + ": data differs (SHA-256 mismatch)")


def header(name, size=0, sha=None, overwrite=False):
    pb = pb2()
    h = pb.PutHeader(name=name, size=size, overwrite=overwrite)
    if sha is not None:
        h.sha256 = sha
    return pb.PutRequest(header=h)


def data_msg(b):
    return pb2().PutRequest(data=b)


class Gate:
    """A request iterator that yields `first`, then waits (bounded) until released."""

    def __init__(self, first, after=(), wait_s=30.0):
        self.first = list(first)
        self.after = list(after)
        self.sent = threading.Event()
        self.release = threading.Event()
        self.wait_s = wait_s

    def __iter__(self):
        for m in self.first:
            yield m
        self.sent.set()
        self.release.wait(self.wait_s)
        for m in self.after:
            yield m


# --- Put / Get round trips ------------------------------------------------------------------

@run.case("put/get round trip of 0, 1, 65535, 65536, 65537 bytes (size and sha256 checked)")
def _(srv):
    b = bulk(srv)
    for n in (0, 1, 65535, 65536, 65537):
        name = "rt/checked-%d" % n
        data = pattern(n, n)
        info = b.put(name, data, chunk=32 * KiB, sha=sha256(data))
        check_info(info, name, data, "Put(%d)" % n)
        got = b.get(name)
        check_eq(len(got), n, "Get(%d) length" % n)
        check(sha256(got) == sha256(data), "Get(%d): SHA-256 of the bytes differs" % n)
        check_info(b.stat(name), name, data, "Stat(%d)" % n)


@run.case("put/get round trip with unknown size and no sha256")
def _(srv):
    b = bulk(srv)
    for n in (0, 1, 65535, 65536, 65537):
        name = "rt/unchecked-%d" % n
        data = pattern(n, n + 1)
        info = b.put(name, data, chunk=65536, size=0)
        check_info(info, name, data, "Put(%d)" % n)
        got = b.get(name)
        check(sha256(got) == sha256(data), "Get(%d): SHA-256 of the bytes differs" % n)


@run.case("put in odd chunkings: 100-byte chunks, one 3 MiB message, empty data messages")
def _(srv):
    b = bulk(srv)
    data = pattern(65537, 3)
    check_info(b.put("rt/small-chunks", data, chunk=100), "rt/small-chunks", data, "Put")
    check_eq(sha256(b.get("rt/small-chunks")), sha256(data), "Get sha256")
    big = pattern(3 * MiB, 4)
    check_info(b.put("rt/one-message", big, chunk=3 * MiB), "rt/one-message", big, "Put")
    check_eq(sha256(b.get("rt/one-message")), sha256(big), "Get sha256")
    # data="" is still a data part (oneof set); it adds nothing.
    reqs = [header("rt/empty-parts", 6, sha256(b"abcdef")), data_msg(b""), data_msg(b"abc"),
            data_msg(b""), data_msg(b"def")]
    info = b.Put(iter(reqs), timeout=30)
    check_info(info, "rt/empty-parts", b"abcdef", "Put")


# --- Get ranges -----------------------------------------------------------------------------

@run.case("get: default chunk size is 64 KiB, every chunk but the last full")
def _(srv):
    b = bulk(srv)
    data = pattern(300000, 9)
    b.put("range/obj", data, chunk=MiB)
    check_chunks(b.get_chunks("range/obj"), 0, len(data), 65536, data, "Get")
    exact = pattern(4 * 65536, 10)
    b.put("range/exact", exact)
    chunks = b.get_chunks("range/exact")
    check_eq(len(chunks), 4, "Get of 4 x 64 KiB: chunk count")
    check_chunks(chunks, 0, len(exact), 65536, exact, "Get")


@run.case("get: explicit chunk_size, offset and length")
def _(srv):
    b = bulk(srv)
    data = pattern(300000, 9)
    b.put("range/obj2", data, chunk=MiB)
    check_chunks(b.get_chunks("range/obj2", chunk_size=1000), 0, len(data), 1000, data,
                 "chunk_size=1000")
    c = b.get_chunks("range/obj2", offset=299990, chunk_size=1)
    check_chunks(c, 299990, 10, 1, data[299990:], "offset=299990 chunk_size=1")
    c = b.get_chunks("range/obj2", offset=1000, length=5000, chunk_size=4096)
    check_eq([len(x.data) for x in c], [4096, 904], "offset=1000 length=5000 chunk=4096 sizes")
    check_chunks(c, 1000, 5000, 4096, data[1000:6000], "offset=1000 length=5000")
    c = b.get_chunks("range/obj2", offset=100000)
    check_chunks(c, 100000, 200000, 65536, data[100000:], "offset=100000 to the end")
    c = b.get_chunks("range/obj2", offset=299000, length=5000)
    check_chunks(c, 299000, 1000, 65536, data[299000:], "range past the end is cut")
    c = b.get_chunks("range/obj2", offset=0, length=1)
    check_chunks(c, 0, 1, 65536, data[:1], "length=1")


@run.case("get: chunk_size above 1 MiB is cut to 1 MiB")
def _(srv):
    b = bulk(srv)
    data = pattern(2 * MiB + MiB // 2, 11)
    b.put("range/big", data, chunk=MiB)
    for cs in (2 * MiB, 0xFFFFFFFF, MiB + 1):
        c = b.get_chunks("range/big", chunk_size=cs)
        check_eq([len(x.data) for x in c], [MiB, MiB, MiB // 2], "chunk_size=%d sizes" % cs)
        check_chunks(c, 0, len(data), MiB, data, "chunk_size=%d" % cs)
    c = b.get_chunks("range/big", chunk_size=MiB)
    check_eq(len(c), 3, "chunk_size=1 MiB chunk count")


@run.case("get: offset == size sends nothing; offset > size is OUT_OF_RANGE")
def _(srv):
    b = bulk(srv)
    data = pattern(1000, 12)
    b.put("range/small", data)
    check_eq(b.get_chunks("range/small", offset=1000), [], "offset == size")
    check_eq(b.get_chunks("range/small", offset=1000, length=10), [], "offset == size, length 10")
    expect_status(SC.OUT_OF_RANGE, b.get_chunks, "range/small", offset=1001)
    expect_status(SC.OUT_OF_RANGE, b.get_chunks, "range/small", offset=1 << 62)
    b.put("range/empty", b"")
    check_eq(b.get_chunks("range/empty"), [], "Get of an empty object")
    check_eq(b.get_chunks("range/empty", chunk_size=7), [], "Get of an empty object, chunk 7")
    expect_status(SC.OUT_OF_RANGE, b.get_chunks, "range/empty", offset=1)


# --- existence, overwrite, not found --------------------------------------------------------

@run.case("put: ALREADY_EXISTS without overwrite, overwrite replaces")
def _(srv):
    b = bulk(srv)
    v1, v2, v3 = pattern(5000, 1), pattern(7000, 2), pattern(100, 3)
    b.put("exist/x", v1)
    expect_status(SC.ALREADY_EXISTS, b.put, "exist/x", v2)
    check_eq(sha256(b.get("exist/x")), sha256(v1), "content after ALREADY_EXISTS")
    check_info(b.stat("exist/x"), "exist/x", v1, "Stat after ALREADY_EXISTS")
    check_info(b.put("exist/x", v2, overwrite=True), "exist/x", v2, "overwrite Put")
    check_eq(sha256(b.get("exist/x")), sha256(v2), "content after overwrite")
    check_info(b.stat("exist/x"), "exist/x", v2, "Stat after overwrite")
    check_info(b.put("exist/x", v3, overwrite=True), "exist/x", v3, "second overwrite")
    check_eq(b.get("exist/x"), v3, "content after second overwrite")
    # overwrite=true on a new name simply creates it
    check_info(b.put("exist/new", v3, overwrite=True), "exist/new", v3, "overwrite of new name")


@run.case("put: ALREADY_EXISTS arrives as soon as the header does (before the upload ends)")
def _(srv):
    b = bulk(srv)
    b.put("exist/early", b"v1")
    gate = Gate([header("exist/early", 10 * MiB), data_msg(b"x" * 1000)],
                [data_msg(b"y" * 1000)], wait_s=20)
    fut = b.Put.future(iter(gate), timeout=30)
    try:
        t0 = time.monotonic()
        try:
            fut.result(timeout=10)
        except grpc.FutureTimeoutError:
            raise CaseFailure("no status within 10 s while the client kept the stream open")
        except grpc.RpcError as e:
            check_eq(e.code(), SC.ALREADY_EXISTS, "status")
        else:
            raise CaseFailure("want ALREADY_EXISTS, got OK")
        check(time.monotonic() - t0 < 10, "status came only after the upload ended")
    finally:
        gate.release.set()
        fut.cancel()
    check_eq(b.get("exist/early"), b"v1", "content unchanged")


@run.case("NOT_FOUND from Get, Stat and Delete")
def _(srv):
    b = bulk(srv)
    for fn, what in ((b.get_chunks, "Get"), (b.stat, "Stat"), (b.delete, "Delete")):
        e = expect_status(SC.NOT_FOUND, fn, "missing/nothing-here")
        check(e is not None, what)
    expect_status(SC.NOT_FOUND, b.get_chunks, "missing/x", offset=5)


# --- names ----------------------------------------------------------------------------------

BAD_NAMES = ["../x", "/etc/passwd", "", "a" * 256, "a//b", ".", "..", "a/./b", "a/../b", "a/",
             "x/..", "a b", "a\\b", "a\nb", "caf\u00e9", "a:b", "a*"]


@run.case("INVALID_ARGUMENT for bad names in Put, Get, Stat and Delete")
def _(srv):
    b = bulk(srv)
    for name in BAD_NAMES:
        what = "name %r" % (name if len(name) < 20 else name[:10] + "...(%d)" % len(name))
        for fn, args in ((b.put, (name, b"data")), (b.get_chunks, (name,)),
                         (b.stat, (name,)), (b.delete, (name,))):
            try:
                expect_status(SC.INVALID_ARGUMENT, fn, *args)
            except CaseFailure as e:
                raise CaseFailure("%s %s: %s" % (fn.__name__, what, e))


@run.case("valid edge names: 255 bytes, 'a' and 'a/b' coexist, every allowed character")
def _(srv):
    b = bulk(srv)
    long_name = "n/" + "z" * 253
    check_eq(len(long_name), 255, "test name length")
    check_info(b.put(long_name, b"long"), long_name, b"long", "Put 255-byte name")
    check_info(b.stat(long_name), long_name, b"long", "Stat 255-byte name")
    check_eq(b.get(long_name), b"long", "Get 255-byte name")
    seg = "s" * 100
    deep = "/".join([seg, seg, "t" * 53])
    check_eq(len(deep), 255, "test name length")
    check_info(b.put(deep, b"deep"), deep, b"deep", "Put 255-byte name with segments")
    check_info(b.put("co/a", b"A"), "co/a", b"A", "Put co/a")
    check_info(b.put("co/a/b", b"AB"), "co/a/b", b"AB", "Put co/a/b")
    check_info(b.put("co/a/b/c", b"ABC"), "co/a/b/c", b"ABC", "Put co/a/b/c")
    check_eq(b.get("co/a"), b"A", "Get co/a")
    check_eq(b.get("co/a/b"), b"AB", "Get co/a/b")
    check_eq(b.get("co/a/b/c"), b"ABC", "Get co/a/b/c")
    for name in ("x", "0", "-", "_", ".a", "a.", "...", "a..b", "A-Z_a-z.0-9",
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/x"):
        check_info(b.put("chars/" + name, name.encode()), "chars/" + name, name.encode(),
                   "Put %r" % name)
        check_eq(b.get("chars/" + name), name.encode(), "Get %r" % name)
    check_info(b.put("..a", b"1"), "..a", b"1", "Put '..a'")
    check_info(b.delete(long_name), long_name, b"long", "Delete 255-byte name")


# --- malformed Put streams ------------------------------------------------------------------

@run.case("INVALID_ARGUMENT for malformed Put streams, and nothing is stored")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    cases = [
        ("empty stream", []),
        ("first message is data", [data_msg(b"abc")]),
        ("first message is data, header later", [data_msg(b"abc"), header("bad/first")]),
        ("first message has no part", [pb.PutRequest(), data_msg(b"abc")]),
        ("second header", [header("bad/second"), data_msg(b"abc"), header("bad/second")]),
        ("second header right away", [header("bad/second2"), header("bad/second2")]),
        ("later message with no part", [header("bad/nopart"), data_msg(b"ab"), pb.PutRequest()]),
        ("sha256 of 5 bytes", [header("bad/sha5", 3, b"12345"), data_msg(b"abc")]),
        ("sha256 of 33 bytes", [header("bad/sha33", 3, b"x" * 33), data_msg(b"abc")]),
        ("sha256 of 5 bytes, header only", [header("bad/sha5h", 0, b"12345")]),
    ]
    for what, reqs in cases:
        try:
            expect_status(SC.INVALID_ARGUMENT, b.Put, iter(reqs), timeout=30)
        except CaseFailure as e:
            raise CaseFailure("%s: %s" % (what, e))
    for name in ("bad/first", "bad/second", "bad/second2", "bad/nopart", "bad/sha5",
                 "bad/sha33", "bad/sha5h"):
        expect_status(SC.NOT_FOUND, b.stat, name)
    check_eq([o.name for o in b.list("bad/")], [], "List bad/")


@run.case("DATA_LOSS for size or sha256 mismatch, and nothing is stored")
def _(srv):
    b = bulk(srv)
    data = pattern(100000, 5)
    cases = [
        ("size too large", "loss/big", dict(size=len(data) + 1)),
        ("size too small", "loss/small", dict(size=len(data) - 1)),
        ("size 1 for empty data", "loss/empty", dict(size=1)),
        ("sha256 mismatch", "loss/sha", dict(sha=sha256(data + b"!"))),
        ("sha256 ok, size wrong", "loss/both", dict(size=5, sha=sha256(data))),
    ]
    for what, name, kw in cases:
        d = b"" if name == "loss/empty" else data
        try:
            expect_status(SC.DATA_LOSS, b.put, name, d, **kw)
        except CaseFailure as e:
            raise CaseFailure("%s: %s" % (what, e))
        expect_status(SC.NOT_FOUND, b.stat, name)
        expect_status(SC.NOT_FOUND, b.get_chunks, name)
    # A failed overwrite leaves the old version in place.
    b.put("loss/keep", b"old version")
    expect_status(SC.DATA_LOSS, b.put, "loss/keep", data, sha=sha256(b"other"), overwrite=True)
    expect_status(SC.DATA_LOSS, b.put, "loss/keep", data, size=3, overwrite=True)
    check_eq(b.get("loss/keep"), b"old version", "content after failed overwrites")
    check_info(b.stat("loss/keep"), "loss/keep", b"old version", "Stat after failed overwrites")
    # DATA_LOSS wins over ALREADY_EXISTS only when the header check passed; an existing name
    # without overwrite is refused at the header already.
    check_eq([o.name for o in b.list("loss/")], ["loss/keep"], "List loss/")


@run.case("cancelled Put leaves no object; a cancelled overwrite keeps the old one")
def _(srv):
    b = bulk(srv)
    b.put("cancel/old", b"keep me")
    for name, overwrite in (("cancel/new", False), ("cancel/old", True)):
        gate = Gate([header(name, 10 * MiB, overwrite=overwrite)]
                    + [data_msg(pattern(64 * KiB, i)) for i in range(8)])
        fut = b.Put.future(iter(gate), timeout=60)
        try:
            check(gate.sent.wait(10), "client could not send the first 512 KiB")
            time.sleep(0.5)  # let the bytes reach the server
            check(not fut.done(), "Put %s ended before the client cancelled: %s"
                  % (name, fut.exception() if fut.done() else ""))
            fut.cancel()
        finally:
            gate.release.set()
        check(fut.cancelled() or (fut.code() == SC.CANCELLED),
              "client-side status after cancel: %s" % fut.code())
    time.sleep(0.3)
    expect_status(SC.NOT_FOUND, b.stat, "cancel/new")
    expect_status(SC.NOT_FOUND, b.get_chunks, "cancel/new")
    check_eq(b.get("cancel/old"), b"keep me", "content after cancelled overwrite")
    check_info(b.stat("cancel/old"), "cancel/old", b"keep me", "Stat after cancelled overwrite")


# --- List, Stat, Delete ---------------------------------------------------------------------

@run.case("List: prefix filter, ascending byte order, correct infos")
def _(srv):
    b = bulk(srv)
    names = ["list/b", "list/a", "list/a/b", "list/A", "list/a.b", "list/a-", "list/0", "list/_",
             "list/a/a", "list/aa", "list/Z", "list/z", "list/-"]
    contents = {}
    for i, n in enumerate(names):
        contents[n] = pattern(i * 10, i)
        b.put(n, contents[n])
    b.put("lisu", b"outside")
    b.put("lis", b"outside")
    got = b.list("list/")
    want = sorted(set(names), key=lambda s: s.encode())
    check_eq([o.name for o in got], want, "List('list/') names")
    for o in got:
        check_info(o, o.name, contents[o.name], "List entry %s" % o.name)
    check_eq([o.name for o in b.list("list/a")],
             [n for n in want if n.startswith("list/a")], "List('list/a')")
    check_eq([o.name for o in b.list("list/a/")], ["list/a/a", "list/a/b"], "List('list/a/')")
    check_eq(b.list("no-such-prefix/"), [], "List with no match")
    check_eq([o.name for o in b.list("list/aa")], ["list/aa"], "List exact name as prefix")
    everything = [o.name for o in b.list("")]
    check_eq(everything, sorted(everything, key=lambda s: s.encode()), "List('') order")
    for n in names + ["lisu", "lis"]:
        check(n in everything, "List('') misses %s" % n)
    check_eq(len(everything), len(set(everything)), "List('') has duplicates")
    for n in BAD_NAMES:
        check(n not in everything, "List('') shows the bad name %r" % n)
    # A prefix that is not a valid name is still fine (any bytes).
    check_eq([o.name for o in b.list("li")][:1], ["lis"], "List('li') first")
    check_eq(b.list("../"), [], "List('../')")


@run.case("Stat: name, size, sha256 and a plausible modified_unix_ms")
def _(srv):
    b = bulk(srv)
    data = pattern(12345, 77)
    before = int(time.time() * 1000)
    put = b.put("stat/obj", data)
    after = int(time.time() * 1000)
    st = b.stat("stat/obj")
    check_info(st, "stat/obj", data, "Stat")
    check(before - 2000 <= st.modified_unix_ms <= after + 2000,
          "modified_unix_ms %d not within the Put [%d, %d]" % (st.modified_unix_ms, before, after))
    check_eq(st.modified_unix_ms, put.modified_unix_ms, "Stat vs Put modified_unix_ms")
    time.sleep(0.05)
    put2 = b.put("stat/obj", data[:10], overwrite=True)
    st2 = b.stat("stat/obj")
    check_info(st2, "stat/obj", data[:10], "Stat after overwrite")
    check(st2.modified_unix_ms >= st.modified_unix_ms,
          "modified_unix_ms went back after overwrite")
    check_eq(st2.modified_unix_ms, put2.modified_unix_ms, "Stat vs Put modified_unix_ms")


@run.case("Delete returns the info, then the object is gone")
def _(srv):
    b = bulk(srv)
    data = pattern(70000, 8)
    put = b.put("del/obj", data)
    b.put("del/obj/child", b"child")
    info = b.delete("del/obj")
    check_info(info, "del/obj", data, "Delete")
    check_eq(info.modified_unix_ms, put.modified_unix_ms, "Delete modified_unix_ms")
    expect_status(SC.NOT_FOUND, b.stat, "del/obj")
    expect_status(SC.NOT_FOUND, b.get_chunks, "del/obj")
    expect_status(SC.NOT_FOUND, b.delete, "del/obj")
    check_eq(b.get("del/obj/child"), b"child", "'del/obj/child' survives deleting 'del/obj'")
    check_eq([o.name for o in b.list("del/")], ["del/obj/child"], "List after Delete")
    check_info(b.put("del/obj", b"again"), "del/obj", b"again", "Put after Delete")


@run.case("Get that overlaps an overwrite or a Delete returns the version current at its start")
def _(srv):
    b = bulk(srv)
    old = pattern(4 * MiB, 21)
    new = pattern(4 * MiB + 3, 22)
    for action in ("overwrite", "delete"):
        name = "mvcc/" + action
        b.put(name, old, chunk=MiB)
        it = b.Get(pb2().GetRequest(name=name, chunk_size=4096), timeout=60)
        first = next(it)
        if action == "overwrite":
            b.put(name, new, chunk=MiB, overwrite=True)
        else:
            b.delete(name)
        rest = b"".join(c.data for c in it)
        got = first.data + rest
        check_eq(len(got), len(old), action + ": length of the Get begun before")
        check(sha256(got) == sha256(old), action + ": Get mixed versions (SHA-256 mismatch)")
    check_eq(sha256(b.get("mvcc/overwrite")), sha256(new), "new version after the Get")


# --- Echo -----------------------------------------------------------------------------------

@run.case("Echo is full duplex: chunk k+1 is sent only after echo k came back")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    sizes = [1, 10, 1000, 16384, 65535, 65536, 65537, 300000, 1 * MiB, 7]
    got_echo = queue.Queue()
    errors = []

    def requests():
        for k, n in enumerate(sizes):
            if k > 0:
                try:
                    got_echo.get(timeout=10)
                except queue.Empty:
                    errors.append("echo %d did not arrive within 10 s while the stream was "
                                  "open (server is not full duplex?)" % (k - 1))
                    return
            # The client's offset is nonsense on purpose: the server sets it.
            yield pb.Chunk(data=pattern(n, k), offset=987654321)

    def body():
        pos = 0
        count = 0
        for k, c in enumerate(b.Echo(requests(), timeout=60)):
            check(k < len(sizes), "more echoes than chunks")
            check_eq(len(c.data), sizes[k], "echo %d size" % k)
            check(c.data == pattern(sizes[k], k), "echo %d data differs" % k)
            check_eq(c.offset, pos, "echo %d offset" % k)
            pos += sizes[k]
            count += 1
            got_echo.put(k)
        return count

    count = run_with_timeout(body, 90, "Echo")
    if errors:
        raise CaseFailure(errors[0])
    check_eq(count, len(sizes), "echo count")


@run.case("Echo: an empty chunk comes back empty; a message just under the max comes back")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    reqs = [pb.Chunk(data=b"ab"), pb.Chunk(data=b""), pb.Chunk(data=b"cde")]
    got = list(b.Echo(iter(reqs), timeout=30))
    check_eq([(c.data, c.offset) for c in got], [(b"ab", 0), (b"", 2), (b"cde", 2)], "echoes")
    big = pattern(MAX_MSG - 64, 5)
    check(len(pb.Chunk(data=big).SerializeToString()) <= MAX_MSG, "test message too large")
    got = list(b.Echo(iter([pb.Chunk(data=big), pb.Chunk(data=b"z")]), timeout=60))
    check_eq(len(got), 2, "echo count")
    check(got[0].data == big, "big echo data differs")
    check_eq((got[1].data, got[1].offset), (b"z", len(big)), "echo after the big one")
    check_eq(list(b.Echo(iter([]), timeout=30)), [], "Echo of an empty stream")


# --- limits and unknown methods -------------------------------------------------------------

@run.case("RESOURCE_EXHAUSTED for a request message over 4 MiB; the channel keeps working")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    over = b"o" * (MAX_MSG + 1)
    expect_status(SC.RESOURCE_EXHAUSTED, b.Put,
                  iter([header("limit/put", len(over)), data_msg(over)]), timeout=60)
    expect_status(SC.NOT_FOUND, b.stat, "limit/put")
    expect_status(SC.RESOURCE_EXHAUSTED, b.Echo, iter([pb.Chunk(data=over)]), timeout=60)
    # exactly at the limit is fine: the serialized message is MAX_MSG bytes
    data_len = MAX_MSG - 5   # 1 tag byte + 4 length-varint bytes
    msg = pb.PutRequest(data=b"e" * data_len)
    check_eq(len(msg.SerializeToString()), MAX_MSG, "test message size")
    info = b.Put(iter([header("limit/exact", data_len), msg]), timeout=60)
    check_eq(info.size, data_len, "size of a Put with a MAX_MSG message")
    check_eq(b.stat("limit/exact").size, data_len, "Stat after the error")


@run.case("UNIMPLEMENTED for an unknown method and an unknown service")
def _(srv):
    ch = bulk(srv).channel
    for path in ("/ringstream.v1.Bulk/Nope", "/ringstream.v1.Nope/Get", "/nope.Svc/Put",
                 "/ringstream.v1.Bulk/get", "/ringstream.v1.Bulk/Get/x"):
        uu = ch.unary_unary(path)
        try:
            expect_status(SC.UNIMPLEMENTED, uu, b"\x0a\x01x", timeout=10)
            ss = ch.stream_stream(path)
            expect_status(SC.UNIMPLEMENTED, ss, iter([b"", b"\x0a\x01x"]), timeout=10)
        except CaseFailure as e:
            raise CaseFailure("%s: %s" % (path, e))
    expect_status(SC.NOT_FOUND, bulk(srv).stat, "still/serving")


# --- the data dir ---------------------------------------------------------------------------

@run.case("failed and cancelled calls leave no file behind in the data dir")
def _(srv):
    b = bulk(srv)
    b.put("stray/exists", b"here")
    before = srv.files()
    data = pattern(200000, 1)
    expect_status(SC.DATA_LOSS, b.put, "stray/a", data, size=1)
    expect_status(SC.DATA_LOSS, b.put, "stray/b", data, sha=sha256(b"x"))
    expect_status(SC.DATA_LOSS, b.put, "stray/exists", data, size=1, overwrite=True)
    expect_status(SC.ALREADY_EXISTS, b.put, "stray/exists", data)
    expect_status(SC.INVALID_ARGUMENT, b.put, "../stray", data)
    expect_status(SC.INVALID_ARGUMENT, b.Put, iter([header("stray/c"), header("stray/c")]),
                  timeout=30)
    expect_status(SC.RESOURCE_EXHAUSTED, b.Put,
                  iter([header("stray/d"), data_msg(b"1" * 1000), data_msg(b"o" * (MAX_MSG + 1))]),
                  timeout=60)
    gate = Gate([header("stray/e", 1 << 30), data_msg(data), data_msg(data)])
    fut = b.Put.future(iter(gate), timeout=60)
    try:
        check(gate.sent.wait(10), "client could not send")
        time.sleep(0.3)
        fut.cancel()
    finally:
        gate.release.set()
    time.sleep(0.5)
    after = srv.files()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    check(not added and not removed and not changed,
          "data dir changed: added %s, removed %s, changed %s" % (added, removed, changed))
    for n in ("stray/a", "stray/b", "stray/c", "stray/d", "stray/e"):
        expect_status(SC.NOT_FOUND, b.stat, n)
    check_eq(b.get("stray/exists"), b"here", "existing object")


@run.case("deleting every object leaves the data dir with no object files")
def _(srv):
    b = bulk(srv)
    for i in range(3):   # on top of whatever the earlier cases stored
        b.put("cleanup/%d" % i, pattern(1000 * i, i), overwrite=True)
    objs = b.list("")
    check(len(objs) >= 3, "List shows %d objects, want at least 3" % len(objs))
    for o in objs:
        b.delete(o.name)
    check_eq(b.list(""), [], "List after deleting everything")
    extra = sorted(set(srv.files()) - set(srv.initial_files))
    check(not extra, "%d files remain in the data dir after deleting every object "
          "(beyond those present at startup): %s" % (len(extra), extra[:10]))


# --- concurrency ----------------------------------------------------------------------------

@run.case("50 concurrent calls on one channel", group="concurrency")
def _(srv):
    b = Bulk(channel(srv))
    pb = pb2()
    n = 50
    start = threading.Barrier(n, timeout=30)

    def worker(i):
        data = pattern(100 * KiB + i, i)
        name = "conc/one/%02d" % i
        start.wait()
        if i % 5 == 4:  # some Echo calls in the mix
            reqs = [pb.Chunk(data=data[j:j + 8192]) for j in range(0, len(data), 8192)]
            got = b"".join(c.data for c in b.Echo(iter(reqs), timeout=60))
            check(got == data, "echo %d differs" % i)
            return
        info = b.put(name, data, chunk=16 * KiB, sha=sha256(data))
        check_info(info, name, data, "Put %d" % i)
        got = b.get(name, chunk_size=10000)
        check(sha256(got) == sha256(data), "Get %d: SHA-256 mismatch" % i)
        check_info(b.stat(name), name, data, "Stat %d" % i)

    with ThreadPoolExecutor(max_workers=n) as ex:
        futs = [ex.submit(worker, i) for i in range(n)]
        for f in futs:
            f.result(timeout=120)
    listed = [o.name for o in b.list("conc/one/")]
    check_eq(len(listed), 40, "objects listed")
    b.channel.close()


@run.case("50 concurrent Put futures on one channel", group="concurrency")
def _(srv):
    b = Bulk(channel(srv))
    datas = [pattern(64 * KiB + 3 * i, 100 + i) for i in range(50)]
    futs = [b.Put.future(b.put_requests("conc/fut/%02d" % i, d, chunk=4096), timeout=120)
            for i, d in enumerate(datas)]
    for i, f in enumerate(futs):
        check_info(f.result(), "conc/fut/%02d" % i, datas[i], "Put %d" % i)
    for i, d in enumerate(datas):
        check(sha256(b.get("conc/fut/%02d" % i)) == sha256(d), "Get %d: SHA-256 mismatch" % i)
    b.channel.close()


@run.case("4 channels at once", group="concurrency")
def _(srv):
    pb = pb2()

    def worker(c):
        b = Bulk(channel(srv))
        try:
            for r in range(5):
                data = pattern(MiB + r * 1000 + c, c * 10 + r)
                name = "conc/ch%d/%d" % (c, r)
                check_info(b.put(name, data, chunk=256 * KiB), name, data, name)
                check(sha256(b.get(name)) == sha256(data), name + ": SHA-256 mismatch")
            data = pattern(2 * MiB, c)
            reqs = (pb.Chunk(data=data[j:j + 65536]) for j in range(0, len(data), 65536))
            pos = 0
            for e in b.Echo(reqs, timeout=60):
                check_eq(e.offset, pos, "channel %d echo offset" % c)
                pos += len(e.data)
            check_eq(pos, len(data), "channel %d echo bytes" % c)
        finally:
            b.channel.close()

    with ThreadPoolExecutor(max_workers=4) as ex:
        for f in [ex.submit(worker, c) for c in range(4)]:
            f.result(timeout=180)


@run.case("concurrent Puts of one new name without overwrite: exactly one wins",
          group="concurrency")
def _(srv):
    b = Bulk(channel(srv))
    n = 8
    gates = []
    futs = []
    for i in range(n):
        d = pattern(50000, 200 + i)
        g = Gate([header("race/one", len(d), sha256(d)), data_msg(d[:1000])], [data_msg(d[1000:])])
        gates.append((g, d))
        futs.append(b.Put.future(iter(g), timeout=60))
    try:
        for g, _d in gates:
            check(g.sent.wait(10), "client could not send")
        time.sleep(0.5)  # every header has arrived; none is published yet
    finally:
        for g, _d in gates:
            g.release.set()
    ok, exists = [], 0
    for i, f in enumerate(futs):
        try:
            ok.append((i, f.result()))
        except grpc.RpcError as e:
            check_eq(e.code(), SC.ALREADY_EXISTS, "Put %d status" % i)
            exists += 1
    check_eq(len(ok), 1, "number of successful Puts")
    check_eq(exists, n - 1, "number of ALREADY_EXISTS")
    winner, info = ok[0]
    check_eq(info.sha256, sha256(gates[winner][1]), "winner's info")
    check(sha256(b.get("race/one")) == sha256(gates[winner][1]), "stored data is not the winner's")
    b.channel.close()


if __name__ == "__main__":
    run.main()
