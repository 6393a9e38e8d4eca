#!/usr/bin/python3
"""Resumable Upload against Put: the same bytes sent as one Put, as one Upload stream with
finish, and as --pieces Upload streams (the last with finish), on one ringstreamd
(127.0.0.1, free port, data dir under --tmp, always stopped). Prints MB/s and the server's CPU
seconds (utime + stime from /proc) per scenario; scenarios alternate --rounds times so a busy
machine hurts each the same. The client is python3-grpcio: its own cost is in the wall time.
  usage: perf/upload_vs_put.py --server build/ringstreamd [--mib 256] [--rounds 3] [--tmp DIR]
"""
import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import grpc  # noqa: E402
from harness import BULK, CHANNEL_OPTIONS, Bulk, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MSG = 1 << 20


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--tmp", default=None)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rs-perf-upload-", dir=a.tmp)
    port = free_port()
    log = open(os.path.join(tmp, "log"), "wb")
    proc = subprocess.Popen([a.server, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                             os.path.join(tmp, "data")], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=CHANNEL_OPTIONS)
        b = Bulk(ch)
        pb = b.pb
        start = ch.unary_unary(BULK + "StartUpload", request_serializer=pb.PutHeader.SerializeToString,
                               response_deserializer=pb.UploadStatus.FromString)
        upload = ch.stream_unary(BULK + "Upload", request_serializer=pb.UploadRequest.SerializeToString,
                                 response_deserializer=pb.UploadStatus.FromString)
        data = os.urandom(a.mib << 20)
        want = hashlib.sha256(data).digest()

        def do_put(name):
            info = b.put(name, data, chunk=MSG, sha=want, overwrite=True, timeout=600)
            assert info.sha256 == want

        def do_upload(name, pieces):
            uid = start(pb.PutHeader(name=name, overwrite=True, size=len(data), sha256=want),
                        timeout=60).upload_id
            step = -(-len(data) // pieces)
            for p in range(pieces):
                lo, hi = p * step, min(len(data), (p + 1) * step)

                def gen():
                    for i in range(lo, hi, MSG):
                        yield pb.UploadRequest(upload_id=uid, write_offset=lo if i == lo else 0,
                                               data=data[i:min(hi, i + MSG)],
                                               finish=(p == pieces - 1 and i + MSG >= hi))
                st = upload(gen(), timeout=600)
            assert st.object.sha256 == want

        scen = [("Put, one stream", lambda: do_put("perf/put")),
                ("Upload, one stream + finish", lambda: do_upload("perf/up1", 1)),
                ("Upload, %d streams" % a.pieces, lambda: do_upload("perf/upn", a.pieces))]
        res = {n: [] for n, _ in scen}
        for _ in range(a.rounds):
            for n, fn in scen:
                c0, t0 = cpu_s(proc.pid), time.monotonic()
                fn()
                res[n].append((time.monotonic() - t0, cpu_s(proc.pid) - c0))
        print("%d MiB, %d MiB messages, %d rounds (median)" % (a.mib, MSG >> 20, a.rounds))
        print("| scenario | MB/s | server CPU s |")
        print("|---|--:|--:|")
        for n, _ in scen:
            r = sorted(res[n])
            wall, cpu = r[len(r) // 2]
            print("| %s | %.0f | %.2f |" % (n, len(data) / wall / 1e6, cpu))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
