#!/usr/bin/python3
"""Small-object Put rate and server CPU per Put (issue 15: the cost of the List index hook).

Starts one ringstreamd per --server given (127.0.0.1, free port, data dir in a temp dir,
always stopped), runs --threads client threads doing --puts Puts of --size bytes in all, and
prints Puts/s and the server's CPU time (utime + stime from /proc) per Put. Servers are
measured alternately, --rounds times, so a busy machine hurts each the same.
  usage: perf/put_small.py --server build/ringstreamd [--server old/ringstreamd] ...
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import grpc  # noqa: E402
from harness import Bulk, free_port, pb2  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def one_run(binary, puts, threads, size):
    tmp = tempfile.mkdtemp(prefix="rs-perf-put-")
    port = free_port()
    log = open(os.path.join(tmp, "log"), "wb")
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                             os.path.join(tmp, "data")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        data = b"p" * size
        per = puts // threads
        errors = []

        def worker(t):
            b = Bulk(grpc.insecure_channel("127.0.0.1:%d" % port))
            try:
                for i in range(per):
                    b.put("perf/%d/%06d" % (t, i), data, timeout=30)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        c0, t0 = cpu_s(proc.pid), time.monotonic()
        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall, cpu = time.monotonic() - t0, cpu_s(proc.pid) - c0
        if errors:
            raise RuntimeError("Put failed: %r" % errors[0])
        return per * threads / wall, cpu / (per * threads) * 1e6
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True)
    ap.add_argument("--puts", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    pb2()
    res = {s: [] for s in a.server}
    for r in range(a.rounds):
        for s in a.server:
            rate, us = one_run(os.path.abspath(s), a.puts, a.threads, a.size)
            res[s].append((rate, us))
            print("round %d %s: %.0f Puts/s, %.1f us server CPU per Put" % (r, s, rate, us),
                  flush=True)
    for s, v in res.items():
        print("%s: mean %.0f Puts/s, %.1f us CPU/Put (%d rounds of %d Puts of %d bytes, %d threads)"
              % (s, sum(x[0] for x in v) / len(v), sum(x[1] for x in v) / len(v), len(v),
                 a.puts, a.size, a.threads))


if __name__ == "__main__":
    main()
