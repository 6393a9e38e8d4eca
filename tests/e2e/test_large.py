#!/usr/bin/python3
"""End-to-end tests with large transfers and with plain HTTP/2 clients.

Groups: "transfer" (100 MiB Put and Get, generated on the fly and never held whole; the
server's memory stays bounded) and "http2" (GET /, /healthz and malformed gRPC requests
with curl --http2-prior-knowledge and nghttp).
Usage: test_large.py --server build/ringstreamd [--group transfer] [--only SUBSTRING]
"""

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bulk, CaseFailure, TestRun, channel, check, check_eq, pb2  # noqa: E402

MiB = 1024 * 1024
SIZE = 100 * MiB
PIECE = MiB          # bytes per generated piece and per Put message
SEED = 20240501
RSS_GROWTH_LIMIT_KIB = 48 * 1024   # under half the object: it was not held whole

run = TestRun("large")
_state = {}


def generate(seed=SEED, size=SIZE, piece=PIECE):
    """Deterministic pseudo-random bytes, one piece at a time."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(piece, left)
        yield rng.randbytes(n)
        left -= n


def digest_of(pieces):
    h = hashlib.sha256()
    for p in pieces:
        h.update(p)
    return h.digest()


class RssSampler:
    """Samples the server's VmRSS every 20 ms in the background."""

    def __init__(self, srv):
        self.srv = srv
        self.base = srv.rss_kib() or 0
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(0.02):
            r = self.srv.rss_kib()
            if r is not None and r > self.peak:
                self.peak = r

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def growth(self):
        return self.peak - self.base


def bulk(srv):
    if "bulk" not in _state:
        _state["bulk"] = Bulk(channel(srv))
    return _state["bulk"]


# --- 100 MiB --------------------------------------------------------------------------------

@run.case("100 MiB Put, data generated on the fly, server SHA-256 and size checked",
          group="transfer")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    want = digest_of(generate())

    def requests():
        yield pb.PutRequest(header=pb.PutHeader(name="large/100m", size=SIZE, sha256=want))
        for p in generate():
            yield pb.PutRequest(data=p)

    t0 = time.monotonic()
    with RssSampler(srv) as rss:
        info = b.Put(requests(), timeout=240)
    dt = time.monotonic() - t0
    check_eq(info.name, "large/100m", "name")
    check_eq(info.size, SIZE, "size")
    check(info.sha256 == want, "server's SHA-256 differs from the client's")
    _state["sha"] = want
    print("      Put 100 MiB in %.2f s (%.0f MiB/s); server RSS grew %d KiB"
          % (dt, SIZE / MiB / dt, rss.growth()))
    check(rss.growth() < RSS_GROWTH_LIMIT_KIB,
          "server RSS grew by %d KiB during a 100 MiB Put" % rss.growth())


@run.case("100 MiB Get in default and 1 MiB chunks, SHA-256 checked by the client",
          group="transfer")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    want = _state.get("sha")
    if want is None:
        raise CaseFailure("the 100 MiB Put did not succeed")
    for chunk_size, expect_chunk in ((0, 65536), (MiB, MiB)):
        h = hashlib.sha256()
        pos = 0
        n = 0
        t0 = time.monotonic()
        with RssSampler(srv) as rss:
            for c in b.Get(pb.GetRequest(name="large/100m", chunk_size=chunk_size), timeout=240):
                if c.offset != pos:
                    raise CaseFailure("chunk %d offset %d, want %d" % (n, c.offset, pos))
                if pos + len(c.data) < SIZE and len(c.data) != expect_chunk:
                    raise CaseFailure("chunk %d has %d bytes, want %d"
                                      % (n, len(c.data), expect_chunk))
                h.update(c.data)
                pos += len(c.data)
                n += 1
        dt = time.monotonic() - t0
        check_eq(pos, SIZE, "bytes received (chunk_size=%d)" % chunk_size)
        check(h.digest() == want, "SHA-256 of the received bytes differs (chunk_size=%d)"
              % chunk_size)
        print("      Get chunk_size=%d: %d chunks in %.2f s (%.0f MiB/s); server RSS grew %d KiB"
              % (chunk_size, n, dt, SIZE / MiB / dt, rss.growth()))
        check(rss.growth() < RSS_GROWTH_LIMIT_KIB,
              "server RSS grew by %d KiB during a 100 MiB Get" % rss.growth())


@run.case("a Get whose client stops reading does not grow the server's memory",
          group="transfer")
def _(srv):
    if "sha" not in _state:
        raise CaseFailure("the 100 MiB Put did not succeed")
    b = Bulk(channel(srv))
    pb = pb2()
    try:
        with RssSampler(srv) as rss:
            it = b.Get(pb.GetRequest(name="large/100m", chunk_size=MiB), timeout=120)
            first = next(it)
            check_eq(first.offset, 0, "first chunk offset")
            time.sleep(1.5)   # the client reads nothing more; flow control must stop the server
            stalled = rss.growth()
            h = hashlib.sha256(first.data)
            pos = len(first.data)
            for c in it:
                h.update(c.data)
                pos += len(c.data)
        check_eq(pos, SIZE, "bytes received after the pause")
        check(h.digest() == _state["sha"], "SHA-256 differs after the pause")
        print("      server RSS grew %d KiB while the client paused" % stalled)
        check(stalled < RSS_GROWTH_LIMIT_KIB,
              "server RSS grew by %d KiB while the client did not read" % stalled)
    finally:
        b.channel.close()


@run.case("64 MiB Echo streamed both ways at once", group="transfer")
def _(srv):
    b = bulk(srv)
    pb = pb2()
    size = 64 * MiB
    want = digest_of(generate(seed=7, size=size, piece=256 * 1024))
    reqs = (pb.Chunk(data=p) for p in generate(seed=7, size=size, piece=256 * 1024))
    h = hashlib.sha256()
    pos = 0
    for c in b.Echo(reqs, timeout=240):
        if c.offset != pos:
            raise CaseFailure("echo offset %d, want %d" % (c.offset, pos))
        h.update(c.data)
        pos += len(c.data)
    check_eq(pos, size, "bytes echoed")
    check(h.digest() == want, "SHA-256 of the echoed bytes differs")


# --- plain HTTP/2 ---------------------------------------------------------------------------

def curl(srv, path, method="GET", headers=(), data_file=None):
    """Returns (http_status, header_and_trailer_text, body) of an h2c request with curl."""
    tmp = tempfile.mkdtemp(prefix="rs-curl-")
    try:
        hdr, body = os.path.join(tmp, "h"), os.path.join(tmp, "b")
        cmd = ["curl", "-sS", "--http2-prior-knowledge", "--max-time", "20", "-X", method,
               "-D", hdr, "-o", body, "-w", "%{http_code}"]
        for h in headers:
            cmd += ["-H", h]
        if data_file is not None:
            cmd += ["--data-binary", "@" + data_file]
        cmd.append("http://%s%s" % (srv.address, path))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise CaseFailure("%s %s: curl exit %d: %s" % (method, path, p.returncode,
                                                           p.stderr.strip()))
        with open(hdr, "r", errors="replace") as f:
            head = f.read()
        with open(body, "rb") as f:
            payload = f.read()
        return int(p.stdout.strip() or 0), head, payload
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


RECV_HDR_RE = re.compile(r"recv \(stream_id=(\d+)\) ([^:\s][^:]*|:[a-z]+): (.*)$")


def nghttp(srv, path, headers=(), data_file=None):
    """Returns (http_status, header_and_trailer_text) of one h2c request made with nghttp.
    Used for requests with a body: curl 7.88 reports "(92) Stream error in the HTTP/2
    framing layer" when the server completes its response (legally) before curl has sent
    the request body, which an early 415 does."""
    cmd = ["nghttp", "-v", "-t", "20"]
    for h in headers:
        cmd += ["-H", h]
    if data_file is not None:
        cmd += ["-d", data_file]
    cmd.append("http://%s%s" % (srv.address, path))
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=30)
    if p.returncode != 0:
        raise CaseFailure("nghttp %s: exit %d: %s" % (path, p.returncode,
                                                      (p.stderr or p.stdout)[-500:]))
    status = 0
    lines = []
    for line in p.stdout.splitlines():
        m = RECV_HDR_RE.search(line)
        if not m:
            continue
        if m.group(2) == ":status":
            status = int(m.group(3))
        else:
            lines.append("%s: %s" % (m.group(2), m.group(3)))
    return status, "\n".join(lines)


def header_value(text, name):
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name:
            return v.strip()
    return None


def grpc_message_file(msg):
    f = tempfile.NamedTemporaryFile(prefix="rs-grpc-", delete=False)
    raw = msg.SerializeToString()
    f.write(b"\x00" + len(raw).to_bytes(4, "big") + raw)
    f.close()
    return f.name


@run.case("GET / is 200 with a short text (curl and nghttp)", group="http2")
def _(srv):
    status, head, body = curl(srv, "/")
    check_eq(status, 200, "curl GET / status")
    check(head.startswith("HTTP/2"), "curl did not speak HTTP/2: %r" % head[:40])
    check(0 < len(body) < 4096, "GET / body has %d bytes" % len(body))
    p = subprocess.run(["nghttp", "-v", "-t", "20", "http://%s/" % srv.address],
                       capture_output=True, text=True, timeout=30)
    check_eq(p.returncode, 0, "nghttp exit code (stderr %r)" % p.stderr[-300:])
    check(":status: 200" in p.stdout, "nghttp saw no ':status: 200':\n" + p.stdout[-1500:])


@run.case("GET /healthz is 200 'ok'", group="http2")
def _(srv):
    status, _head, body = curl(srv, "/healthz")
    check_eq(status, 200, "status")
    check_eq(body.strip(), b"ok", "body")


def check_grpc_refused(status, head, what):
    """A non-gRPC request on a gRPC path: a non-200 HTTP status, or 200 with a non-zero
    grpc-status (trailers-only response)."""
    if status == 200:
        gs = header_value(head, "grpc-status")
        check(gs is not None and gs != "0",
              "%s: HTTP 200 without an error grpc-status; headers:\n%s" % (what, head))
    else:
        check(400 <= status < 600, "%s: HTTP status %d" % (what, status))


@run.case("GET on a gRPC path and a wrong content-type get an error", group="http2")
def _(srv):
    status, head, _ = curl(srv, "/ringstream.v1.Bulk/Stat")
    check_grpc_refused(status, head, "GET /ringstream.v1.Bulk/Stat")
    f = grpc_message_file(pb2().StatRequest(name="x"))
    try:
        status, head = nghttp(srv, "/ringstream.v1.Bulk/Stat",
                              ["content-type: text/plain", "te: trailers"], f)
        check_grpc_refused(status, head, "POST with content-type text/plain")
        status, head = nghttp(srv, "/ringstream.v1.Bulk/Stat", ["te: trailers"], f)
        check_grpc_refused(status, head, "POST without content-type")
        status, head = nghttp(srv, "/ringstream.v1.Bulk/Stat",
                              ["content-type: application/json", "te: trailers"], f)
        check_grpc_refused(status, head, "POST with content-type application/json")
    finally:
        os.unlink(f)


@run.case("a raw gRPC call with nghttp: 200, then grpc-status", group="http2")
def _(srv):
    pb = pb2()
    b = Bulk(channel(srv))
    try:
        b.put("raw/present", b"raw")
    finally:
        b.channel.close()
    for name, want in (("raw/missing", "5"), ("raw/present", "0"), ("../bad", "3")):
        f = grpc_message_file(pb.StatRequest(name=name))
        try:
            status, head = nghttp(srv, "/ringstream.v1.Bulk/Stat",
                                  ["content-type: application/grpc", "te: trailers"], f)
        finally:
            os.unlink(f)
        check_eq(status, 200, "Stat %s: HTTP status" % name)
        ct = header_value(head, "content-type") or ""
        check(ct.startswith("application/grpc"), "Stat %s: content-type %r" % (name, ct))
        check_eq(header_value(head, "grpc-status"), want, "Stat %s: grpc-status" % name)


@run.case("unknown HTTP paths get an HTTP answer and the server keeps serving", group="http2")
def _(srv):
    status, _head, _ = curl(srv, "/no/such/page")
    check(status >= 400, "GET /no/such/page: status %d" % status)
    status, _head, body = curl(srv, "/healthz")
    check_eq((status, body.strip()), (200, b"ok"), "healthz afterwards")


if __name__ == "__main__":
    run.main()
