#!/usr/bin/python3
"""perf/stalled_puts.py: the server's peak memory while many Puts stall mid-upload (issue 15).

    perf/stalled_puts.py --server BUILD/ringstreamd [--streams 1000] [--conns 10]
                         [--bytes 1M] [--stall 5] [-- SERVER_ARGS...]

Starts the server (harness.Server: free 127.0.0.1 port, fresh data dir, stopped by PID) and
opens --streams Bulk Put streams over --conns raw HTTP/2 connections (python3-h2, the
Attacker of tests/e2e/test_budget.py). Each sends its PutHeader, --bytes of data in 64 KiB
messages, and half of one more 64 KiB message, then stops sending (a client that stalls
mid-upload, with a partial message buffered at the server). After everything was pushed
(nothing moved for 2 s) it waits --stall seconds and prints the server's VmRSS and VmHWM
(KiB, /proc/PID/status) next to the idle figures, and how the streams ended.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

import harness  # noqa: E402
from harness import BULK, Server  # noqa: E402
from test_budget import Attacker, pump, tally, vm_kib  # noqa: E402

KiB = 1024
MiB = 1024 * KiB


def frame(msg):
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def size_arg(s):
    units = {"k": KiB, "m": MiB, "g": 1024 * MiB}
    if s[-1].lower() in units:
        return int(s[:-1]) * units[s[-1].lower()]
    return int(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--server", required=True)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--bytes", type=size_arg, default=MiB)
    ap.add_argument("--stall", type=float, default=5.0)
    ap.add_argument("server_args", nargs="*")
    args = ap.parse_args()
    pb = harness.pb2()
    chunk = pb.PutRequest(data=bytes(64 * KiB)).SerializeToString()
    srv = Server(args.server, args.server_args)
    atk = []
    try:
        srv.start()
        pid = srv.pid()
        time.sleep(0.3)
        idle_rss, idle_hwm = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
        per_conn = (args.streams + args.conns - 1) // args.conns
        left = args.streams
        t0 = time.monotonic()
        for c in range(args.conns):
            a = Attacker(srv.port)
            atk.append(a)
            for i in range(min(per_conn, left)):
                hdr = pb.PutRequest(header=pb.PutHeader(name="stall/%d/%d" % (c, i)))
                body = frame(hdr.SerializeToString())
                body += frame(chunk) * (args.bytes // (64 * KiB)) + frame(chunk)
                a.open(BULK + "Put", body, len(chunk) // 2, False, srv.port)
            left -= min(per_conn, left)
        pump(atk, quiet_s=2.0, limit_s=300)
        pushed = time.monotonic() - t0
        time.sleep(args.stall)
        rss, hwm = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
        unsent = sum(len(a.todo) for a in atk)
        print("stalled_puts: %d Puts over %d conns, %d B + 32 KiB each (%d not fully pushed) "
              "in %.1f s, stalled %.0f s; server %s %s" % (args.streams, args.conns, args.bytes,
                                                           unsent, pushed, args.stall,
                                                           args.server,
                                                           " ".join(args.server_args)))
        print("RESULT idle_rss_kib=%d idle_hwm_kib=%d rss_kib=%d peak_hwm_kib=%d outcomes=%r"
              % (idle_rss, idle_hwm, rss, hwm, tally(atk)))
    finally:
        for a in atk:
            a.close()
        time.sleep(0.5)
        bugs = [ln for ln in srv.stderr_text().splitlines() if "BUG" in ln]
        problems = srv.stop()
    if bugs or problems:
        print("problems: %r %r" % (bugs[:3], problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
