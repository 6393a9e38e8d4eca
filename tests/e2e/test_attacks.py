"""Per-server bounds under hostile or merely slow clients (issue 15), release build.

    test_attacks.py --server build/ringstreamd [--only NAME]

Each case starts its own ringstreamd (harness.Server: free 127.0.0.1 port, fresh data dir,
always stopped by PID, must exit 0), one worker (--workers 1) so that attacker and bystander
share the worker whose limits are under test, and runs a well-behaved bystander beside the
attack: grpc.testing EmptyCall every 100 ms on its own connection, each with a 1 s deadline
(BYSTANDER_BOUND_S). Every bystander call must succeed; the attacker may get errors
(RESOURCE_EXHAUSTED, refused streams, no accept) but never the bystander. Bounds:

  idle_deadline_streams  42 connections x 100 idle streams with grpc-timeout 1 h (4,200 > the
                         old 4,096 I/O slots, which each deadline used to hold): bystander ok.
  emfile                 RLIMIT_NOFILE 64:64 and --max-conns 24; 40 stalled Gets hold their
                         objects open, then 20 more connections: over 2 s the server uses
                         <= 0.2 CPU-seconds (not a busy accept loop), logs <= 6 accept lines in
                         the whole case, the bystander's existing connection keeps working, and
                         once the Gets and extra connections end a new connection is served.
  half_duplex_hold       50 HalfDuplexCall streams each sending 16 MiB before half-closing: each
                         gets RESOURCE_EXHAUSTED; server peak RSS (VmHWM) <= 160 MiB.
  stalled_gets_window,   1,000 Gets of a 1 MiB object over 10 connections whose client gives no
  stalled_gets_socket    window back (window) or stops reading the socket (socket) for 3 s, via
                         perf/rsload stall-get: then everything is read and checked; server peak
                         RSS <= 160 MiB (before: a full 1 MiB queue each, ~1 GiB).
  compressed_output      StreamingOutputCall asking for 200 compressed 4,000,000-byte responses
                         (zeros: ~1000:1): every response arrives intact, and the server spends
                         <= 0.05 CPU-seconds per MiB its sockets sent (ss -ti bytes_sent; gzip of
                         zeros costs seconds per MiB sent; past the compression budget responses
                         go plain and cost what they send).

rsload is $RS_RSLOAD, else perf/rsload next to the server binary.
"""

import argparse
import functools
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

import harness  # noqa: E402
from harness import (  # noqa: E402
    CHANNEL_OPTIONS, PROTO_DIR, CaseFailure, Server, check, run_cases,
)
from bystander import Bystander, vm_kib  # noqa: E402
from interop_client import load_pb2  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
TS = "/grpc.testing.TestService/"
BYSTANDER_PERIOD_S = 0.1
BYSTANDER_BOUND_S = 1.0
RSS_BOUND_KIB = 160 * 1024
# A connection of its own for every channel (grpcio shares subchannels between channels).
OWN_CONN = CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]


def pb():
    return load_pb2(PROTO_DIR, "grpc_testing")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the comm field: state is fields[0], utime fields[11], stime fields[12]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def empty_call(channel):
    return channel.unary_unary(TS + "EmptyCall", request_serializer=pb().Empty.SerializeToString,
                               response_deserializer=pb().Empty.FromString)


def run_case(binary, args, body, preexec=None):
    srv = Server(binary, ["--workers", "1"] + list(args))
    try:
        if preexec is None:
            srv.start()
        else:
            # harness.Server has no hook for the child's setup: wrap its Popen for the start
            popen = harness.subprocess.Popen
            harness.subprocess.Popen = functools.partial(popen, preexec_fn=preexec)
            try:
                srv.start()
            finally:
                harness.subprocess.Popen = popen
        body(srv)
        check(srv.alive(), "the server died")
    finally:
        problems = srv.stop()
    check(not problems, "server shutdown: %s" % "; ".join(problems))


# --- raw HTTP/2: idle streams without a client library's per-stream threads --------------

def h2_frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def idle_stream_conn(srv, nstreams, timeout_hdr):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    block = b"".join(hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", TS + "FullDuplexCall"),
        (":authority", srv.address), ("content-type", "application/grpc"), ("te", "trailers"),
        ("grpc-timeout", timeout_hdr)])
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"")
    for i in range(nstreams):
        out += h2_frame(1, 0x4, 1 + 2 * i, block)  # HEADERS, END_HEADERS, no END_STREAM
    s.sendall(out)
    s.setblocking(False)
    return s


def drain(socks):
    """Reads what the server sent (SETTINGS and the like), at most 4 MiB per socket."""
    for s in socks:
        try:
            for _ in range(64):
                if not s.recv(65536):
                    break
        except (BlockingIOError, OSError):
            pass


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def idle_deadline_streams(binary):
    def body(srv):
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        socks = []
        try:
            for _ in range(42):
                socks.append(idle_stream_conn(srv, 100, "3600S"))
            t_end = time.monotonic() + 4
            while time.monotonic() < t_end:
                drain(socks)
                time.sleep(0.2)
            # the bystander also opens new calls on a new connection
            with grpc.insecure_channel(srv.address, options=OWN_CONN) as ch:
                empty_call(ch)(pb().Empty(), timeout=BYSTANDER_BOUND_S)
            by.stop_and_check(min_calls=20)
        finally:
            for s in socks:
                s.close()
    run_case(binary, [], body)


@case
def emfile(binary):
    """The server runs with RLIMIT_NOFILE 64:64 (set in the child before exec: io_uring's
    accept takes the limit when it is armed, so lowering it later would not show) and
    --max-conns 24, which fits: descriptors run out because 40 stalled Gets hold their
    objects open, and then 20 more connections arrive."""
    rsload = rsload_path(binary)

    def body(srv):
        pid = srv.pid()
        subprocess.run([rsload, "--addr", srv.address, "--quiet", "put", "fd/obj", "1M"],
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        base = len(os.listdir("/proc/%d/fd" % pid))
        gets = subprocess.Popen([rsload, "--addr", srv.address, "--timeout", "60", "stall-get",
                                 "fd/obj", "--streams", "40", "--conns", "1",
                                 "--stall-seconds", "6"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        extra = []
        try:
            deadline = time.monotonic() + 10
            while len(os.listdir("/proc/%d/fd" % pid)) < base + 40:
                check(time.monotonic() < deadline, "the 40 Gets did not open their objects")
                time.sleep(0.05)
            for _ in range(20):
                extra.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
            time.sleep(0.5)
            c0 = cpu_seconds(pid)
            time.sleep(2.0)
            cpu = cpu_seconds(pid) - c0
            lines = [ln for ln in srv.stderr_text().splitlines() if "accept" in ln]
            print("      server CPU over 2 s out of descriptors: %.2f s (bound 0.2 s); %d accept "
                  "log lines: %s" % (cpu, len(lines), lines[:1]))
            check(cpu <= 0.2, "the server burned %.2f CPU-seconds in 2 s out of descriptors"
                  % cpu)
            check(1 <= len(lines) <= 6, "want 1..6 accept log lines, got %d" % len(lines))
            # the existing connection is still served (the bystander runs all along)
            empty_call(by.channel)(pb().Empty(), timeout=BYSTANDER_BOUND_S)
        finally:
            for s in extra:
                s.close()
            try:
                out, _ = gets.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                gets.kill()
                out, _ = gets.communicate()
        check(" ok=1 " in out, "the stalled Gets failed:\n%s" % out[-2000:])
        # the descriptors came back: a new connection is served again (backoff <= 1 s)
        deadline = time.monotonic() + 10
        while True:
            try:
                with grpc.insecure_channel(srv.address, options=OWN_CONN) as ch:
                    empty_call(ch)(pb().Empty(), timeout=BYSTANDER_BOUND_S)
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    raise CaseFailure("no new connection served 10 s after the extra ones "
                                      "closed: %s" % e.code().name)
                time.sleep(0.2)
        lines = [ln for ln in srv.stderr_text().splitlines() if "accept" in ln]
        check(len(lines) <= 6, "%d accept log lines (bound 6)" % len(lines))
        by.stop_and_check(min_calls=20)

    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    run_case(binary, ["--max-conns", "24"], body, preexec=low_nofile)


@case
def half_duplex_hold(binary):
    def body(srv):
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        req = pb().StreamingOutputCallRequest(payload=pb().Payload(body=bytes(256 * KiB)))
        req.response_parameters.add(size=1)
        raw = req.SerializeToString()
        results = [None] * 50

        def one(i):
            call = shared.stream_stream(TS + "HalfDuplexCall", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
            try:
                for _ in call(iter([raw] * 64), timeout=60):
                    pass
                results[i] = "OK"
            except grpc.RpcError as e:
                results[i] = e.code().name

        shared = grpc.insecure_channel(srv.address, options=OWN_CONN)
        try:
            threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
        finally:
            shared.close()
        peak = vm_kib(srv.pid(), "VmHWM")
        print("      50 HalfDuplexCall x 16 MiB: peak RSS %d KiB (bound %d KiB); statuses %s"
              % (peak, RSS_BOUND_KIB, sorted(set(map(str, results)))))
        check(all(r == "RESOURCE_EXHAUSTED" for r in results),
              "every attacker stream must get RESOURCE_EXHAUSTED, got %s" % results)
        check(peak <= RSS_BOUND_KIB, "peak RSS %d KiB > %d KiB" % (peak, RSS_BOUND_KIB))
        by.stop_and_check(min_calls=1)
    run_case(binary, [], body)


def rsload_path(binary):
    p = os.environ.get("RS_RSLOAD") or os.path.join(os.path.dirname(binary), "perf", "rsload")
    if not os.access(p, os.X_OK):
        raise CaseFailure("rsload not found at %s (build the rsload target, or set RS_RSLOAD)"
                          % p)
    return p


def stalled_gets(binary, mode):
    rsload = rsload_path(binary)

    def body(srv):
        subprocess.run([rsload, "--addr", srv.address, "--quiet", "put", "stall/obj", "1M"],
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        out = subprocess.run([rsload, "--addr", srv.address, "--timeout", "120", "stall-get",
                              "stall/obj", "--streams", "1000", "--conns", "10",
                              "--stall-seconds", "3", "--stall-mode", mode],
                             timeout=150, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True).stdout
        peak = vm_kib(srv.pid(), "VmHWM")
        res = [ln for ln in out.splitlines() if ln.startswith(("RESULT", "STALL"))]
        print("      %s\n      1,000 stalled Gets (%s): peak RSS %d KiB (bound %d KiB)"
              % ("\n      ".join(res), mode, peak, RSS_BOUND_KIB))
        check(any(ln.startswith("RESULT") and " ok=1 " in ln for ln in res),
              "rsload stall-get failed:\n%s" % out[-2000:])
        check(peak <= RSS_BOUND_KIB, "peak RSS %d KiB > %d KiB" % (peak, RSS_BOUND_KIB))
        by.stop_and_check(min_calls=10)
    run_case(binary, [], body)


@case
def stalled_gets_window(binary):
    stalled_gets(binary, "window")


@case
def stalled_gets_socket(binary):
    stalled_gets(binary, "socket")


def bytes_sent_by(port):
    """Bytes the server's established sockets on |port| have sent (ss -ti bytes_sent)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", "( sport = :%d )" % port],
                         check=True, timeout=10, stdout=subprocess.PIPE, text=True).stdout
    return sum(int(w.split(":", 1)[1]) for w in out.split() if w.startswith("bytes_sent:"))


@case
def compressed_output(binary):
    def body(srv):
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        req = pb().StreamingOutputCallRequest()
        for _ in range(200):
            p = req.response_parameters.add(size=4000000)
            p.compressed.value = True
        with grpc.insecure_channel(srv.address, options=OWN_CONN) as ch:
            call = ch.unary_stream(TS + "StreamingOutputCall",
                                   request_serializer=pb().StreamingOutputCallRequest
                                   .SerializeToString,
                                   response_deserializer=pb().StreamingOutputCallResponse
                                   .FromString)
            sent0 = bytes_sent_by(srv.port)
            c0 = cpu_seconds(srv.pid())
            n = 0
            for resp in call(req, timeout=120):
                check(len(resp.payload.body) == 4000000,
                      "response %d has %d bytes" % (n, len(resp.payload.body)))
                n += 1
            cpu = cpu_seconds(srv.pid()) - c0
            wire = (bytes_sent_by(srv.port) - sent0) / MiB
        print("      %d responses, %.1f MiB on the wire, server CPU %.2f s = %.4f s/MiB sent "
              "(bound 0.05 s/MiB)" % (n, wire, cpu, cpu / max(wire, 0.001)))
        check(n == 200, "got %d of 200 responses" % n)
        check(cpu <= 0.05 * max(wire, 1.0),
              "server CPU %.2f s for %.1f MiB sent: > 0.05 s per MiB" % (cpu, wire))
        by.stop_and_check(min_calls=1)
    run_case(binary, [], body)


def main():
    ap = argparse.ArgumentParser(description="ringstream e2e: attacks with a bystander")
    ap.add_argument("--server", required=True)
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    run_cases(CASES, args.only, lambda fn: fn(args.server))


if __name__ == "__main__":
    main()
