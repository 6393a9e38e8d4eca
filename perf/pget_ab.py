#!/usr/bin/python3
"""`ringstream get --streams N` of two client builds, interleaved A/B (issue 13: the resumable
--streams download checkpoints, i.e. fdatasyncs FILE.part and writes its state, every second
and every 64 MiB per stream; the old client only fsynced once at the end). One release
ringstreamd on 127.0.0.1 (free port, data dir under --tmp, stopped by PID), one object of
--mib MiB of random bytes; each round runs both clients (order alternating) into the same
directory and records wall time and the client's CPU (utime + stime from wait4's rusage).
Prints every round, the medians and the per-round new/base wall ratios.
  usage: perf/pget_ab.py --base OLD/ringstream --new build/ringstream
         --server build/ringstreamd [--mib 512] [--rounds 10] [--streams 4] [--tmp DIR]
"""
import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--streams", default="4")
    ap.add_argument("--tmp", default=None)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="pget-ab-", dir=a.tmp)
    port = free_port()
    addr = "127.0.0.1:%d" % port
    os.mkdir(os.path.join(d, "data"))
    env = dict(os.environ, XDG_CACHE_HOME=os.path.join(d, "cache"))
    env.pop("RINGSTREAM_SERVER", None)
    srv = subprocess.Popen([a.server, "--listen", addr, "--data-dir", os.path.join(d, "data")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or srv.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.05)
        src = os.path.join(d, "src")
        with open(src, "wb") as f:
            for _ in range(a.mib):
                f.write(os.urandom(1 << 20))
        subprocess.run([a.new, "--server", addr, "put", src, "obj"], check=True, env=env,
                       timeout=300)
        os.unlink(src)
        res = {"base": [], "new": []}
        dst = os.path.join(d, "out")
        for r in range(a.rounds):
            for who in (("base", "new") if r % 2 == 0 else ("new", "base")):
                if os.path.exists(dst):
                    os.unlink(dst)
                t = time.monotonic()
                p = subprocess.Popen([a.base if who == "base" else a.new, "--server", addr,
                                      "get", "--streams", a.streams, "obj", dst], env=env)
                _, status, ru = os.wait4(p.pid, 0)
                wall = time.monotonic() - t
                if status != 0:
                    raise SystemExit("%s client failed: status %d" % (who, status))
                cpu = ru.ru_utime + ru.ru_stime
                res[who].append((wall, cpu))
                print("round %d %-4s wall %.3f s cpu %.3f s" % (r, who, wall, cpu), flush=True)
        for who in ("base", "new"):
            w = sorted(x[0] for x in res[who])
            c = sorted(x[1] for x in res[who])
            print("%-4s median wall %.3f s (%.0f MiB/s), client cpu %.3f s"
                  % (who, w[len(w) // 2], a.mib / w[len(w) // 2], c[len(c) // 2]))
        q = sorted(n[0] / b[0] for n, b in zip(res["new"], res["base"]))
        print("new/base wall per round: %s; median %.3f"
              % (" ".join("%.2f" % x for x in q), q[len(q) // 2]))
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
