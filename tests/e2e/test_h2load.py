#!/usr/bin/python3
"""Load with h2load (nghttp2-client): 20000 GET / over 10 connections x 10 streams, then a
unary gRPC call (Stat on a stored object) under load. Every request must succeed.
Usage: test_h2load.py --server build/ringstreamd
"""

import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bulk, TestRun, channel, check, check_eq, pb2, sha256  # noqa: E402

run = TestRun("h2load")

REQ_RE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout")
STATUS_RE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
DATA_RE = re.compile(r"traffic: .*\((\d+)\) data")


def h2load(args, n):
    """Runs h2load with -n n; returns its output after checking every request got a 2xx."""
    cmd = ["h2load", "-n", str(n)] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    print("      " + " ".join(cmd))
    for line in out.splitlines():
        if line.startswith(("finished in", "requests:", "status codes:", "traffic:")):
            print("      " + line)
    check_eq(p.returncode, 0, "h2load exit code; output:\n" + out[-2000:])
    m = REQ_RE.search(out)
    check(m is not None, "no 'requests:' line in h2load's output:\n" + out[-2000:])
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    check_eq((total, done, ok, failed, errored, timeout), (n, n, n, 0, 0, 0),
             "h2load (total, done, succeeded, failed, errored, timeout)")
    check("succeeded, 0 failed, 0 errored" in out, "h2load reports failures")
    s = STATUS_RE.search(out)
    check(s is not None, "no 'status codes:' line in h2load's output")
    check_eq(int(s.group(1)), n, "2xx responses")
    d = DATA_RE.search(out)
    check(d is not None, "no 'traffic:' line in h2load's output")
    return out, int(d.group(1))


@run.case("h2load -n 20000 -c 10 -m 10 GET /: every request 2xx")
def _(srv):
    h2load(["-c", "10", "-m", "10", "http://%s/" % srv.address], 20000)


@run.case("h2load of a unary gRPC Stat: every call succeeds")
def _(srv):
    pb = pb2()
    b = Bulk(channel(srv))
    data = b"h2load payload\n" * 100
    info = b.put("h2load/obj", data)
    check_eq(info.sha256, sha256(data), "Put")
    b.channel.close()
    raw = pb.StatRequest(name="h2load/obj").SerializeToString()
    with tempfile.NamedTemporaryFile(prefix="rs-h2load-", suffix=".grpc") as f:
        f.write(b"\x00" + len(raw).to_bytes(4, "big") + raw)
        f.flush()
        _out, data_bytes = h2load(["-c", "4", "-m", "10", "-d", f.name,
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "http://%s/ringstream.v1.Bulk/Stat" % srv.address], 5000)
    # HTTP 200 alone does not mean the call succeeded: an error is a trailers-only response
    # with no message. Every successful Stat carries one prefixed ObjectInfo.
    reply = 5 + len(info.SerializeToString())
    check(data_bytes >= 5000 * reply, "h2load received %d DATA bytes, want >= %d (5000 "
          "ObjectInfo replies): some calls failed with a grpc-status" % (data_bytes, 5000 * reply))
    b = Bulk(channel(srv))
    check_eq(b.stat("h2load/obj").sha256, sha256(data), "Stat after the load")
    b.channel.close()


if __name__ == "__main__":
    run.main()
