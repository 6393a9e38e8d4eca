#!/usr/bin/python3
"""End-to-end tests of the write side of the grown Bulk contract (proto/bulk.proto):
resumable uploads (StartUpload / Upload / QueryUpload / AbortUpload), checked_data (CRC32C)
on Put and Upload, and if_match_sha256 (compare-and-swap) on Put and StartUpload.

Cases that need their own server (restart, kill -9, a short --upload-ttl, a small
--max-uploads) start one on a free 127.0.0.1 port and always stop it; the rest share one.

Usage: test_upload.py --server build/ringstreamd [--only SUBSTRING]
"""

import os
import random
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BULK, CALL_TIMEOUT_S, Bulk, CaseFailure, Server, TestRun, channel,  # noqa: E402
                     check, check_eq, expect_status, pb2, sha256)

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
POLL_S = 15.0  # bound of every wait for the server to settle or expire something

run = TestRun("upload", server_args=["--max-uploads", "64"])

# --- CRC32C (Castagnoli), table-driven; the test's own, independent of the server's ---------

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# --- stubs and helpers ------------------------------------------------------------------------

class Up(Bulk):
    def __init__(self, ch):
        super().__init__(ch)
        pb = self.pb
        self.StartUpload = ch.unary_unary(BULK + "StartUpload",
                                          request_serializer=pb.PutHeader.SerializeToString,
                                          response_deserializer=pb.UploadStatus.FromString)
        self.Upload = ch.stream_unary(BULK + "Upload",
                                      request_serializer=pb.UploadRequest.SerializeToString,
                                      response_deserializer=pb.UploadStatus.FromString)
        self.QueryUpload = ch.unary_unary(BULK + "QueryUpload",
                                          request_serializer=pb.UploadRef.SerializeToString,
                                          response_deserializer=pb.UploadStatus.FromString)
        self.AbortUpload = ch.unary_unary(BULK + "AbortUpload",
                                          request_serializer=pb.UploadRef.SerializeToString,
                                          response_deserializer=pb.UploadStatus.FromString)

    def start(self, name, size=0, sha=None, overwrite=False, if_match=None):
        h = self.pb.PutHeader(name=name, size=size, overwrite=overwrite)
        if sha is not None:
            h.sha256 = sha
        if if_match is not None:
            h.if_match_sha256 = if_match
        return self.StartUpload(h, timeout=CALL_TIMEOUT_S)

    def reqs(self, uid, data, offset, finish=False, crc=False, chunk=CHUNK):
        pb = self.pb
        if not data:
            yield pb.UploadRequest(upload_id=uid, write_offset=offset, finish=finish)
            return
        for i in range(0, len(data), chunk):
            piece = data[i:i + chunk]
            r = pb.UploadRequest(upload_id=uid, write_offset=offset if i == 0 else 0)
            if crc:
                r.checked_data.data = piece
                r.checked_data.crc32c = crc32c(piece)
            else:
                r.data = piece
            if finish and i + chunk >= len(data):
                r.finish = True
            yield r

    def upload(self, uid, data, offset, finish=False, crc=False):
        return self.Upload(self.reqs(uid, data, offset, finish, crc), timeout=CALL_TIMEOUT_S)

    def query(self, uid):
        return self.QueryUpload(self.pb.UploadRef(upload_id=uid), timeout=CALL_TIMEOUT_S)

    def abort(self, uid):
        return self.AbortUpload(self.pb.UploadRef(upload_id=uid), timeout=CALL_TIMEOUT_S)

    def put_crc(self, name, pieces, bad=None, overwrite=False, if_match=None):
        """Put with checked_data; piece number |bad| gets a wrong CRC."""
        pb = self.pb
        hdr = pb.PutHeader(name=name, overwrite=overwrite)
        if if_match is not None:
            hdr.if_match_sha256 = if_match

        def gen():
            yield pb.PutRequest(header=hdr)
            for i, p in enumerate(pieces):
                r = pb.PutRequest()
                r.checked_data.data = p
                r.checked_data.crc32c = crc32c(p) ^ (1 if i == bad else 0)
                yield r
        return self.Put(gen(), timeout=CALL_TIMEOUT_S)

    def put_if(self, name, data, if_match, overwrite=False):
        pb = self.pb

        def gen():
            hdr = pb.PutHeader(name=name, size=len(data), overwrite=overwrite)
            hdr.if_match_sha256 = if_match
            yield pb.PutRequest(header=hdr)
            for i in range(0, len(data), CHUNK):
                yield pb.PutRequest(data=data[i:i + CHUNK])
        return self.Put(gen(), timeout=CALL_TIMEOUT_S)


def rnd(n, seed):
    return random.Random(seed).randbytes(n)


def poll(fn, what, timeout=POLL_S):
    """Calls fn() until it returns a true value (returned), at most |timeout| seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise CaseFailure("%s: not within %.0f s" % (what, timeout))
        time.sleep(0.05)


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def upload_files(srv):
    return sorted(k for k in srv.files() if k.startswith("uploads/"))


def check_object(b, name, data):
    got = b.get(name)
    check_eq(len(got), len(data), "size of %s" % name)
    check(sha256(got) == sha256(data), "SHA-256 of %s differs" % name)
    check_eq(b.stat(name).sha256, sha256(data), "Stat sha256 of %s" % name)


class Held:
    """An Upload stream that sends |first| and then waits until release() (or cancel())."""

    def __init__(self, b, uid, first, offset, rest=b"", finish=False):
        self.ev = threading.Event()
        self.b = b

        def gen():
            for r in b.reqs(uid, first, offset):
                yield r
            self.ev.wait(POLL_S * 2)
            if rest or finish:
                for r in b.reqs(uid, rest, 0, finish=finish):
                    yield r
        self.fut = b.Upload.future(gen(), timeout=CALL_TIMEOUT_S)

    def release(self):
        self.ev.set()
        return self.fut.result(CALL_TIMEOUT_S)

    def cancel(self):
        self.fut.cancel()
        self.ev.set()


class Bystander:
    """Another client doing Put + Get round trips on its own connection until stop(); every
    one must succeed. Shows the uploads under test never stall or fail anyone else."""

    def __init__(self, srv, tag):
        self.b = Up(channel(srv))
        self.stop_ev = threading.Event()
        self.errors = []
        self.rounds = 0
        self.t = threading.Thread(target=self._run, args=(tag,), daemon=True)
        self.t.start()

    def _run(self, tag):
        i = 0
        while not self.stop_ev.is_set() and i < 10000:
            data = rnd(256 * KiB, 1000 + i)
            name = "bystander/%s/%d" % (tag, i % 4)
            try:
                self.b.put(name, data, overwrite=True, timeout=30)
                if self.b.get(name, timeout=30) != data:
                    self.errors.append("round %d: Get returned other bytes" % i)
            except grpc.RpcError as e:
                self.errors.append("round %d: %s %s" % (i, e.code().name, e.details()))
            i += 1
            self.rounds = i

    def stop(self):
        self.stop_ev.set()
        self.t.join(60)
        check(not self.t.is_alive(), "bystander did not stop")
        check(not self.errors, "bystander failures: %r" % self.errors[:3])
        check(self.rounds > 0, "bystander made no round trip")


def wait_busy(b, uid):
    """Until a second Upload on |uid| is refused with ABORTED (the held stream has it)."""
    def probe():
        c = code_of(lambda: b.upload(uid, b"", b.query(uid).persisted_size))
        if c not in (grpc.StatusCode.ABORTED, grpc.StatusCode.OK):
            raise CaseFailure("probe Upload: %s" % c.name)
        return c == grpc.StatusCode.ABORTED
    poll(probe, "the held Upload stream taking the upload")


# --- cases on the shared server -------------------------------------------------------------

@run.case("upload in pieces, cancel, query, resume, finish, get")
def _(srv):
    by = Bystander(srv, "resume")
    b = Up(channel(srv))
    data = rnd(3 * MiB + 12345, 1)
    st = b.start("up/a", size=len(data), sha=sha256(data))
    uid = st.upload_id
    check_eq(len(uid), 32, "upload_id length")
    check_eq(st.persisted_size, 0, "persisted_size at start")
    check(st.expires_unix_ms > time.time() * 1000, "expires_unix_ms in the future")
    check(not st.HasField("object"), "no object yet")
    # piece 1: a clean stream without finish
    st = b.upload(uid, data[:MiB], 0)
    check_eq(st.persisted_size, MiB, "persisted after piece 1")
    check_eq(b.query(uid).persisted_size, MiB, "QueryUpload after piece 1")
    # piece 2: a stream cancelled after some messages
    h = Held(b, uid, data[MiB:MiB + 512 * KiB], MiB)
    wait_busy(b, uid)
    h.cancel()
    p = poll(lambda: (lambda q: q if q.persisted_size > MiB and code_of(
        lambda: b.upload(uid, b"", q.persisted_size)) == grpc.StatusCode.OK else None)(b.query(uid)),
        "bytes of the cancelled stream kept").persisted_size
    check(p <= MiB + 512 * KiB, "persisted_size %d beyond what was sent" % p)
    # wrong write_offset: FAILED_PRECONDITION naming persisted_size
    e = expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.upload, uid, data[p - 10:p + 10], p - 10)
    check(str(p) in e.details(), "message names persisted_size %d: %r" % (p, e.details()))
    check_eq(b.query(uid).persisted_size, p, "persisted after a refused offset")
    # the rest, with finish
    st = b.upload(uid, data[p:], p, finish=True)
    check(st.HasField("object"), "finish answers the object")
    check_eq(st.object.sha256, sha256(data), "object sha256")
    check_eq(st.object.size, len(data), "object size")
    check_object(b, "up/a", data)
    q = b.query(uid)
    check(q.HasField("object") and q.object.name == "up/a", "QueryUpload after publish has the object")
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.upload, uid, b"x", len(data))
    poll(lambda: not upload_files(srv), "uploads/ emptied after publish")
    by.stop()


@run.case("checked_data on Upload: good pieces, then a CRC mismatch")
def _(srv):
    b = Up(channel(srv))
    data = rnd(300 * KiB, 2)
    uid = b.start("up/crc").upload_id
    st = b.upload(uid, data[:100 * KiB], 0, crc=True)
    check_eq(st.persisted_size, 100 * KiB, "persisted after checked pieces")

    def gen():
        pb = b.pb
        r = pb.UploadRequest(upload_id=uid, write_offset=100 * KiB)
        r.checked_data.data = data[100 * KiB:150 * KiB]
        r.checked_data.crc32c = crc32c(data[100 * KiB:150 * KiB])
        yield r
        r = pb.UploadRequest(upload_id=uid)
        r.checked_data.data = data[150 * KiB:200 * KiB]
        r.checked_data.crc32c = crc32c(data[150 * KiB:200 * KiB]) ^ 0x10
        yield r
    e = expect_status(grpc.StatusCode.DATA_LOSS, b.Upload, gen(), timeout=CALL_TIMEOUT_S)
    check(str(150 * KiB) in e.details(), "DATA_LOSS names offset %d: %r" % (150 * KiB, e.details()))
    check_eq(b.query(uid).persisted_size, 150 * KiB, "the upload keeps what came before")
    expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "up/crc")
    st = b.upload(uid, data[150 * KiB:], 150 * KiB, finish=True, crc=True)
    check_eq(st.object.sha256, sha256(data), "sha256 after resume")
    check_object(b, "up/crc", data)


@run.case("checked_data on Put: good, CRC mismatch names the offset and publishes nothing")
def _(srv):
    b = Up(channel(srv))
    pieces = [rnd(CHUNK, 10 + i) for i in range(4)]
    info = b.put_crc("crc/ok", pieces)
    check_eq(info.sha256, sha256(b"".join(pieces)), "checked Put sha256")
    e = expect_status(grpc.StatusCode.DATA_LOSS, b.put_crc, "crc/bad", pieces, bad=2)
    check(str(2 * CHUNK) in e.details(), "DATA_LOSS names offset %d: %r" % (2 * CHUNK, e.details()))
    expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "crc/bad")
    # an overwrite that fails its CRC leaves the old version
    expect_status(grpc.StatusCode.DATA_LOSS, b.put_crc, "crc/ok", [b"zz", b"yy"], bad=1, overwrite=True)
    check_object(b, "crc/ok", b"".join(pieces))
    # plain data still works, and mixed
    b.put("crc/plain", b"plain bytes")
    check_eq(b.get("crc/plain"), b"plain bytes", "plain Put")


@run.case("if_match_sha256 on Put: match, mismatch, missing object, bad length")
def _(srv):
    b = Up(channel(srv))
    v1, v2 = rnd(1000, 20), rnd(2000, 21)
    b.put("cas/p", v1)
    info = b.put_if("cas/p", v2, sha256(v1))
    check_eq(info.sha256, sha256(v2), "CAS Put publishes")
    e = expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.put_if, "cas/p", v1, sha256(v1))
    check(sha256(v2).hex() in e.details(), "message names the current SHA-256: %r" % e.details())
    check_object(b, "cas/p", v2)
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.put_if, "cas/none", v1, sha256(v1))
    expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "cas/none")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.put_if, "cas/p", v1, b"12345")
    check_object(b, "cas/p", v2)


@run.case("if_match_sha256 on Put: concurrent CAS from one base, exactly one wins")
def _(srv):
    base = rnd(100, 30)
    by = Bystander(srv, "cas")
    b0 = Up(channel(srv))
    for rnd_no in range(3):
        name = "cas/race%d" % rnd_no
        b0.put(name, base, overwrite=True)
        n = 6
        datas = [rnd(700 * KiB, 100 * rnd_no + i) for i in range(n)]
        results = [None] * n
        chans = [channel(srv) for _ in range(n)]
        go = threading.Event()

        def worker(i):
            bb = Up(chans[i])
            go.wait(10)
            results[i] = code_of(lambda: bb.put_if(name, datas[i], sha256(base)))
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        go.set()
        for t in ts:
            t.join(CALL_TIMEOUT_S)
        oks = [i for i in range(n) if results[i] == grpc.StatusCode.OK]
        others = [results[i] for i in range(n) if results[i] != grpc.StatusCode.OK]
        check_eq(len(oks), 1, "winners of the CAS race (results %r)" % results)
        check(all(c == grpc.StatusCode.FAILED_PRECONDITION for c in others),
              "losers get FAILED_PRECONDITION: %r" % results)
        check_object(b0, name, datas[oks[0]])
        for c in chans:
            c.close()
    by.stop()


@run.case("StartUpload checks: names, ALREADY_EXISTS, sha256 and if_match lengths, if_match")
def _(srv):
    b = Up(channel(srv))
    v1 = rnd(5000, 40)
    b.put("su/x", v1)
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.start, "/bad")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.start, "")
    expect_status(grpc.StatusCode.ALREADY_EXISTS, b.start, "su/x")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.start, "su/y", sha=b"short")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.start, "su/x", if_match=b"x" * 31)
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.start, "su/x", if_match=sha256(b"other"))
    expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.start, "su/none", if_match=sha256(v1))
    # a matching if_match: the upload publishes over v1 ...
    v2 = rnd(3000, 41)
    uid = b.start("su/x", if_match=sha256(v1)).upload_id
    b.upload(uid, v2[:1000], 0)
    # ... unless the object changes in between: checked again at publish
    uid2 = b.start("su/x", if_match=sha256(v1)).upload_id
    st = b.upload(uid, v2[1000:], 1000, finish=True)
    check_eq(st.object.sha256, sha256(v2), "CAS upload published")
    e = expect_status(grpc.StatusCode.FAILED_PRECONDITION, b.upload, uid2, v1, 0, finish=True)
    check("SHA-256" in e.details(), "publish-time if_match message: %r" % e.details())
    expect_status(grpc.StatusCode.NOT_FOUND, b.query, uid2)  # a failed finish ends the upload
    check_object(b, "su/x", v2)
    # overwrite=true on an existing name is fine
    uid3 = b.start("su/x", overwrite=True).upload_id
    b.upload(uid3, b"three", 0, finish=True)
    check_eq(b.get("su/x"), b"three", "overwrite upload")


@run.case("finish with a wrong SHA-256 or size: DATA_LOSS, upload discarded, nothing published")
def _(srv):
    b = Up(channel(srv))
    data = rnd(200 * KiB, 50)
    uid = b.start("fin/sha", sha=sha256(b"something else")).upload_id
    b.upload(uid, data[:100 * KiB], 0)
    e = expect_status(grpc.StatusCode.DATA_LOSS, b.upload, uid, data[100 * KiB:], 100 * KiB, finish=True)
    check("SHA-256" in e.details(), "DATA_LOSS names the hash: %r" % e.details())
    expect_status(grpc.StatusCode.NOT_FOUND, b.query, uid)
    expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "fin/sha")
    poll(lambda: ("uploads/" + uid) not in srv.files(), "the discarded upload's file removed")
    uid = b.start("fin/size", size=10).upload_id
    expect_status(grpc.StatusCode.DATA_LOSS, b.upload, uid, b"12345", 0, finish=True)
    expect_status(grpc.StatusCode.NOT_FOUND, b.query, uid)
    uid = b.start("fin/size", size=10).upload_id
    expect_status(grpc.StatusCode.DATA_LOSS, b.upload, uid, b"12345678901", 0)
    check_eq(b.query(uid).persisted_size, 0, "too much data keeps nothing of that message")


@run.case("AbortUpload, unknown ids, message after finish, id change in a stream")
def _(srv):
    b = Up(channel(srv))
    pb = b.pb
    uid = b.start("ab/a").upload_id
    b.upload(uid, b"x" * 5000, 0)
    st = b.abort(uid)
    check_eq(st.persisted_size, 5000, "AbortUpload returns the last status")
    expect_status(grpc.StatusCode.NOT_FOUND, b.query, uid)
    expect_status(grpc.StatusCode.NOT_FOUND, b.abort, uid)
    expect_status(grpc.StatusCode.NOT_FOUND, b.upload, uid, b"x", 5000)
    poll(lambda: ("uploads/" + uid) not in srv.files(), "the aborted upload's file removed")
    expect_status(grpc.StatusCode.NOT_FOUND, b.query, "0" * 32)
    expect_status(grpc.StatusCode.NOT_FOUND, b.query, "not-an-id")
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.query, "")
    expect_status(grpc.StatusCode.NOT_FOUND, b.upload, "f" * 32, b"x", 0)
    # a message after the one with finish
    uid = b.start("ab/b").upload_id
    reqs = [pb.UploadRequest(upload_id=uid, data=b"abc", finish=True),
            pb.UploadRequest(upload_id=uid, data=b"def")]
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.Upload, iter(reqs), timeout=CALL_TIMEOUT_S)
    expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "ab/b")
    check_eq(b.query(uid).persisted_size, 3, "bytes before the bad message kept")
    # the upload_id changes within a stream
    uid2 = b.start("ab/c").upload_id
    reqs = [pb.UploadRequest(upload_id=uid, write_offset=3, data=b"ghi"),
            pb.UploadRequest(upload_id=uid2, data=b"jkl")]
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.Upload, iter(reqs), timeout=CALL_TIMEOUT_S)
    check_eq(b.query(uid).persisted_size, 6, "first id kept its bytes")
    check_eq(b.query(uid2).persisted_size, 0, "second id untouched")
    # an empty Upload stream
    expect_status(grpc.StatusCode.INVALID_ARGUMENT, b.Upload, iter([]), timeout=CALL_TIMEOUT_S)
    st = b.upload(uid, b"", 6, finish=True)
    check_eq(b.get("ab/b"), b"abcghi", "resumed after the errors")
    b.abort(uid2)


@run.case("concurrent Upload gets ABORTED; a bystander Put works meanwhile")
def _(srv):
    b = Up(channel(srv))
    other = Up(channel(srv))
    data = rnd(2 * MiB, 60)
    uid = b.start("cc/a", size=len(data)).upload_id
    h = Held(b, uid, data[:MiB], 0, rest=data[MiB:], finish=True)
    wait_busy(other, uid)
    e = expect_status(grpc.StatusCode.ABORTED, other.upload, uid, b"zz", 0)
    check("another" in e.details(), "ABORTED message: %r" % e.details())
    expect_status(grpc.StatusCode.ABORTED, other.abort, uid)
    by = rnd(3 * MiB, 61)
    other.put("cc/bystander", by)
    check_object(other, "cc/bystander", by)
    st = h.release()
    check_eq(st.object.sha256, sha256(data), "held stream published")
    check_object(b, "cc/a", data)


# --- cases with their own server -------------------------------------------------------------

def own_server(srv, args=(), data_dir=None):
    s = Server(srv.binary, list(args), data_dir=data_dir)
    s.start()
    return s


@run.case("restart the server mid-upload, then resume and finish")
def _(srv):
    d = os.path.join(srv._tmp, "restart-data")
    os.mkdir(d)
    data = rnd(2 * MiB + 777, 70)
    s = own_server(srv, data_dir=d)
    try:
        b = Up(channel(s))
        uid = b.start("rs/a", size=len(data), sha=sha256(data)).upload_id
        b.upload(uid, data[:MiB + 5], 0)
        problems = s.stop()
        check(not problems, "clean stop: %r" % problems)
        s = own_server(srv, data_dir=d)
        b = Up(channel(s))
        check_eq(b.query(uid).persisted_size, MiB + 5, "persisted after restart")
        st = b.upload(uid, data[MiB + 5:], MiB + 5, finish=True)
        check_eq(st.object.sha256, sha256(data), "sha256 after restart")
        check_object(b, "rs/a", data)
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)


@run.case("kill -9 mid-upload, then resume from what survived")
def _(srv):
    d = os.path.join(srv._tmp, "kill-data")
    os.mkdir(d)
    data = rnd(3 * MiB, 80)
    s = own_server(srv, data_dir=d)
    try:
        b = Up(channel(s))
        uid = b.start("k9/a", size=len(data), sha=sha256(data)).upload_id
        b.upload(uid, data[:512 * KiB], 0)
        h = Held(b, uid, data[512 * KiB:2 * MiB], 512 * KiB)
        wait_busy(Up(channel(s)), uid)
        s.kill9()
        h.cancel()
        s = own_server(srv, data_dir=d)
        b = Up(channel(s))
        p = b.query(uid).persisted_size
        check(512 * KiB <= p <= 2 * MiB, "persisted_size %d after kill -9" % p)
        st = b.upload(uid, data[p:], p, finish=True)
        check_eq(st.object.sha256, sha256(data), "sha256 of the resumed object")
        check_object(b, "k9/a", data)
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)


@run.case("--upload-ttl: an idle upload expires (NOT_FOUND, file gone)")
def _(srv):
    s = own_server(srv, ["--upload-ttl", "1500ms"])
    try:
        b = Up(channel(s))
        uid = b.start("ttl/a").upload_id
        b.upload(uid, b"y" * 10000, 0)
        check(("uploads/" + uid) in s.files(), "the upload's file exists")
        poll(lambda: code_of(lambda: b.query(uid)) == grpc.StatusCode.NOT_FOUND, "expiry")
        expect_status(grpc.StatusCode.NOT_FOUND, b.upload, uid, b"y", 10000)
        poll(lambda: not upload_files(s), "expired file removed")
        # a published status is kept until the TTL too, then forgotten
        uid = b.start("ttl/b").upload_id
        st = b.upload(uid, b"z", 0, finish=True)
        check(b.query(uid).HasField("object"), "published status kept")
        poll(lambda: code_of(lambda: b.query(uid)) == grpc.StatusCode.NOT_FOUND, "published status forgotten")
        check_eq(b.get("ttl/b"), b"z", "the object stays")
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)


@run.case("--max-uploads: RESOURCE_EXHAUSTED past it, room again after AbortUpload")
def _(srv):
    s = own_server(srv, ["--max-uploads", "2"])
    try:
        b = Up(channel(s))
        u1 = b.start("mx/1").upload_id
        b.start("mx/2")
        e = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, b.start, "mx/3")
        check("max-uploads" in e.details(), "message names the flag: %r" % e.details())
        b.abort(u1)
        u3 = b.start("mx/3").upload_id
        b.upload(u3, b"ok", 0, finish=True)  # published: room for one more
        b.start("mx/4")
        expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, b.start, "mx/5")
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)



# --- group "faults": needs a build with -DRS_FAULT_INJECTION=ON (RS_FAULTS, core/fault.h) -----

def fault_server(srv, faults, data_dir=None):
    s = Server(srv.binary, [], env={"RS_FAULTS": faults}, data_dir=data_dir)
    s.start()
    if "RS_FAULTS" not in s.stderr_text():
        s.stop()
        raise CaseFailure("the server did not announce RS_FAULTS: not a fault build")
    return s


@run.case("short writes: an upload in pieces still hashes and stores every byte", group="faults")
def _(srv):
    s = fault_server(srv, "put.write=short")
    try:
        b = Up(channel(s))
        data = rnd(2 * MiB + 4321, 90)
        uid = b.start("f/short", size=len(data), sha=sha256(data)).upload_id
        st = b.upload(uid, data[:MiB + 3], 0)
        check_eq(st.persisted_size, MiB + 3, "persisted after piece 1")
        st = b.upload(uid, data[MiB + 3:], MiB + 3, finish=True)
        check_eq(st.object.sha256, sha256(data), "sha256")
        check_object(b, "f/short", data)
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)


@run.case("a failing write ends the upload (discarded), the server serves on", group="faults")
def _(srv):
    s = fault_server(srv, "put.write=eio@1x1")
    try:
        b = Up(channel(s))
        data = rnd(2 * MiB, 91)
        uid = b.start("f/eio").upload_id
        c = code_of(lambda: b.upload(uid, data, 0))
        check(c == grpc.StatusCode.UNAVAILABLE, "a write EIO answers UNAVAILABLE, got %s" % c.name)
        poll(lambda: code_of(lambda: b.query(uid)) == grpc.StatusCode.NOT_FOUND, "upload discarded")
        expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "f/eio")
        poll(lambda: not upload_files(s), "the discarded upload's file removed")
        b.put("f/after", b"still serving")
        check_eq(b.get("f/after"), b"still serving", "Put after the fault")
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)


@run.case("cancel while writes are in flight: they finish, the rest is written, resume works",
          group="faults")
def _(srv):
    s = fault_server(srv, "put.write=delay:300")
    try:
        b = Up(channel(s))
        data = rnd(3 * MiB, 92)
        uid = b.start("f/delay", size=len(data), sha=sha256(data)).upload_id
        h = Held(b, uid, data[:MiB + 100 * KiB], 0)
        wait_busy(Up(channel(s)), uid)
        h.cancel()

        def settled():
            q = b.query(uid)
            if code_of(lambda: b.upload(uid, b"", q.persisted_size)) != grpc.StatusCode.OK:
                return None
            return q
        p = poll(settled, "the cancelled stream settling").persisted_size
        check(0 < p <= MiB + 100 * KiB, "persisted_size %d" % p)
        st = b.upload(uid, data[p:], p, finish=True)
        check_eq(st.object.sha256, sha256(data), "sha256 after the cancelled stream")
        check_object(b, "f/delay", data)
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)



@run.case("a finish cut short by the deadline before it publishes keeps the upload",
          group="faults")
def _(srv):
    s = fault_server(srv, "put.fsync=delay:1500")
    try:
        b = Up(channel(s))
        data = rnd(MiB + 333, 93)
        uid = b.start("f/late", size=len(data), sha=sha256(data)).upload_id
        b.upload(uid, data[:MiB], 0)
        try:
            b.Upload(b.reqs(uid, data[MiB:], MiB, finish=True), timeout=0.5)
            raise CaseFailure("the finishing Upload should have hit its deadline")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "got %s" % e.code().name)

        def settled():
            try:
                q = b.query(uid)
            except grpc.RpcError as e:
                raise CaseFailure("QueryUpload: %s %s" % (e.code().name, e.details()))
            return q if q.persisted_size == len(data) and code_of(
                lambda: b.upload(uid, b"", len(data))) == grpc.StatusCode.OK else None
        q = poll(settled, "the upload kept with every byte")
        check(not q.HasField("object"), "not published")
        expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "f/late")
        st = b.upload(uid, b"", len(data), finish=True)
        check_eq(st.object.sha256, sha256(data), "published by the second finish")
        check_object(b, "f/late", data)
    finally:
        problems = s.stop()
    check(not problems, "clean stop: %r" % problems)


run.main()
