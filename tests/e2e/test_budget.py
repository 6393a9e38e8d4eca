"""The per-worker memory budget (issue 15, core/budget.h) under attack, release build.

    test_budget.py --server build/ringstreamd [--only NAME] [--conns N] [--legacy]

Each case starts its own ringstreamd (harness.Server: free 127.0.0.1 port, fresh data dir,
stopped by PID, must exit 0) with ONE worker and explicit limits, and runs a well-behaved
bystander beside the attack: grpc.testing EmptyCall every 100 ms on its own connection, each
with a 2 s deadline (BYSTANDER_BOUND_S); every bystander call must succeed. Attackers may get
RESOURCE_EXHAUSTED (grpc-status), REFUSED_STREAM or GOAWAY, or stay parked within their
share; never the bystander. The server must log no "BUG:" line (a leaked charge logs
"BUG: conn N: ... still charged at free").

  parked_partial  --worker-budget 256m --conn-share 32m. --conns (default 8) raw HTTP/2
                  connections x 100 UnaryCall streams, each sending a 4 MiB message without
                  its last 1 KiB, as fast as flow control lets it: server VmHWM <=
                  budget + 64 MiB (RSS_SLACK_KIB). Before the budget (main at 8c8b7a0^,
                  run with --legacy, which drops the budget flags) this parks ~4 MiB per
                  stream: 4 connections reach ~1.6 GiB.
  zero_window     --worker-budget 256m --conn-share 32m. One connection with
                  SETTINGS_INITIAL_WINDOW_SIZE=0 opens 100 UnaryCalls asking for a
                  4,000,000-byte response each (none can leave): server VmRSS growth <=
                  share + 32 MiB; the streams past the share get RESOURCE_EXHAUSTED.
  stalled_puts    --worker-budget 256m --conn-share 32m. 10 connections x 100 Bulk Puts,
                  each sending its header, 1 MiB of data and half of one more 64 KiB
                  message, then nothing: VmHWM <= budget + 64 MiB. Every Put holds two 512
                  KiB stages (workers/bulk/put.c), charged since branch budgett; before,
                  they were not and this held ~1.1 GB whatever the budget.
  idle_conns      --worker-budget 1g --conn-share 32m --max-conns 12000 --idle-timeout-ms
                  600000: 10,000 h2c connections (preface + SETTINGS, then silence; each
                  must get the server's SETTINGS): (VmRSS after - before) / 10,000 <= 96 KiB
                  (IDLE_BOUND_KIB). Needs RLIMIT_NOFILE >= 10,000 + 200 (raised to the hard
                  limit); skipped with one line when the hard limit is lower. The budget is
                  1 GiB here because every connection is charged its 64 KiB output buffer
                  (RS_CONN_CHARGE): at 256 MiB accept pauses near 3,400 connections.
"""

import argparse
import os
import resource
import select
import socket
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402

import harness  # noqa: E402
from harness import (  # noqa: E402
    CHANNEL_OPTIONS, PROTO_DIR, CaseFailure, Server, check, run_cases,
)
from bystander import Bystander, vm_kib  # noqa: E402
from interop_client import load_pb2  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
TS = "/grpc.testing.TestService/"
BUDGET = "256m"
BUDGET_KIB = 256 * 1024
SHARE = "32m"
SHARE_KIB = 32 * 1024
BYSTANDER_PERIOD_S = 0.1
BYSTANDER_BOUND_S = 2.0
RSS_SLACK_KIB = 64 * 1024
IDLE_CONNS = 10000
IDLE_BOUND_KIB = 96
GRPC_RESOURCE_EXHAUSTED = 8
H2_REFUSED_STREAM = 7
OWN_CONN = CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]
LEGACY = False  # --legacy: the server predates --worker-budget


def pb():
    return load_pb2(PROTO_DIR, "grpc_testing")


def budget_args(budget=BUDGET, share=SHARE):
    if LEGACY:
        return []
    return ["--worker-budget", budget, "--conn-share", share]


def run_case(binary, args, body):
    srv = Server(binary, ["--workers", "1"] + list(args))
    try:
        srv.start()
        body(srv)
        check(srv.alive(), "the server died")
        bugs = [ln for ln in srv.stderr_text().splitlines() if "BUG" in ln]
        check(not bugs, "server logged %d BUG lines, first: %s" % (len(bugs), bugs[:1]))
    finally:
        problems = srv.stop()
    check(not problems, "server shutdown: %s" % "; ".join(problems))


# --- raw HTTP/2 attackers (python3-h2), all driven from one thread ---------------------------

class Attacker:
    """One h2c connection with |nstreams| streams, each sending |body| minus what it holds back.
    Outcomes per stream: "grpc-N" (grpc-status in trailers or a trailers-only answer),
    "rst-N" (RST_STREAM code), "goaway" (closed by a GOAWAY), or None (still open)."""

    def __init__(self, port, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.h2 = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        if window is not None:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.out = bytearray(self.h2.data_to_send())
        self.todo = {}  # stream id -> bytes still to send
        self.body = {}
        self.outcome = {}
        self.goaway = None
        self.closed = False
        self.moved = 0  # bytes sent + received: progress

    def open(self, path, body, hold_back, end_stream, port):
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                   (":authority", "127.0.0.1:%d" % port),
                                   ("content-type", "application/grpc"), ("te", "trailers")])
        self.body[sid] = (memoryview(body), len(body) - hold_back, end_stream and hold_back == 0)
        self.todo[sid] = 0
        self.outcome[sid] = None
        self.out += self.h2.data_to_send()
        return sid

    def _events(self, events):
        for ev in events:
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                hdrs = dict(ev.headers)
                if "grpc-status" in hdrs:
                    self.outcome[ev.stream_id] = "grpc-%s" % hdrs["grpc-status"]
                    self.todo.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.StreamReset):
                if self.outcome.get(ev.stream_id) is None:
                    self.outcome[ev.stream_id] = "rst-%d" % int(ev.error_code)
                self.todo.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = (int(ev.error_code), ev.last_stream_id)
                for sid in self.outcome:
                    if self.outcome[sid] is None:
                        self.outcome[sid] = "goaway"
                self.todo.clear()

    def _fill(self):
        for sid in list(self.todo):
            if len(self.out) >= 1 * MiB:
                return
            body, limit, end = self.body[sid]
            off = self.todo[sid]
            try:
                while off < limit and len(self.out) < 1 * MiB:
                    n = min(limit - off, self.h2.local_flow_control_window(sid),
                            self.h2.max_outbound_frame_size)
                    if n <= 0:
                        break
                    last = end and off + n == limit
                    self.h2.send_data(sid, body[off:off + n].tobytes(), end_stream=last)
                    off += n
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.todo.pop(sid, None)
                continue
            self.todo[sid] = off
            if off >= limit:
                self.todo.pop(sid, None)
            self.out += self.h2.data_to_send()

    def step(self, readable):
        """One round: read what arrived, queue what flow control allows, write what fits."""
        if self.closed:
            return
        if readable:
            try:
                while True:
                    data = self.sock.recv(1 << 20)
                    if not data:
                        self.closed = True
                        break
                    self.moved += len(data)
                    self._events(self.h2.receive_data(data))
            except (BlockingIOError, InterruptedError):
                pass
            except (ConnectionError, h2.exceptions.ProtocolError):
                self.closed = True
        if self.closed:
            for sid in self.outcome:
                if self.outcome[sid] is None:
                    self.outcome[sid] = "closed" if self.goaway is None else "goaway"
            return
        self._fill()
        self.out += self.h2.data_to_send()
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionError:
                self.closed = True
                break
            self.moved += n
            del self.out[:n]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def pump(attackers, quiet_s, limit_s):
    """Steps every attacker until nothing moved for |quiet_s| or |limit_s| passed."""
    t_end = time.monotonic() + limit_s
    last_move = time.monotonic()
    before = sum(a.moved for a in attackers)
    while time.monotonic() < t_end:
        live = [a for a in attackers if not a.closed]
        if not live:
            break
        wr = [a.sock for a in live if a.out]
        r, w, _ = select.select([a.sock for a in live], wr, [], 0.05)
        for a in live:
            a.step(a.sock in r)
        now_moved = sum(a.moved for a in attackers)
        if now_moved != before:
            before = now_moved
            last_move = time.monotonic()
        elif time.monotonic() - last_move > quiet_s:
            break


def tally(attackers):
    out = {}
    for a in attackers:
        for o in a.outcome.values():
            key = o or "open (parked)"
            out[key] = out.get(key, 0) + 1
    return out


def frame(msg):
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def grpc_frame(payload_len, declared=None):
    declared = payload_len if declared is None else declared
    return b"\x00" + declared.to_bytes(4, "big") + bytes(payload_len)


def check_attack_outcomes(counts, allowed_extra=()):
    """Attackers: only RESOURCE_EXHAUSTED, REFUSED_STREAM, GOAWAY, or still parked/open."""
    allowed = {"grpc-%d" % GRPC_RESOURCE_EXHAUSTED, "rst-%d" % H2_REFUSED_STREAM, "goaway",
               "open (parked)"} | set(allowed_extra)
    bad = {k: v for k, v in counts.items() if k not in allowed}
    check(not bad, "attacker streams ended otherwise: %r" % bad)


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


@case
def parked_partial(binary, nconns=8):
    def body(srv):
        pid = srv.pid()
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        rss0 = vm_kib(pid, "VmRSS")
        # a 4 MiB message announced, all but its last 1 KiB sent
        msg = grpc_frame(4 * MiB)
        atk = [Attacker(srv.port) for _ in range(nconns)]
        try:
            for a in atk:
                for _ in range(100):
                    a.open(TS + "UnaryCall", msg, 1 * KiB, True, srv.port)
            t0 = time.monotonic()
            pump(atk, quiet_s=2.0, limit_s=60)
            elapsed = time.monotonic() - t0
            hwm = vm_kib(pid, "VmHWM")
            rss = vm_kib(pid, "VmRSS")
            counts = tally(atk)
            print("      %d conns x 100 streams, %.1f s: RSS %d -> %d KiB, VmHWM %d KiB "
                  "(bound %d KiB), outcomes %r, goaways %r"
                  % (nconns, elapsed, rss0, rss, hwm, BUDGET_KIB + RSS_SLACK_KIB, counts,
                     [a.goaway for a in atk if a.goaway]))
            check(srv.alive(), "the server died under the attack")
            if LEGACY:
                print("      (--legacy: a server without the budget flags, same bound)")
            check(hwm <= BUDGET_KIB + RSS_SLACK_KIB,
                  "VmHWM %d KiB > budget %d KiB + %d KiB" % (hwm, BUDGET_KIB, RSS_SLACK_KIB))
            check_attack_outcomes(counts)
            check(sum(v for k, v in counts.items() if k != "open (parked)") > 0,
                  "no attacker stream was refused: the attack was not stopped")
        finally:
            for a in atk:
                a.close()
        time.sleep(0.5)  # the server frees the attackers' connections
        by.stop_and_check(min_calls=5)
    run_case(binary, budget_args(), body)


@case
def zero_window(binary):
    def body(srv):
        pid = srv.pid()
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        rss0 = vm_kib(pid, "VmRSS")
        req = pb().SimpleRequest(response_size=4000000).SerializeToString()
        a = Attacker(srv.port, window=0)
        try:
            for _ in range(100):
                a.open(TS + "UnaryCall", b"\x00" + len(req).to_bytes(4, "big") + req, 0, True,
                       srv.port)
            pump([a], quiet_s=2.0, limit_s=30)
            rss = vm_kib(pid, "VmRSS")
            counts = tally([a])
            grew = rss - rss0
            print("      1 conn x 100 UnaryCall(response 4,000,000 B), window 0: RSS %d -> %d "
                  "KiB (+%d, bound share %d + %d KiB), outcomes %r, goaway %r"
                  % (rss0, rss, grew, SHARE_KIB, 32 * 1024, counts, a.goaway))
            check(grew <= SHARE_KIB + 32 * 1024,
                  "RSS grew %d KiB > share %d KiB + 32 MiB" % (grew, SHARE_KIB))
            # A message is admitted whole or not at all (workers/call.c budget_admits): no
            # stream is cut after its prefix with an INTERNAL_ERROR reset.
            check(counts.get("rst-2", 0) == 0, "INTERNAL_ERROR resets: %r" % counts)
            check_attack_outcomes(counts)
            check(counts.get("grpc-%d" % GRPC_RESOURCE_EXHAUSTED, 0) > 0,
                  "no stream got RESOURCE_EXHAUSTED: %r" % counts)
        finally:
            a.close()
        time.sleep(0.5)
        by.stop_and_check(min_calls=5)
    run_case(binary, budget_args(), body)


@case
def stalled_puts(binary):
    def body(srv):
        pid = srv.pid()
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        rss0 = vm_kib(pid, "VmRSS")
        bulk = harness.pb2()
        chunk = bulk.PutRequest(data=bytes(64 * KiB)).SerializeToString()
        atk = [Attacker(srv.port) for _ in range(10)]
        try:
            for c, a in enumerate(atk):
                for i in range(100):
                    hdr = bulk.PutRequest(header=bulk.PutHeader(name="stall/%d/%d" % (c, i)))
                    body = frame(hdr.SerializeToString())
                    body += frame(chunk) * 16 + frame(chunk)
                    a.open(harness.BULK + "Put", body, len(chunk) // 2, False, srv.port)
            pump(atk, quiet_s=2.0, limit_s=60)
            hwm = vm_kib(pid, "VmHWM")
            counts = tally(atk)
            print("      10 conns x 100 Puts stalled after 1 MiB + 32 KiB: RSS %d KiB before, "
                  "VmHWM %d KiB (bound %d KiB), outcomes %r"
                  % (rss0, hwm, BUDGET_KIB + RSS_SLACK_KIB, counts))
            check(hwm <= BUDGET_KIB + RSS_SLACK_KIB,
                  "VmHWM %d KiB > budget %d KiB + %d KiB" % (hwm, BUDGET_KIB, RSS_SLACK_KIB))
            check_attack_outcomes(counts)
        finally:
            for a in atk:
                a.close()
        time.sleep(0.5)
        by.stop_and_check(min_calls=5)
    run_case(binary, budget_args(), body)


@case
def idle_conns(binary):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_CONNS + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        print("      SKIP idle_conns: RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        return
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else need, hard))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    def body(srv):
        pid = srv.pid()
        by = Bystander(srv, BYSTANDER_BOUND_S, BYSTANDER_PERIOD_S)
        by.start()
        time.sleep(0.3)
        rss0 = vm_kib(pid, "VmRSS")
        socks = []
        try:
            t0 = time.monotonic()
            for _ in range(IDLE_CONNS):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.sendall(preface)
                s.setblocking(False)
                socks.append(s)
            # every connection answered with the server's SETTINGS: its session exists
            waiting = set(socks)
            t_end = time.monotonic() + 60
            while waiting and time.monotonic() < t_end:
                for s in list(waiting):
                    try:
                        if s.recv(4096):
                            waiting.discard(s)
                    except (BlockingIOError, InterruptedError):
                        pass
                if waiting:
                    time.sleep(0.1)
            check(not waiting, "%d of %d connections got no SETTINGS from the server"
                  % (len(waiting), IDLE_CONNS))
            time.sleep(0.5)
            rss = vm_kib(pid, "VmRSS")
            per = (rss - rss0) / IDLE_CONNS
            print("      %d idle h2c connections in %.1f s: VmRSS %d -> %d KiB = %.1f KiB per "
                  "connection (bound %d KiB)" % (IDLE_CONNS, time.monotonic() - t0, rss0, rss,
                                                 per, IDLE_BOUND_KIB))
            check(per <= IDLE_BOUND_KIB, "%.1f KiB per idle connection > %d KiB"
                  % (per, IDLE_BOUND_KIB))
            check(srv.alive(), "the server died")
        finally:
            for s in socks:
                s.close()
        time.sleep(0.5)
        by.stop_and_check(min_calls=5)
    run_case(binary, budget_args("1g") + ["--max-conns", "12000", "--idle-timeout-ms", "600000"],
             body)


def main():
    global LEGACY
    ap = argparse.ArgumentParser(description="ringstream e2e: the per-worker memory budget")
    ap.add_argument("--server", required=True)
    ap.add_argument("--only", default=None)
    ap.add_argument("--conns", type=int, default=8, help="parked_partial connections")
    ap.add_argument("--legacy", action="store_true",
                    help="the server predates --worker-budget: start it without budget flags "
                         "(for the before figures; the bounds are expected to fail)")
    args = ap.parse_args()
    LEGACY = args.legacy
    run_cases(CASES, args.only,
              lambda fn: fn(args.server, args.conns) if fn is parked_partial else fn(args.server),
              exact=True)


if __name__ == "__main__":
    main()
