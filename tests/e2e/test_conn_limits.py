"""Connection limits against raw HTTP/2 bytes: a client that never completes the handshake is
closed, an idle connection gets GOAWAY(NO_ERROR) and is closed, and a flood of empty DATA
frames ends with GOAWAY(ENHANCE_YOUR_CALM). Meanwhile a normal gRPC call is answered. The
server runs with short limits (--handshake-timeout-ms 500 --idle-timeout-ms 1000
--glitch-budget 20); the waits below are upper bounds for liveness, not timings."""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import TestRun, channel, check  # noqa: E402

run = TestRun("connection limits", server_args=("--handshake-timeout-ms", "500",
                                                "--idle-timeout-ms", "1000",
                                                "--glitch-budget", "20"))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, NO_ERROR, ENHANCE_YOUR_CALM = 7, 0, 0xB
WAIT_S = 10.0


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def lit(index, value):
    """HPACK literal without indexing, indexed name (4-bit prefix), raw value."""
    head = bytes([index]) if index < 15 else bytes([15, index - 15])
    return head + bytes([len(value)]) + value


def grpc_headers(stream):
    block = (b"\x83\x86" + lit(4, b"/grpc.testing.TestService/EmptyCall") + lit(1, b"x")
             + lit(31, b"application/grpc") + b"\x00\x02te\x08trailers")
    return frame(1, 0x4, stream, block)  # END_HEADERS


def connect(srv):
    host, port = srv.address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=WAIT_S)
    s.settimeout(WAIT_S)
    return s


def read_until_goaway_or_close(s):
    """Returns (error code of the GOAWAY or None, closed?) within WAIT_S."""
    buf, code, deadline = b"", None, time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return code, True
        if not data:
            return code, True
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            if buf[3] == GOAWAY and n >= 8:
                code = struct.unpack(">I", buf[13:17])[0]
            buf = buf[9 + n:]
    return code, False


def still_serving(srv):
    with channel(srv) as ch:
        check(ch.unary_unary("/grpc.testing.TestService/EmptyCall")(b"", timeout=10) == b"",
              "EmptyCall failed")


@run.case("no preface: closed after the handshake timeout")
def _(srv):
    s = connect(srv)
    try:
        code, closed = read_until_goaway_or_close(s)
        check(closed, "connection still open %.0f s after connecting without a preface" % WAIT_S)
    finally:
        s.close()
    still_serving(srv)


@run.case("idle connection: GOAWAY(NO_ERROR), then closed")
def _(srv):
    s = connect(srv)
    try:
        s.sendall(PREFACE + frame(4, 0, 0))
        code, closed = read_until_goaway_or_close(s)
        check(code == NO_ERROR, "GOAWAY code %r, want NO_ERROR" % code)
        check(closed, "connection not closed after GOAWAY")
    finally:
        s.close()


@run.case("empty DATA flood: GOAWAY(ENHANCE_YOUR_CALM), server goes on")
def _(srv):
    s = connect(srv)
    try:
        s.sendall(PREFACE + frame(4, 0, 0) + grpc_headers(1) + frame(0, 0, 1) * 200)
        code, _ = read_until_goaway_or_close(s)
        check(code == ENHANCE_YOUR_CALM, "GOAWAY code %r, want ENHANCE_YOUR_CALM (11)" % code)
    finally:
        s.close()
    still_serving(srv)


@run.case("a few empty DATA frames are tolerated")
def _(srv):
    s = connect(srv)
    try:
        s.sendall(PREFACE + frame(4, 0, 0) + grpc_headers(1) + frame(0, 0, 1) * 5 +
                  frame(0, 0x1, 1, b"\x00\x00\x00\x00\x00"))  # one empty message, END_STREAM
        buf, deadline, status = b"", time.monotonic() + WAIT_S, None
        while time.monotonic() < deadline and status is None:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            if b"grpc-status" in buf or b"\x00\x00\x00\x00\x00" in buf:
                status = "answered"
        check(status == "answered", "no answer to a call with 5 empty DATA frames")
    finally:
        s.close()


@run.case("systemd notify: READY=1 once listening, STOPPING=1 on SIGTERM, exit 0")
def _(srv):
    import shutil
    import signal
    import subprocess
    import tempfile
    from harness import free_port
    tmp = tempfile.mkdtemp(prefix="rs-notify-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = None
    try:
        path = os.path.join(tmp, "notify")
        sock.bind(path)
        sock.settimeout(WAIT_S)
        env = dict(os.environ, NOTIFY_SOCKET=path)
        port = free_port()
        proc = subprocess.Popen([srv.binary, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                                 os.path.join(tmp, "data"), "--workers", "1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        msg = sock.recv(4096).decode()
        check("READY=1" in msg, "first notification %r" % msg)
        c = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)  # really listening
        c.close()
        proc.send_signal(signal.SIGTERM)
        msg = sock.recv(4096).decode()
        check("STOPPING=1" in msg, "notification after SIGTERM %r" % msg)
        check(proc.wait(WAIT_S) == 0, "exit code %r" % proc.returncode)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


run.main()
