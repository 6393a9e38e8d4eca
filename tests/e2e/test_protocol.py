"""HTTP/2 protocol errors and slow peers, driven with raw frames (issue 16, findings 1, 2, 3).

Each protocol error must get its RST_STREAM or GOAWAY every time, so each case runs REPEAT
times on fresh connections. Frames are built with hyperframe (also invalid ones, by hand where
hyperframe refuses), headers encoded with hpack, sent over a plain socket; replies are read
until the expected frame, the connection's end or READ_S, whichever comes first.

The server runs with --header-timeout-ms 2000; the slow cases send a byte a second and allow
SLOW_BOUND_S for the close (the bound is enforced by a once-a-second sweep).
"""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hpack import Decoder, Encoder  # noqa: E402  (Debian python3-hpack)
from hyperframe.frame import (  # noqa: E402  (Debian python3-hyperframe)
    DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame, RstStreamFrame,
    SettingsFrame)

from harness import TestRun, check  # noqa: E402

HEADER_TIMEOUT_MS = 2000
run = TestRun("HTTP/2 protocol errors", server_args=("--header-timeout-ms",
                                                     str(HEADER_TIMEOUT_MS)))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REPEAT = 20
READ_S = 5.0        # a reply to a protocol error is immediate; this only bounds a hang
SLOW_BOUND_S = 15.0  # generous upper bound for the header timeout of 2 s

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x1, 0x3, 0x5
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8

GRPC_DUPLEX = "/grpc.testing.TestService/FullDuplexCall"
# StreamingOutputCallRequest{response_parameters: [{size: 1}]} with its 5-byte gRPC prefix
DUPLEX_MSG = b"\x00\x00\x00\x00\x04" + b"\x12\x02\x08\x01"


def raw(ftype, flags, stream, payload=b""):
    """Any frame, valid or not: 9-byte header + payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


class Conn:
    """One client connection: preface, SETTINGS, an HPACK encoder, a frame reader."""

    def __init__(self, srv):
        host, port = srv.address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=READ_S)
        self.sock.settimeout(READ_S)
        self.enc = Encoder()
        self.buf = b""
        self.closed = False
        self.ping_seq = 0
        self.send(PREFACE + SettingsFrame(0).serialize())

    def close(self):
        self.sock.close()

    def send(self, *chunks):
        self.sock.sendall(b"".join(c if isinstance(c, bytes) else c.serialize() for c in chunks))

    def headers(self, stream, hdrs, end_stream=False, flags=("END_HEADERS",)):
        f = HeadersFrame(stream, self.enc.encode(hdrs))
        for fl in flags:
            f.flags.add(fl)
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    def next_frame(self, deadline):
        """The next frame from the server, or None when the connection ended or time ran out."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            if self.closed or time.monotonic() >= deadline:
                return None
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.closed = True
                return None
            self.buf += data
        f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
        f.parse_body(memoryview(self.buf[9:9 + length]))
        self.buf = self.buf[9 + length:]
        return f

    def sync(self):
        """Sends a PING and reads up to its ACK: everything the server did about the frames
        before it has been sent by then. Returns the frames read on the way."""
        self.ping_seq += 1
        data = struct.pack(">Q", self.ping_seq)
        self.send(PingFrame(0, data))
        frames, deadline = [], time.monotonic() + READ_S
        while True:
            f = self.next_frame(deadline)
            if f is None:
                return frames
            if isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == data:
                return frames
            frames.append(f)

    def wait_error(self, stream):
        """Reads until RST_STREAM on |stream| or a GOAWAY; returns ('rst'|'goaway', code), or
        (None, None) with what was seen when neither came."""
        seen, deadline = [], time.monotonic() + READ_S
        while True:
            f = self.next_frame(deadline)
            if f is None:
                return None, None, seen
            seen.append(describe(f))
            if isinstance(f, GoAwayFrame):
                return "goaway", f.error_code, seen
            if isinstance(f, RstStreamFrame) and f.stream_id == stream:
                return "rst", f.error_code, seen


def describe(f):
    name = type(f).__name__.replace("Frame", "")
    if isinstance(f, (GoAwayFrame, RstStreamFrame)):
        return "%s(%d, code %d)" % (name, f.stream_id, f.error_code)
    return "%s(%d%s)" % (name, f.stream_id, "," + ",".join(sorted(f.flags)) if f.flags else "")


def get_root(authority="localhost", extra=()):
    return [(":method", "GET"), (":scheme", "http"), (":path", "/"),
            (":authority", authority)] + list(extra)


def grpc_duplex(extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":path", GRPC_DUPLEX),
            (":authority", "localhost"), ("content-type", "application/grpc"),
            ("te", "trailers")] + list(extra)


def still_serving(srv):
    """A fresh connection gets GET /healthz answered with 200."""
    c = Conn(srv)
    try:
        c.send(c.headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/healthz"),
                             (":authority", "localhost")], end_stream=True))
        deadline = time.monotonic() + READ_S
        while True:
            f = c.next_frame(deadline)
            check(f is not None, "GET /healthz on a fresh connection got no answer")
            if isinstance(f, HeadersFrame) and f.stream_id == 1:
                return
    finally:
        c.close()


# --- finding 1(b): errors on a stream whose request is still open ---------------------------
#
# Each error: (name, extra request headers, frames after the request HEADERS, expected replies).
# The request HEADERS go first and a PING round trip follows, so a server that answered early
# (and closed the stream) has done so before the error arrives: that is the bug being tested.

def err_data_after_end(c, sid):
    return [DataFrame(sid, b"", flags=["END_STREAM"]), DataFrame(sid, b"x")]


def err_headers_after_end(c, sid):
    return [DataFrame(sid, b"", flags=["END_STREAM"]),
            c.headers(sid, [("x-trailer", "1")], end_stream=True)]


def err_window_update_zero(c, sid):
    return [raw(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0))]


def err_window_update_overflow(c, sid):
    return [raw(WINDOW_UPDATE, 0, sid, struct.pack(">I", 0x7fffffff))]


def err_content_length(c, sid):
    return [DataFrame(sid, b"abc", flags=["END_STREAM"])]


def err_pseudo_in_trailers(c, sid):
    return [c.headers(sid, [(":path", "/x")], end_stream=True)]


def err_bad_padding(c, sid):
    # PADDED with a pad length (10) larger than the rest of the payload (2 bytes)
    return [raw(DATA, PADDED, sid, bytes([10]) + b"ab")]


STREAM_ERRORS = [
    ("DATA after END_STREAM", (), err_data_after_end, {("rst", STREAM_CLOSED),
                                                      ("goaway", STREAM_CLOSED)}),
    ("HEADERS after END_STREAM", (), err_headers_after_end, {("rst", STREAM_CLOSED),
                                                            ("goaway", STREAM_CLOSED)}),
    ("WINDOW_UPDATE of 0", (), err_window_update_zero, {("rst", PROTOCOL_ERROR),
                                                       ("goaway", PROTOCOL_ERROR)}),
    ("WINDOW_UPDATE past 2^31-1", (), err_window_update_overflow,
     {("rst", FLOW_CONTROL_ERROR), ("goaway", FLOW_CONTROL_ERROR)}),
    ("content-length mismatch", (("content-length", "10"),), err_content_length,
     {("rst", PROTOCOL_ERROR), ("goaway", PROTOCOL_ERROR)}),
    ("pseudo-header in trailers", (), err_pseudo_in_trailers, {("rst", PROTOCOL_ERROR),
                                                              ("goaway", PROTOCOL_ERROR)}),
    ("bad pad length", (), err_bad_padding, {("goaway", PROTOCOL_ERROR)}),
]


def stream_error_case(kind, extra, make, want):
    def case(srv):
        for i in range(REPEAT):
            c = Conn(srv)
            try:
                sid = 1
                req = get_root(extra=extra) if kind == "http" else grpc_duplex(extra=extra)
                c.send(c.headers(sid, req))
                early = c.sync()
                c.send(*make(c, sid))
                got_kind, code, seen = c.wait_error(sid)
                check((got_kind, code) in want,
                      "run %d of %d: want one of %s, got %s (before the error: %s; after: %s)"
                      % (i + 1, REPEAT, sorted(want), (got_kind, code),
                         [describe(f) for f in early], seen))
            finally:
                c.close()
    return case


for _name, _extra, _make, _want in STREAM_ERRORS:
    run.case("GET / open, %s (x%d)" % (_name, REPEAT))(
        stream_error_case("http", _extra, _make, _want))
    run.case("gRPC stream open, %s (x%d)" % (_name, REPEAT))(
        stream_error_case("grpc", _extra, _make, _want))


@run.case("GET / without END_STREAM is answered only once the request ends")
def _(srv):
    c = Conn(srv)
    try:
        c.send(c.headers(1, get_root()))
        early = [f for f in c.sync() if f.stream_id == 1]
        check(early == [], "answered before END_STREAM: %s" % [describe(f) for f in early])
        c.send(DataFrame(1, b"", flags=["END_STREAM"]))
        deadline = time.monotonic() + READ_S
        status = None
        while status is None:
            f = c.next_frame(deadline)
            check(f is not None, "no answer after END_STREAM")
            check(not isinstance(f, (RstStreamFrame, GoAwayFrame)), "got %s" % describe(f))
            if isinstance(f, HeadersFrame) and f.stream_id == 1:
                status = f
    finally:
        c.close()


# --- finding 1(a): HEADERS on stream ids the client can no longer (or never) use ------------

def lower_stream_case(first, bad):
    def case(srv):
        for i in range(REPEAT):
            c = Conn(srv)
            try:
                c.send(c.headers(first, get_root(), end_stream=True))
                c.sync()
                c.send(c.headers(bad, get_root(), end_stream=True))
                got_kind, code, seen = c.wait_error(bad)
                check((got_kind, code) == ("goaway", PROTOCOL_ERROR),
                      "run %d of %d: HEADERS on stream %d after stream %d: want GOAWAY "
                      "PROTOCOL_ERROR, got %s (frames: %s)"
                      % (i + 1, REPEAT, bad, first, (got_kind, code), seen))
            finally:
                c.close()
    return case


run.case("HEADERS on unused stream 1 after stream 3 (x%d)" % REPEAT)(lower_stream_case(3, 1))
run.case("HEADERS on unused stream 5 after stream 9 (x%d)" % REPEAT)(lower_stream_case(9, 5))
run.case("HEADERS on unused stream 7 after stream 2^31-1 (x%d)" % REPEAT)(
    lower_stream_case(0x7fffffff, 7))
run.case("HEADERS on even stream 2 (x%d)" % REPEAT)(lower_stream_case(1, 2))


# --- finding 3: CONNECT without :path -------------------------------------------------------

@run.case("CONNECT without :path is answered 405 and the server keeps serving")
def _(srv):
    for i in range(REPEAT):
        c = Conn(srv)
        try:
            c.send(c.headers(1, [(":method", "CONNECT"), (":authority", "example.com:443")]))
            deadline, status = time.monotonic() + READ_S, None
            while status is None:
                f = c.next_frame(deadline)
                check(f is not None, "run %d: CONNECT got no answer" % (i + 1))
                if isinstance(f, HeadersFrame) and f.stream_id == 1:
                    status = dict(Decoder().decode(f.data)).get(":status")
                check(not isinstance(f, GoAwayFrame), "run %d: got %s" % (i + 1, describe(f)))
            check(status in ("405", "400"), "CONNECT answered %r, want 405 or 400" % status)
        finally:
            c.close()
        check(srv.alive(), "the server died after CONNECT")
    still_serving(srv)


# --- finding 2: slow request headers --------------------------------------------------------

def trickle_until_closed(c, data, gap_s):
    """Sends |data| a byte per |gap_s| until the server ends the connection; returns the
    seconds it took and the GOAWAY seen, or fails after SLOW_BOUND_S."""
    t0 = time.monotonic()
    goaway = None
    for i in range(len(data)):
        if time.monotonic() - t0 > SLOW_BOUND_S:
            break
        try:
            c.sock.sendall(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0, goaway
        deadline = time.monotonic() + gap_s
        while True:
            f = c.next_frame(deadline)
            if f is None:
                break
            if isinstance(f, GoAwayFrame):
                goaway = f
        if c.closed:
            return time.monotonic() - t0, goaway
    check(False, "connection still open after %.0f s of a byte a second" % SLOW_BOUND_S)


def slow_headers_block(c):
    """A HEADERS frame of a gRPC request padded out to 64 bytes of header block."""
    block = c.enc.encode(grpc_duplex(extra=[("x-pad", "p" * 40)]))
    return raw(HEADERS, END_HEADERS, 1, block)


@run.case("a HEADERS frame sent a byte a second (frame header included) is cut off")
def _(srv):
    c = Conn(srv)
    try:
        c.sync()
        took, goaway = trickle_until_closed(c, slow_headers_block(c), 1.0)
        check(goaway is not None, "closed after %.1f s without GOAWAY" % took)
    finally:
        c.close()
    still_serving(srv)


@run.case("a header block whose payload trickles in is cut off")
def _(srv):
    c = Conn(srv)
    try:
        c.sync()
        frame = slow_headers_block(c)
        c.send(frame[:9])  # the frame header at once: only the header block is slow
        took, goaway = trickle_until_closed(c, frame[9:], 1.0)
        check(goaway is not None, "closed after %.1f s without GOAWAY" % took)
    finally:
        c.close()


@run.case("a header block left unfinished (no CONTINUATION) is cut off")
def _(srv):
    c = Conn(srv)
    try:
        c.sync()
        block = c.enc.encode(grpc_duplex())
        c.send(raw(HEADERS, 0, 1, block[:10]))  # no END_HEADERS, then silence
        deadline = time.monotonic() + SLOW_BOUND_S
        goaway = None
        while not c.closed and time.monotonic() < deadline:
            f = c.next_frame(deadline)
            if isinstance(f, GoAwayFrame):
                goaway = f
        check(c.closed, "connection still open %.0f s into an unfinished header block"
              % SLOW_BOUND_S)
        check(goaway is not None, "closed without GOAWAY")
    finally:
        c.close()


@run.case("a slow DATA upload (one DATA frame, a byte every 0.5 s) is not cut off")
def _(srv):
    c = Conn(srv)
    try:
        c.send(c.headers(1, grpc_duplex()))
        c.sync()
        c.send(raw(DATA, 0, 1, DUPLEX_MSG)[:9])  # the frame header; its payload trickles
        t0, frames = time.monotonic(), []
        for i in range(len(DUPLEX_MSG)):
            c.sock.sendall(DUPLEX_MSG[i:i + 1])
            deadline = time.monotonic() + 0.5
            while True:
                f = c.next_frame(deadline)
                if f is None:
                    break
                frames.append(f)
            check(not c.closed, "closed %.1f s into a slow DATA upload" % (time.monotonic() - t0))
        check(time.monotonic() - t0 > HEADER_TIMEOUT_MS / 1000.0,
              "the upload was not slower than the header timeout; the case proves nothing")
        deadline = time.monotonic() + READ_S
        while not any(isinstance(f, DataFrame) and f.stream_id == 1 and len(f.data) > 0
                      for f in frames):
            f = c.next_frame(deadline)
            check(f is not None, "no response message after the slow upload (frames: %s)"
                  % [describe(x) for x in frames])
            frames.append(f)
        bad = [describe(f) for f in frames if isinstance(f, (GoAwayFrame, RstStreamFrame))]
        check(bad == [], "got %s" % bad)
    finally:
        c.close()


run.main()
