#!/usr/bin/python3
"""End-to-end tests of bounded memory and HTTP/2 flow-control backpressure (issue 3).

The traffic comes from perf/rsload (a C nghttp2 client: data generated and SHA-256/pattern
checked on the fly, windows given back only for bytes it has read, and it reports how many
bytes flow control let it send and how many it received but has not read). These cases assert
memory bounds and byte counts, never durations. Where a bound depends on time (the slow Put
consumer), it uses the server's minimum delay, which a slower machine only makes looser.

Cases (group "backpressure"):
  - 2 GiB Put and 2 GiB Get: the server's peak RSS (VmHWM) stays under 96 MiB;
  - slow reader on Get: received-but-unread bytes (plus the client's socket queue) never exceed
    the client's stream window, and the server's RSS stays flat;
  - slow consumer on Put (group "slow_consumer", needs a fault build: a second server with
    RS_FAULTS="put.write=delay:MS", the slow-disk fault point of the bulk store): what the
    client may send is bounded by what the server consumed plus its windows; the object is
    intact afterwards;
  - an Echo client that reads nothing for a while: its upload stalls at a bounded byte count,
    the server's RSS stays flat, then everything comes back intact;
  - a stalled and an active Get on the same connection: the active one completes; a unary
    call on another connection is answered meanwhile;
  - a message of exactly --max-msg succeeds; one announcing one byte more is refused with
    RESOURCE_EXHAUSTED after only a few KiB of it were sent.
Usage: test_backpressure.py --server build/ringstreamd [--group backpressure] [--only SUBSTRING]
       test_backpressure.py --server build-asan/ringstreamd --group slow_consumer (fault build)
rsload is $RS_RSLOAD, else perf/rsload next to the server binary.
"""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CaseFailure, Server, TestRun, check, check_eq  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
STREAM_BUFFER = MiB          # the server's default --stream-buffer
MAX_MSG = 4 * MiB            # the server's default --max-msg
MSG = 64 * KiB               # rsload's data bytes per message
BIG = 2 * GiB
PEAK_LIMIT_KIB = 96 * 1024   # server VmHWM bound for the 2 GiB transfers
FLAT_LIMIT_KIB = 16 * 1024   # "flat": RSS growth allowed while a client stalls
RSLOAD_TIMEOUT_S = 300
# A fixed worker count, so the memory bounds do not depend on the host's CPU count.
SERVER_ARGS = ["--workers", "2"]

run = TestRun("backpressure", server_args=SERVER_ARGS)
_state = {}


def rsload_path(srv):
    p = os.environ.get("RS_RSLOAD")
    if not p:
        p = os.path.join(os.path.dirname(srv.binary), "perf", "rsload")
    if not os.access(p, os.X_OK):
        raise CaseFailure("rsload not found at %s (build the rsload target, or set RS_RSLOAD)" % p)
    return p


def proc_status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def parse_kv(line):
    out = {}
    for tok in line.split()[1:]:
        k, sep, v = tok.partition("=")
        if sep:
            out[k] = v
    return out


class Rsload:
    """Runs rsload against srv, sampling the server's VmRSS every 20 ms meanwhile."""

    def __init__(self, srv, args, timeout=RSLOAD_TIMEOUT_S):
        self.srv = srv
        self.cmd = [rsload_path(srv), "--addr", srv.address, "--timeout", str(timeout)] + args
        self.timeout = timeout
        self.lines = []
        self.samples = []       # (seconds since start, VmRSS KiB)
        self.rc = None
        self.t0 = None

    def run(self):
        stop = threading.Event()

        def sample():
            while not stop.wait(0.02):
                r = proc_status_kib(self.srv.pid(), "VmRSS")
                if r is not None:
                    self.samples.append((time.monotonic() - self.t0, r))

        self.rss_before = proc_status_kib(self.srv.pid(), "VmRSS")
        self.t0 = time.monotonic()
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            p = subprocess.run(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=self.timeout + 30)
        finally:
            stop.set()
            t.join()
        self.rc = p.returncode
        self.lines = p.stdout.splitlines()
        return self

    def out(self):
        return "\n".join(self.lines[-30:])

    def records(self, kind):
        return [parse_kv(l) for l in self.lines if l.startswith(kind + " ")]

    def one(self, kind):
        r = self.records(kind)
        if not r:
            raise CaseFailure("rsload printed no %s line; output:\n%s" % (kind, self.out()))
        return r[-1]

    def expect_ok(self):
        bad = [r for r in self.records("RESULT") if r.get("ok") != "1"]
        if self.rc != 0 or bad or not self.records("RESULT"):
            raise CaseFailure("rsload %s: exit %s; output:\n%s"
                              % (" ".join(self.cmd[5:]), self.rc, self.out()))
        return self

    def rss_max(self, t_from=0.0, t_to=1e9):
        v = [r for t, r in self.samples if t_from <= t <= t_to]
        return max(v) if v else None


def rsload(srv, *args, timeout=RSLOAD_TIMEOUT_S):
    return Rsload(srv, list(args), timeout).run()


def hwm(srv):
    return proc_status_kib(srv.pid(), "VmHWM")


# --- 2 GiB through one stream ----------------------------------------------------------------

@run.case("2 GiB Put generated on the fly: client and server SHA-256 agree, server peak RSS "
          "< 96 MiB", group="backpressure")
def _(srv):
    r = rsload(srv, "put", "bp/2g", str(BIG)).expect_ok()
    res = r.one("RESULT")
    check_eq(int(res["bytes"]), BIG, "bytes put")
    peak = hwm(srv)
    print("      Put %s MB/s; server VmHWM %d KiB (RSS before %d KiB)"
          % (res["MBps"], peak, r.rss_before))
    check(peak < PEAK_LIMIT_KIB, "server peak RSS %d KiB during a 2 GiB Put" % peak)
    _state["2g"] = True


@run.case("2 GiB Get checked on the fly against the Stat SHA-256, server peak RSS < 96 MiB",
          group="backpressure")
def _(srv):
    if "2g" not in _state:
        raise CaseFailure("the 2 GiB Put did not succeed")
    r = rsload(srv, "get", "bp/2g").expect_ok()
    res = r.one("RESULT")
    check_eq(int(res["bytes"]), BIG, "bytes got")
    peak = hwm(srv)
    print("      Get %s MB/s; server VmHWM %d KiB" % (res["MBps"], peak))
    check(peak < PEAK_LIMIT_KIB, "server peak RSS %d KiB during a 2 GiB Get" % peak)


# --- slow reader ---------------------------------------------------------------------------

@run.case("slow reader on Get: unread bytes never exceed the client's window, server RSS flat",
          group="backpressure")
def _(srv):
    window = 64 * KiB
    rsload(srv, "put", "bp/16m", str(16 * MiB)).expect_ok()
    # 256 KiB/s for 3 s, then everything: the server's send queue fills and waits.
    r = rsload(srv, "get", "bp/16m", "--window", str(window), "--read-rate", str(256 * KiB),
               "--read-seconds", "3", "--progress-ms", "50").expect_ok()
    slow = r.one("SLOWREAD")
    prog = r.records("PROGRESS")
    check(len(prog) >= 10, "only %d progress samples" % len(prog))
    worst = 0
    for p in prog:
        # Bytes the server sent that we have not read: delivered to nghttp2 but unread, plus
        # what is still in our socket's receive queue. Flow control caps them at the window.
        in_flight = int(p["received"]) - int(p["consumed"]) + int(p["sockq"])
        worst = max(worst, in_flight)
        check(in_flight <= window,
              "at %s ms the server had %d unread bytes out, window %d" % (p["t_ms"], in_flight,
                                                                          window))
    check(int(slow["max_unread"]) <= window, "max unread %s > window" % slow["max_unread"])
    check(int(slow["received"]) <= int(slow["consumed"]) + window,
          "after the slow phase: received %s, read %s" % (slow["received"], slow["consumed"]))
    check(int(slow["received"]) < 16 * MiB // 2, "the slow reader received %s bytes of 16 MiB"
          % slow["received"])
    # Server memory during the slow phase (from 0.5 s on, when its queue is full).
    during = r.rss_max(0.5, float(slow["seconds"]))
    check(during is not None, "no RSS samples during the slow phase")
    print("      slow phase: received %s, read %s, worst unread+socket %d <= %d; server RSS %d "
          "KiB before, max %d KiB during" % (slow["received"], slow["consumed"], worst, window,
                                            r.rss_before, during))
    check(during - r.rss_before < FLAT_LIMIT_KIB,
          "server RSS grew %d KiB during a slow read" % (during - r.rss_before))


# --- slow consumer ---------------------------------------------------------------------------

@run.case("slow consumer on Put (fault point put.write=delay): the client's sending is held "
          "back by flow control, nothing is lost", group="slow_consumer")
def _(srv):
    delay_us = 250000
    total = 16 * MiB
    stage = 512 * KiB   # Put's staging buffer (workers/bulk/put.c PUT_STAGE): two of them
    # Every stage write waits this long on a ring timer before it is issued: the stage stays
    # busy, so a stage frees at most once per delay.
    slow = Server(srv.binary, SERVER_ARGS,
                  env={"RS_FAULTS": "put.write=delay:%d" % (delay_us // 1000)})
    slow.start()
    try:
        check("RS_FAULTS=put.write=delay" in slow.stderr_text(),
              "the server did not announce the fault rule: not a fault build "
              "(-DRS_FAULT_INJECTION=ON)?")
        r = rsload(slow, "put", "bp/slow", str(total), "--progress-ms", "50").expect_ok()
        prog = r.records("PROGRESS")
        check(len(prog) >= 10, "only %d progress samples" % len(prog))
        # The server consumes a message only once it is staged; a stage frees at most once
        # per delay, so by time t it consumed at most 2 stages + 2 stages * floor(t / delay).
        # The client can be ahead of that by the stream window, a partly received message and
        # the message the server holds. t is rsload's clock (started before the call), which
        # only loosens the bound on a slow machine.
        slack = STREAM_BUFFER + 2 * (MSG + 64) + 64 * KiB
        plateaus = 0
        for a, b in zip(prog, prog[1:]):
            # the client had the window's worth out, over half still to send, and flow
            # control let nothing more go between two samples: its sending stalled
            if STREAM_BUFFER <= int(a["accepted"]) == int(b["accepted"]) < total // 2:
                plateaus += 1
        for p in prog:
            t = int(p["t_ms"]) / 1000.0
            consumed_max = 2 * stage + 2 * stage * int(t / (delay_us / 1e6))
            acc = int(p["accepted"])
            check(acc <= consumed_max + slack,
                  "at %.2f s the client had sent %d bytes; the server can have consumed at "
                  "most %d (+ %d of windows)" % (t, acc, consumed_max, slack))
        print("      sent by time (ms: bytes): %s; total %d"
              % (", ".join("%s: %s" % (p["t_ms"], p["accepted"]) for p in prog[:12:2]), total))
        check(plateaus > 0, "the client's sending never stalled below half of %d bytes" % total)
        # Everything arrived: the Put's ObjectInfo matched (checked by rsload); read it back.
        g = rsload(slow, "get", "bp/slow").expect_ok()
        check_eq(int(g.one("RESULT")["bytes"]), total, "bytes read back")
    finally:
        problems = slow.stop()
    check(not problems, "second server: %s" % "; ".join(problems))


# --- Echo that does not read -------------------------------------------------------------------

@run.case("Echo client that reads nothing: upload stalls at a bounded byte count, server RSS "
          "flat, then everything comes back intact", group="backpressure")
def _(srv):
    window = 64 * KiB
    total = 64 * MiB
    r = rsload(srv, "echo", str(total), "--window", str(window), "--stall-seconds", "3",
               "--progress-ms", "100").expect_ok()
    st = r.one("STALL")
    # What the server can hold for the stream: its receive window (1 MiB, uncredited while it
    # holds a message), its send queue (1 MiB, overshot by at most one message) and the held
    # message; plus what our window let it send us.
    bound = window + 2 * STREAM_BUFFER + 3 * (MSG + 64)
    acc, mid = int(st["accepted"]), int(st["accepted_mid"])
    print("      without reading: sent %d bytes at half time, %d at the end (bound %d of %d)"
          % (mid, acc, bound, total))
    check(acc <= bound, "client sent %d bytes while reading nothing (bound %d)" % (acc, bound))
    check(int(st["received"]) <= window, "received %s > window %d" % (st["received"], window))
    during = r.rss_max(0.5, 3.0)
    check(during is not None, "no RSS samples during the stall")
    print("      server RSS %d KiB before, max %d KiB during the stall" % (r.rss_before, during))
    check(during - r.rss_before < FLAT_LIMIT_KIB,
          "server RSS grew %d KiB while the Echo client did not read" % (during - r.rss_before))
    check_eq(int(r.one("RESULT")["bytes"]), total, "bytes echoed")


# --- stalled next to active ------------------------------------------------------------------

@run.case("a stalled and an active Get on one connection: the active one completes; a unary "
          "call on another connection is answered meanwhile", group="backpressure")
def _(srv):
    window = 64 * KiB
    rsload(srv, "put", "bp/8m", str(8 * MiB)).expect_ok()
    r = rsload(srv, "stall-get", "bp/8m", "--streams", "2", "--conns", "1", "--active", "1",
               "--window", str(window), "--stall-seconds", "1", "--unary-probe").expect_ok()
    st = r.one("STALL")
    check_eq(st["active_done"], "1", "active streams completed during the stall")
    check(int(st["received_max"]) <= window,
          "the stalled stream received %s bytes, window %d" % (st["received_max"], window))
    check_eq(r.one("PROBE")["answered_in_stall"], "1", "unary probe answered during the stall")
    print("      stalled stream held at %s bytes; probe %s ms"
          % (st["received_max"], r.one("PROBE")["latency_ms"]))


# --- maximum message size ---------------------------------------------------------------------

@run.case("a message of exactly the maximum size succeeds; one byte more is RESOURCE_EXHAUSTED "
          "before it was sent", group="backpressure")
def _(srv):
    r = rsload(srv, "msg-limit", "--max-msg", str(MAX_MSG)).expect_ok()
    cases = {c["case"]: c for c in r.records("RESULT")}
    for name in ("exact-put", "exact-echo", "oversize-echo", "oversize-put"):
        check(name in cases, "no result for %s" % name)
    # the Chunk: data's tag and 4-byte length (5), the data, crc32c (5; the server's answer
    # always carries it, so rsload sends one too and the answer is exactly MAX_MSG as well)
    check_eq(cases["exact-echo"]["echoed"], str(MAX_MSG - 5 - 5), "echoed data bytes")
    for name in ("oversize-echo", "oversize-put"):
        c = cases[name]
        check_eq(c["status"], "8", "%s grpc-status" % name)
        check(int(c["accepted"]) < 8 * KiB,
              "%s: %s bytes sent before the answer" % (name, c["accepted"]))
        print("      %s: status %s after %s of %s announced bytes"
              % (name, c["status"], c["accepted"], c["announced"]))


if __name__ == "__main__":
    run.main()
