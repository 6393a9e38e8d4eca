"""Protocol limits from the outside: a gzip decompression bomb, oversized metadata, an
unsupported grpc-encoding, a compressed message without grpc-encoding, and a deadline on a
Get the client stops reading. After each, the server must still answer a normal call."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from harness import TestRun, channel, check, expect_status  # noqa: E402

run = TestRun("limits")
EMPTY = "/grpc.testing.TestService/EmptyCall"


def still_serving(srv):
    with channel(srv) as ch:
        out = ch.unary_unary(EMPTY)(b"", timeout=10)
        check(out == b"", "EmptyCall after the limit case returned %r" % out)


@run.case("gzip bomb stops at the maximum message size")
def _(srv):
    # 64 MiB of zeros compress to ~64 KiB; the server must stop inflating at 4 MiB.
    bomb = b"\0" * (64 << 20)
    with channel(srv) as ch:
        call = ch.unary_unary(EMPTY, request_serializer=lambda _: bomb)
        e = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, call, None, timeout=30,
                          compression=grpc.Compression.Gzip)
        check("decompressed" in (e.details() or ""), "details %r" % e.details())
    check(srv.rss_kib() < 256 * 1024, "server RSS %d KiB after the bomb" % srv.rss_kib())
    still_serving(srv)


@run.case("metadata over SETTINGS_MAX_HEADER_LIST_SIZE is refused, the server goes on")
def _(srv):
    with channel(srv) as ch:
        try:
            ch.unary_unary(EMPTY)(b"", metadata=(("x-big", "v" * 40000),), timeout=10)
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and
                  "SETTINGS_MAX_HEADER_LIST_SIZE" in (e.details() or ""),
                  "want the server's RESOURCE_EXHAUSTED, got %s (%r)" % (e.code().name, e.details()))
        else:
            raise AssertionError("a 40000-byte header was accepted (limit 16384)")
    still_serving(srv)


@run.case("unsupported grpc-encoding is UNIMPLEMENTED")
def _(srv):
    with channel(srv) as ch:
        # grpcio sends grpc-encoding itself only for gzip/deflate; deflate is not ours.
        expect_status(grpc.StatusCode.UNIMPLEMENTED, ch.unary_unary(EMPTY), b"\x00", timeout=10,
                      compression=grpc.Compression.Deflate)
    still_serving(srv)


@run.case("a binary metadata value comes back byte for byte")
def _(srv):
    value = bytes(range(256))
    with channel(srv) as ch:
        call = ch.unary_unary("/grpc.testing.TestService/UnaryCall")
        _, c = call.with_call(b"", metadata=(("x-grpc-test-echo-trailing-bin", value),),
                              timeout=10)
        got = dict(c.trailing_metadata()).get("x-grpc-test-echo-trailing-bin")
        check(got == value, "trailer came back as %r" % (got,))


@run.case("deadline on a Get nobody reads: DEADLINE_EXCEEDED, server goes on")
def _(srv):
    with channel(srv) as ch:
        from harness import Bulk  # noqa: E402
        b = Bulk(ch)
        b.put("limits/big", b"z" * (8 << 20))
        it = b.Get(b.pb.GetRequest(name="limits/big"), timeout=0.5)
        next(it)  # take one chunk, then stop reading until the deadline passes
        import time
        time.sleep(1.0)
        e = expect_status(grpc.StatusCode.DEADLINE_EXCEEDED, lambda: it)
        check(e is not None, "no status")
    still_serving(srv)


def raw_call(srv, path, body, headers=()):
    """POSTs |body| with nghttp (HTTP/2 prior knowledge) and returns its verbose output, which
    shows the response headers and trailers as received."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        cmd = ["nghttp", "-v", "-t", "10", "-d", f.name, "-H", "content-type: application/grpc",
               "-H", "te: trailers"]
        for h in headers:
            cmd += ["-H", h]
        out = subprocess.run(cmd + ["http://%s%s" % (srv.address, path)], capture_output=True,
                             timeout=20)
    return out.stdout.decode("utf-8", "replace")


@run.case("a compressed flag without grpc-encoding is INTERNAL")
def _(srv):
    out = raw_call(srv, EMPTY, b"\x01\x00\x00\x00\x00")
    check("grpc-status: 13" in out, "want grpc-status 13, got:\n" + out[-800:])
    still_serving(srv)


@run.case("a stream that ends inside a message is INTERNAL")
def _(srv):
    out = raw_call(srv, EMPTY, b"\x00\x00\x00\x00\x10abc")  # announces 16 bytes, sends 3
    check("grpc-status: 13" in out, "want grpc-status 13, got:\n" + out[-800:])
    still_serving(srv)


@run.case("a corrupt gzip message is INTERNAL")
def _(srv):
    out = raw_call(srv, EMPTY, b"\x01\x00\x00\x00\x04junk", headers=("grpc-encoding: gzip",))
    check("grpc-status: 13" in out, "want grpc-status 13, got:\n" + out[-800:])
    still_serving(srv)


run.main()
