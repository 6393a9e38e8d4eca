#!/usr/bin/python3
"""End-to-end tests of the `ringstream` command-line client (client/) against a real
ringstreamd: round trips of several sizes, stdin/stdout, ls/stat/rm, exit codes and error
lines, --json, get --streams, resumed downloads and uploads (kill -9 of the client), TLS with
a client certificate, and integrity failures served by a fake Bulk server written here that
lies about crc32c or SHA-256.

The client binary comes from $RS_CLIENT (set by tests/e2e/e2e.cmake).
Groups: "core" (fast; also under the sanitizer build), "large" (100 MiB objects, resumption),
"pget" (resumed get --streams: kill -9, rerun, changed object, corrupt state; also under the
sanitizer build), "tls", "integrity".
Usage: RS_CLIENT=build/ringstream test_client.py --server build/ringstreamd [--group core]
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (BULK, Bulk, CaseFailure, Server, TestRun, channel, check,  # noqa: E402
                     check_eq, pb2, sha256)

MiB = 1024 * 1024
RUN_TIMEOUT_S = 120
CLIENT = os.path.abspath(os.environ.get("RS_CLIENT", "build/ringstream"))
TMP = tempfile.mkdtemp(prefix="rs-client-")
CACHE = os.path.join(TMP, "cache")

run = TestRun("client")

EXIT_OK, EXIT_GRPC, EXIT_USAGE, EXIT_IO, EXIT_INTEGRITY, EXIT_CONN = 0, 1, 2, 3, 4, 5


def path(name):
    return os.path.join(TMP, name)


def write_file(name, data):
    with open(path(name), "wb") as f:
        f.write(data)
    return path(name)


def read_file(p):
    with open(p, "rb") as f:
        return f.read()


def env():
    e = dict(os.environ)
    e.pop("RINGSTREAM_SERVER", None)
    e["XDG_CACHE_HOME"] = CACHE
    return e


def rs(srv_addr, *args, stdin=None, want=None, tls=()):
    """Runs the client; returns (exit code, stdout bytes, stderr text). With |want|, checks
    the exit code."""
    cmd = [CLIENT, "--server", srv_addr] + list(tls) + list(args)
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env(), timeout=RUN_TIMEOUT_S)
    err = p.stderr.decode(errors="replace")
    if want is not None and p.returncode != want:
        raise CaseFailure("%s: exit %d, want %d; stderr: %s"
                          % (" ".join(args), p.returncode, want, err.strip()[-600:]))
    return p.returncode, p.stdout, err


def rs_json(srv_addr, *args, want=EXIT_OK, tls=()):
    _, out, _ = rs(srv_addr, "--json", *args, want=want, tls=tls)
    lines = [ln for ln in out.decode().splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]


def pattern(n, seed):
    """Deterministic incompressible-ish bytes (fast for 100 MiB)."""
    block = sha256(b"seed%d" % seed) * 2048  # 64 KiB
    reps = n // len(block) + 1
    return (block * reps)[:n] if n else b""


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise CaseFailure("%s did not happen within %.0f s" % (what, timeout))


# --- core ----------------------------------------------------------------------------------

def restart_on_port(old, data_dir):
    """A new server on |old|'s port and |data_dir| (a client's resume state is kept per
    server address), started; the caller stops it."""
    port = old.port
    s = Server(run.args.server, data_dir=data_dir)
    free_port = harness.free_port
    harness.free_port = lambda: port
    try:
        s.start()
    except BaseException:
        s.stop()
        raise
    finally:
        harness.free_port = free_port
    return s


@run.case("put/get round trip: 0 B, 1 B, 5 MiB (files compared, sha256 = the server's)")
def _(srv):
    for n in (0, 1, 5 * MiB):
        data = pattern(n, n) if n != 1 else b"x"
        src = write_file("rt%d" % n, data)
        res = rs_json(srv.address, "put", src, "rt/%d" % n)
        check_eq(len(res), 1, "put results")
        check_eq((res[0]["ok"], res[0]["size"], res[0]["sha256"]),
                 (True, n, sha256(data).hex()), "put result")
        dst = path("rt%d.out" % n)
        rs(srv.address, "get", "rt/%d" % n, dst, want=EXIT_OK)
        check(read_file(dst) == data, "%d-byte round trip differs" % n)
        check(not os.path.exists(dst + ".part"), "%d: .part left behind" % n)


@run.case("stdin and stdout: put -, get -")
def _(srv):
    data = pattern(3 * MiB + 17, 7)
    rs(srv.address, "put", "-", "pipe/a", stdin=data, want=EXIT_OK)
    _, out, _ = rs(srv.address, "get", "pipe/a", "-", want=EXIT_OK)
    check(out == data, "stdout bytes differ from what went into stdin")
    # An empty stdin makes an empty object.
    rs(srv.address, "put", "-", "pipe/empty", stdin=b"", want=EXIT_OK)
    _, out, _ = rs(srv.address, "get", "pipe/empty", "-", want=EXIT_OK)
    check_eq(out, b"", "empty object")
    # A stdin put of exactly one data message size boundary.
    data = pattern(MiB, 8)
    rs(srv.address, "put", "-", "pipe/1m", stdin=data, want=EXIT_OK)
    _, out, _ = rs(srv.address, "get", "pipe/1m", "-", want=EXIT_OK)
    check(out == data, "1 MiB stdin object differs")


@run.case("ls with a prefix, stat, rm (text and --json)")
def _(srv):
    for name in ("ls/a", "ls/b/c", "lsx", "other"):
        rs(srv.address, "put", "-", name, stdin=name.encode(), want=EXIT_OK)
    names = [o["name"] for o in rs_json(srv.address, "ls", "ls/")]
    check_eq(names, ["ls/a", "ls/b/c"], "ls ls/")
    names = [o["name"] for o in rs_json(srv.address, "ls", "ls")]
    check_eq(names, ["ls/a", "ls/b/c", "lsx"], "ls ls")
    _, out, _ = rs(srv.address, "ls", "ls/", want=EXIT_OK)
    lines = out.decode().splitlines()
    check_eq(len(lines), 2, "ls text lines")
    check(lines[0].split()[0] == "4" and lines[0].endswith("ls/a"), "ls line: %r" % lines[0])
    st = rs_json(srv.address, "stat", "ls/b/c")[0]
    check_eq((st["name"], st["size"], st["sha256"]), ("ls/b/c", 6, sha256(b"ls/b/c").hex()),
             "stat")
    _, out, _ = rs(srv.address, "stat", "ls/b/c", want=EXIT_OK)
    check("sha256:   " + sha256(b"ls/b/c").hex() in out.decode(), "stat text: %r" % out)
    res = rs_json(srv.address, "rm", "ls/b/c")[0]
    check_eq(res["name"], "ls/b/c", "rm result")
    rs(srv.address, "stat", "ls/b/c", want=EXIT_GRPC)
    names = [o["name"] for o in rs_json(srv.address, "ls", "ls/")]
    check_eq(names, ["ls/a"], "ls after rm")


@run.case("exit codes and error lines: NOT_FOUND, ALREADY_EXISTS, refused, usage, local I/O")
def _(srv):
    code, _, err = rs(srv.address, "get", "big.bin", path("nf.out"))
    check_eq(code, EXIT_GRPC, "get of a missing object")
    check(err.startswith("ringstream: get big.bin: NOT_FOUND: "), "error line: %r" % err)
    check_eq(len(err.strip().splitlines()), 1, "one error line")
    check(not os.path.exists(path("nf.out")) and not os.path.exists(path("nf.out.part")),
          "a failed get left a file")
    res = rs_json(srv.address, "rm", "big.bin", want=EXIT_GRPC)[0]
    check_eq((res["ok"], res["error"], res["grpc_status"], res["exit"]),
             (False, "NOT_FOUND", 5, 1), "--json error")

    src = write_file("ae", b"first")
    rs(srv.address, "put", src, "ae", want=EXIT_OK)
    write_file("ae", b"second")
    code, _, err = rs(srv.address, "put", src, "ae")
    check_eq(code, EXIT_GRPC, "put over an existing object")
    check(err.startswith("ringstream: put ae: ALREADY_EXISTS: "), "error line: %r" % err)
    rs(srv.address, "put", "--overwrite", src, "ae", want=EXIT_OK)
    _, out, _ = rs(srv.address, "get", "ae", "-", want=EXIT_OK)
    check_eq(out, b"second", "overwritten object")

    code, _, err = rs(srv.address, "put", src, "bad//name")
    check_eq(code, EXIT_GRPC, "bad name")
    check("INVALID_ARGUMENT" in err, "bad name error: %r" % err)

    port = harness.free_port()
    code, _, err = rs("127.0.0.1:%d" % port, "ls")
    check_eq(code, EXIT_CONN, "connection refused")
    check(err.startswith("ringstream: ls: UNAVAILABLE: ") and "refused" in err, repr(err))
    res = rs_json("127.0.0.1:%d" % port, "stat", "x", want=EXIT_CONN)[0]
    check_eq((res["ok"], res["exit"]), (False, 5), "--json connection failure")

    rs(srv.address, "frobnicate", want=EXIT_USAGE)
    rs(srv.address, "get", "onlyone", want=EXIT_USAGE)
    rs(srv.address, "--streams", "0", "get", "a", "b", want=EXIT_USAGE)
    rs(srv.address, "--cert", path("x.pem"), "ls", want=EXIT_USAGE)
    code, out, _ = rs(srv.address, "--help", want=EXIT_OK)
    check(b"Exit codes:" in out, "--help lists the exit codes")
    code, out, _ = rs(srv.address, "--version", want=EXIT_OK)
    check(out.startswith(b"ringstream ") and b"CRC32C:" in out, "--version: %r" % out)
    rs(srv.address, "--no-such-option", "ls", want=EXIT_USAGE)
    code, _, err = rs(srv.address, "put", path("no-such-file"), "x")
    check_eq(code, EXIT_IO, "put of a missing file")
    check("No such file" in err, repr(err))
    res = rs_json(srv.address, "put", path("no-such-file"), "x", want=EXIT_IO)[0]
    check_eq((res["ok"], res["exit"], res["error"]), (False, 3, "LOCAL_IO"), "--json local error")
    os.makedirs(path("not-a-dir-parent"), exist_ok=True)
    rs(srv.address, "put", "-", "io/x", stdin=b"abc", want=EXIT_OK)
    code, _, _ = rs(srv.address, "get", "io/x", path("no/such/dir/file"))
    check_eq(code, EXIT_IO, "get into a missing directory")


@run.case("a file that shrinks while being sent: exit 3 or 4, nothing published")
def _(srv):
    # The file is truncated while the client, slowed by --limit-rate, is sending it: the
    # client notices the short read (exit 3), or the server the size/SHA-256 mismatch against
    # the header (DATA_LOSS, exit 4); either way nothing is published.
    data = pattern(6 * MiB, 11)
    src = write_file("shrink", data)
    p = subprocess.Popen([CLIENT, "--server", srv.address, "--limit-rate", "2M",
                          "--resumable-threshold", "1G", "put", src, "shrink"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        time.sleep(0.5)
        with open(src, "r+b") as f:
            f.truncate(3 * MiB)
        _, err = p.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check(p.returncode in (EXIT_IO, EXIT_INTEGRITY), "exit %d: %s" % (p.returncode, err))
    rs(srv.address, "stat", "shrink", want=EXIT_GRPC)


@run.case("bench unary/get/put/echo: every call OK, JSON result; refused -> exit 5")
def _(srv):
    for kind in ("unary", "get", "put", "echo"):
        res = rs_json(srv.address, "bench", kind, "--duration", "1", "--conns", "2",
                      "--streams", "3", "--size", "200K")
        check_eq(len(res), 1, kind + " results")
        r = res[0]
        check_eq((r["ok"], r["kind"], r["errors"], r["conns"], r["streams"]),
                 (True, kind, 0, 2, 3), kind + " result")
        check(r["calls"] > 0, "%s: no call completed" % kind)
        lat = r["latency_us"]
        check(lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"] * 1.05 + 1,
              "%s: percentiles out of order: %r" % (kind, lat))
    code, _, err = rs("127.0.0.1:%d" % harness.free_port(), "bench", "unary", "--duration", "1")
    check_eq(code, EXIT_CONN, "bench against a refused port")
    rs(srv.address, "bench", "frob", want=EXIT_USAGE)


# --- large objects, parallel and resumed transfers -------------------------------------------

BIG = 100 * MiB


@run.case("100 MiB round trip, get --streams 4", group="large")
def _(srv):
    data = pattern(BIG, 100)
    src = write_file("big", data)
    res = rs_json(srv.address, "put", src, "big/100m")[0]
    check_eq(res["sha256"], sha256(data).hex(), "put sha256")
    dst = path("big.out")
    rs(srv.address, "get", "big/100m", dst, want=EXIT_OK)
    check(read_file(dst) == data, "100 MiB get differs")
    os.unlink(dst)
    res = rs_json(srv.address, "get", "--streams", "4", "big/100m", dst)[0]
    check_eq(res["streams"], 4, "streams")
    check(read_file(dst) == data, "100 MiB get --streams 4 differs")
    check(not os.path.exists(dst + ".part"), ".part left behind")


def start_slow_get(srv, name, dst, rate="20M"):
    return subprocess.Popen([CLIENT, "--server", srv.address, "--limit-rate", rate, "get",
                             name, dst], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env())


def kill9(p):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()


@run.case("resumed get: kill -9 mid-way, truncate the .part, rerun; a changed object restarts",
          group="large")
def _(srv):
    data = pattern(BIG, 101)
    rs(srv.address, "put", write_file("rg", data), "rg/obj", want=EXIT_OK)
    dst = path("rg.out")
    part = dst + ".part"
    p = start_slow_get(srv, "rg/obj", dst)
    try:
        wait_for(lambda: os.path.exists(part) and os.path.getsize(part) >= 20 * MiB, 30,
                 ".part reaching 20 MiB")
    finally:
        kill9(p)
    size = os.path.getsize(part)
    check(size < BIG, "the download finished before the kill")
    cut = size // 2 + 12345  # mid-chunk
    with open(part, "r+b") as f:
        f.truncate(cut)
    res = rs_json(srv.address, "get", "rg/obj", dst)[0]
    check_eq(res["resumed_from"], cut, "resumed from the truncated .part")
    check(read_file(dst) == data, "resumed download differs")
    check(not os.path.exists(part), ".part left behind")

    # Interrupted again, then the object changes: the rerun must start over from 0.
    os.unlink(dst)
    p = start_slow_get(srv, "rg/obj", dst)
    try:
        wait_for(lambda: os.path.exists(part) and os.path.getsize(part) >= 10 * MiB, 30,
                 ".part reaching 10 MiB")
    finally:
        kill9(p)
    new = pattern(BIG // 2, 102)
    rs(srv.address, "put", "--overwrite", write_file("rg2", new), "rg/obj", want=EXIT_OK)
    res = rs_json(srv.address, "get", "rg/obj", dst)[0]
    check_eq((res["resumed_from"], res["sha256"]), (0, sha256(new).hex()), "restart")
    check(read_file(dst) == new, "restarted download differs")


def server_has_uploads(srv):
    """True when the server implements StartUpload (the resumable-upload branch)."""
    ch = channel(srv)
    try:
        fn = ch.unary_unary(BULK + "QueryUpload",
                            request_serializer=pb2().UploadRef.SerializeToString,
                            response_deserializer=pb2().UploadStatus.FromString)
        try:
            fn(pb2().UploadRef(upload_id="probe-none"), timeout=10)
        except grpc.RpcError as e:
            return e.code() != grpc.StatusCode.UNIMPLEMENTED
        return True
    finally:
        ch.close()


@run.case("resumed put: kill -9 of the client mid-upload, same command resumes", group="large")
def _(srv):
    data = pattern(40 * MiB, 103)
    src = write_file("rp", data)
    if not server_has_uploads(srv):
        # A server without StartUpload: a put above the threshold still works, as one Put.
        res = rs_json(srv.address, "put", src, "rp/obj")[0]
        check_eq((res["resumable"], res["sha256"]), (False, sha256(data).hex()), "fallback")
        print("NOTE  resumed put: the server has no StartUpload; only the fallback was tested")
        return
    updir = os.path.join(CACHE, "ringstream", "uploads")
    p = subprocess.Popen([CLIENT, "--server", srv.address, "--limit-rate", "10M", "put", src,
                          "rp/obj"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=env())
    try:
        wait_for(lambda: os.path.isdir(updir) and os.listdir(updir), 30, "upload state file")
        time.sleep(1.5)  # ~15 MiB at 10 MiB/s
    finally:
        kill9(p)
    check(p.returncode == -signal.SIGKILL, "the upload finished before the kill")
    rs(srv.address, "stat", "rp/obj", want=EXIT_GRPC)  # nothing published yet
    res = rs_json(srv.address, "put", src, "rp/obj")[0]
    check_eq(res["resumable"], True, "resumable upload")
    check(0 < res["resumed_from"] < len(data), "resumed_from %d" % res["resumed_from"])
    check_eq(res["sha256"], sha256(data).hex(), "sha256")
    _, out, _ = rs(srv.address, "get", "rp/obj", "-", want=EXIT_OK)
    check(out == data, "resumed upload differs")
    check_eq(os.listdir(updir), [], "upload state left behind")

    # Interrupted, then the file changes: the rerun starts over (and the object is the new).
    p = subprocess.Popen([CLIENT, "--server", srv.address, "--limit-rate", "10M", "put",
                          "--overwrite", src, "rp/obj"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env())
    try:
        wait_for(lambda: os.listdir(updir), 30, "upload state file")
        time.sleep(1.0)
    finally:
        kill9(p)
    new = pattern(20 * MiB, 104)
    write_file("rp", new)
    res = rs_json(srv.address, "put", "--overwrite", src, "rp/obj")[0]
    check_eq((res["resumed_from"], res["sha256"]), (0, sha256(new).hex()), "changed file")


@run.case("server killed mid-transfer: exit 5, state kept; restarted server: both resume",
          group="large")
def _(srv):
    data_dir = os.path.join(TMP, "restart-data")
    os.mkdir(data_dir)
    s = Server(run.args.server, data_dir=data_dir)
    try:
        s.start()
        has_uploads = server_has_uploads(s)
        data = pattern(48 * MiB, 500)
        src = write_file("nl", data)
        rs(s.address, "put", src, "nl/get", want=EXIT_OK)
        dst = path("nl.out")
        p = start_slow_get(s, "nl/get", dst, rate="16M")
        up = subprocess.Popen([CLIENT, "--server", s.address, "--limit-rate", "16M", "put", src,
                               "nl/put"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env())
        try:
            wait_for(lambda: os.path.exists(dst + ".part") and
                     os.path.getsize(dst + ".part") >= 8 * MiB, 30, ".part reaching 8 MiB")
            time.sleep(0.3)
            s.kill9()
            p.wait(timeout=60)
            _, uperr = up.communicate(timeout=60)
        finally:
            kill9(p)
            kill9(up)
        check_eq(p.returncode, EXIT_CONN, "get when the server died")
        check_eq(up.returncode, EXIT_CONN, "put when the server died: %s" % uperr)
        check(os.path.getsize(dst + ".part") > 0, "the .part file was not kept")
        check(not os.path.exists(dst), "a final file after a failed get")

        # The same address again (an upload's state is kept per server address).
        s = restart_on_port(s, data_dir)
        res = rs_json(s.address, "get", "nl/get", dst)[0]
        check(res["resumed_from"] > 0, "get did not resume: %r" % res)
        check(read_file(dst) == data, "resumed get differs")
        res = rs_json(s.address, "put", src, "nl/put")[0]
        if has_uploads:
            check(res["resumed_from"] > 0, "put did not resume across a restart: %r" % res)
        check_eq(res["sha256"], sha256(data).hex(), "put after restart")
        _, out, _ = rs(s.address, "get", "nl/put", "-", want=EXIT_OK)
        check(out == data, "put after restart differs")
    finally:
        problems = s.stop()
    check(not problems, "restarted server: %s" % problems)


# --- resumed get --streams (group "pget": also under the sanitizer build) -------------------

PGET_SIZE = 64 * MiB


def pget_state_path(dst, name):
    """Where the client keeps the download state of |dst| (cli.c rsc_state_path: the first
    16 bytes of the SHA-256 of "abspath(FILE.part)\\nNAME", in hex)."""
    key = ("%s.part\n%s" % (os.path.realpath(dst), name)).encode()
    return os.path.join(CACHE, "ringstream", "downloads", sha256(key)[:16].hex())


def pget_durable(state):
    """Bytes a --streams state records as durable (0 when absent or unreadable): the object
    size minus what its ranges still miss."""
    try:
        with open(state) as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    size = [int(ln.split()[1]) for ln in lines if ln.startswith("size ")]
    left = 0
    for ln in lines:
        f = ln.split()
        if len(f) == 3 and all(x.isdigit() for x in f):
            left += int(f[1]) - int(f[0]) - int(f[2])
    return size[0] - left if size else 0


def bulk_read_bytes(srv):
    """ringstream_bulk_read_bytes_total summed over workers (GET /metrics over h2c)."""
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge",
                          "http://%s/metrics" % srv.address], capture_output=True, timeout=30)
    check(out.returncode == 0, "curl /metrics: %s" % out.stderr.decode())
    total = 0
    for ln in out.stdout.decode().splitlines():
        if ln.startswith("ringstream_bulk_read_bytes_total{"):
            total += int(float(ln.split()[-1]))
    return total


def killed_pget(srv, name, dst, streams=4, at_least=8 * MiB):
    """Starts a rate-limited `get --streams N`, kills it (-9) once its state records
    |at_least| durable bytes; returns those bytes."""
    state = pget_state_path(dst, name)
    p = subprocess.Popen([CLIENT, "--server", srv.address, "--limit-rate", "16M", "get",
                          "--streams", str(streams), name, dst], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env())
    try:
        wait_for(lambda: pget_durable(state) >= at_least or p.poll() is not None, 60,
                 "%d durable bytes in the state" % at_least)
    finally:
        kill9(p)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    check(p.returncode == -signal.SIGKILL, "the download ended before the kill: exit %d %s"
          % (p.returncode, err.strip()[-300:]))
    check(os.path.exists(dst + ".part") and not os.path.exists(dst), ".part / final file")
    return pget_durable(state)


@run.case("resumed get --streams 4: kill -9 mid-way, rerun resumes and sends less again; "
          "another N re-splits", group="pget")
def _(srv):
    data = pattern(PGET_SIZE, 600)
    name = "pg/obj"
    rs(srv.address, "put", write_file("pg", data), name, want=EXIT_OK)
    dst = path("pg.out")
    state = pget_state_path(dst, name)
    durable = killed_pget(srv, name, dst)
    time.sleep(0.3)  # the server notices the dead connection before the count is taken
    before = bulk_read_bytes(srv)
    res = rs_json(srv.address, "get", "--streams", "4", name, dst)[0]
    sent = bulk_read_bytes(srv) - before
    check_eq((res["sha256"], res["streams"]), (sha256(data).hex(), 4), "result")
    check_eq(res["resumed_bytes"], res["resumed_from"], "resumed_bytes = resumed_from")
    check(durable <= res["resumed_bytes"] < PGET_SIZE,
          "resumed %d bytes, %d were durable" % (res["resumed_bytes"], durable))
    check(sent < PGET_SIZE, "the server read %d bytes again, the whole object" % sent)
    check(sent >= PGET_SIZE - res["resumed_bytes"],
          "the server read %d bytes for the %d missing" % (sent, PGET_SIZE - res["resumed_bytes"]))
    check(read_file(dst) == data, "resumed download differs")
    check(not os.path.exists(dst + ".part") and not os.path.exists(state),
          ".part or state left behind")

    # Another N on the rerun: what is left is split again among 3 (then 6) streams.
    for rerun in (3, 6):
        os.unlink(dst)
        durable = killed_pget(srv, name, dst)
        res = rs_json(srv.address, "get", "--streams", str(rerun), name, dst)[0]
        check(durable <= res["resumed_bytes"] < PGET_SIZE,
              "N=%d: resumed %d bytes, %d were durable" % (rerun, res["resumed_bytes"], durable))
        check(read_file(dst) == data, "N=%d: resumed download differs" % rerun)
        check(not os.path.exists(state), "N=%d: state left behind" % rerun)

    # A single-stream rerun of a --streams download: its state is not the single stream's;
    # it starts over cleanly.
    os.unlink(dst)
    killed_pget(srv, name, dst)
    res = rs_json(srv.address, "get", name, dst)[0]
    check_eq(res["resumed_from"], 0, "single stream after --streams")
    check(read_file(dst) == data, "single-stream rerun differs")


@run.case("get --streams: server killed mid-way: exit 5, state kept; restarted: resumes",
          group="pget")
def _(srv):
    data_dir = os.path.join(TMP, "pget-restart-data")
    os.mkdir(data_dir)
    data = pattern(PGET_SIZE, 604)
    name = "pg/restart"
    dst = path("pgs.out")
    state = pget_state_path(dst, name)
    s = Server(run.args.server, data_dir=data_dir)
    try:
        s.start()
        rs(s.address, "put", write_file("pgs", data), name, want=EXIT_OK)
        p = subprocess.Popen([CLIENT, "--server", s.address, "--limit-rate", "16M", "get",
                              "--streams", "4", name, dst], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env())
        try:
            wait_for(lambda: pget_durable(state) >= 8 * MiB or p.poll() is not None, 60,
                     "8 MiB durable")
            s.kill9()
            p.wait(timeout=60)
        finally:
            kill9(p)
        check_eq(p.returncode, EXIT_CONN, "get --streams when the server died")
        durable = pget_durable(state)  # the last checkpoint, on the way out
        check(8 * MiB <= durable < PGET_SIZE, "durable %d after the failure" % durable)
        check(not os.path.exists(dst), "a final file after a failed get")
        s = restart_on_port(s, data_dir)
        res = rs_json(s.address, "get", "--streams", "4", name, dst)[0]
        check_eq(res["resumed_bytes"], durable, "resumed from the saved state")
        check(read_file(dst) == data, "resumed get --streams differs")
    finally:
        problems = s.stop()
    check(not problems, "restarted server: %s" % problems)


@run.case("resumed get --streams: a replaced object restarts from 0 with the new content",
          group="pget")
def _(srv):
    name = "pg/replaced"
    rs(srv.address, "put", write_file("pgr", pattern(PGET_SIZE, 601)), name, want=EXIT_OK)
    dst = path("pgr.out")
    killed_pget(srv, name, dst)
    new = pattern(PGET_SIZE - 3 * MiB - 17, 602)
    rs(srv.address, "put", "--overwrite", write_file("pgr2", new), name, want=EXIT_OK)
    res = rs_json(srv.address, "get", "--streams", "4", name, dst)[0]
    check_eq((res["resumed_bytes"], res["size"], res["sha256"]), (0, len(new), sha256(new).hex()),
             "restart")
    check(read_file(dst) == new, "restarted download differs")


@run.case("resumed get --streams: a corrupt, truncated or foreign state restarts from 0",
          group="pget")
def _(srv):
    data = pattern(PGET_SIZE, 603)
    name = "pg/corrupt"
    rs(srv.address, "put", write_file("pgc", data), name, want=EXIT_OK)
    dst = path("pgc.out")
    state = pget_state_path(dst, name)

    def edit_range(text):  # one range line claims more bytes done; the check line stays
        lines = text.split("\n")
        for i, ln in enumerate(lines):
            f = ln.split()
            if len(f) == 3 and all(x.isdigit() for x in f):
                lines[i] = "%s %s %d" % (f[0], f[1], int(f[1]) - int(f[0]))
                break
        return "\n".join(lines)

    def foreign(text):  # a well-formed state (check line right) of another object name
        body = text[:text.index("check ")].replace("pg/corrupt".encode().hex(),
                                                   "pg/other".encode().hex())
        return body + "check %08x\n" % _crc32c_ref(body.encode())

    for what, corrupt in (("a range edited", edit_range),
                          ("torn", lambda t: t[:len(t) // 2]),
                          ("garbage", lambda t: "\x00\xff junk\n" * 40),
                          ("another object's", foreign)):
        if os.path.exists(dst):
            os.unlink(dst)
        killed_pget(srv, name, dst)
        with open(state, "r+", errors="surrogateescape") as f:
            text = f.read()
            f.seek(0)
            f.truncate()
            f.write(corrupt(text))
        res = rs_json(srv.address, "get", "--streams", "4", name, dst)[0]
        check_eq(res["resumed_bytes"], 0, "%s state: resumed" % what)
        check(read_file(dst) == data, "%s state: download differs" % what)
        check(not os.path.exists(state), "%s state: left behind" % what)

    # The .part truncated behind the state's back: restart, never a bad file.
    os.unlink(dst)
    killed_pget(srv, name, dst)
    with open(dst + ".part", "r+b") as f:
        f.truncate(PGET_SIZE // 2)
    res = rs_json(srv.address, "get", "--streams", "4", name, dst)[0]
    check_eq(res["resumed_bytes"], 0, "truncated .part: resumed")
    check(read_file(dst) == data, "truncated .part: download differs")


# --- TLS -----------------------------------------------------------------------------------

@run.case("TLS: put/get with --ca and a client certificate; no cert or wrong CA fails",
          group="tls")
def _(srv):
    pki = os.path.join(TMP, "pki")
    subprocess.run([os.path.join(harness.REPO, "scripts", "gen-test-certs.sh"), pki],
                   check=True, stdout=subprocess.DEVNULL)
    p = lambda n: os.path.join(pki, n)  # noqa: E731
    s = Server(run.args.server, ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"),
                                 "--tls-client-ca", p("ca.pem")])
    try:
        s.start()
        addr = "localhost:%d" % s.port
        tls = ["--ca", p("ca.pem"), "--cert", p("client.pem"), "--key", p("client.key")]
        data = pattern(3 * MiB + 5, 200)
        res = rs_json(addr, "put", write_file("tls", data), "tls/a", tls=tls)[0]
        check_eq(res["sha256"], sha256(data).hex(), "TLS put")
        rs(addr, "get", "tls/a", path("tls.out"), want=EXIT_OK, tls=tls)
        check(read_file(path("tls.out")) == data, "TLS round trip differs")
        names = [o["name"] for o in rs_json(addr, "ls", tls=tls)]
        check_eq(names, ["tls/a"], "TLS ls")
        # Large enough for records to straddle every read of the client, which opens them
        # itself (core/tls.h rs_tls_open), on one stream and on three.
        big = pattern(48 * MiB + 4097, 201)
        rs_json(addr, "put", write_file("tls-big", big), "tls/big", tls=tls)
        for streams in ("1", "3"):
            out = path("tls-big-%s.out" % streams)
            rs(addr, "get", "--streams", streams, "tls/big", out, want=EXIT_OK, tls=tls)
            check(read_file(out) == big, "TLS download with %s stream(s) differs" % streams)
        # The server asks for a client certificate: without one the handshake fails.
        code, _, err = rs(addr, "ls", tls=["--ca", p("ca.pem")])
        check_eq(code, EXIT_CONN, "no client certificate")
        # A server certificate from a CA we do not trust.
        code, _, err = rs(addr, "ls", tls=["--ca", p("other-ca.pem"), "--cert",
                                           p("client.pem"), "--key", p("client.key")])
        check_eq(code, EXIT_CONN, "untrusted server")
        check("TLS" in err, "error names TLS: %r" % err)
        # Plain HTTP/2 to a TLS port fails as a connection error, not a hang.
        code, _, _ = rs(addr, "--timeout", "5", "ls")
        check_eq(code, EXIT_CONN, "plaintext to a TLS port")
        # An IP address with a private CA: the chain is checked (no IP SAN matching).
        rs("127.0.0.1:%d" % s.port, "stat", "tls/a", want=EXIT_OK, tls=tls)
        # --servername: the name checked in the certificate.
        rs("127.0.0.1:%d" % s.port, "--servername", "localhost", "stat", "tls/a", want=EXIT_OK,
           tls=tls)
        code, _, err = rs("127.0.0.1:%d" % s.port, "--servername", "wrong.example", "stat",
                          "tls/a", tls=tls)
        check_eq(code, EXIT_CONN, "name mismatch")
        check("mismatch" in err, "name mismatch error: %r" % err)
    finally:
        problems = s.stop()
    check(not problems, "TLS server: %s" % problems)


# --- integrity failures from a lying server ---------------------------------------------------

def _crc32c_ref(data):
    """Bit-reflected CRC32C (polynomial 0x82F63B78), one table lookup per byte."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _crc32c_fast():
    import crcmod.predefined
    fn = crcmod.predefined.mkCrcFun("crc-32c")
    # The checker must be right before it judges the client.
    assert fn(b"123456789") == _crc32c_ref(b"123456789") == 0xE3069283
    probe = bytes(range(256)) * 5
    assert fn(probe) == _crc32c_ref(probe)
    return fn


_crc32c = _crc32c_fast()


class FakeBulk:
    """A grpcio server with Stat and Get of one object, lying as |mode| says: "crc" (one
    chunk's crc32c is wrong) or "sha" (Stat's SHA-256 is not the data's)."""

    def __init__(self, mode, data):
        pb = pb2()
        self.data = data
        self.changed = False

        def stat(req, ctx):
            if mode == "garbage-stat":
                return b"\x0a\xff\xff\xff"  # a length running past the end
            data = self.data
            sha = sha256(data) if mode != "sha" else sha256(data + b"!")
            return pb.ObjectInfo(name=req.name, size=len(data), sha256=sha).SerializeToString()

        def get(req, ctx):
            data = self.data
            if mode != "sha" and req.if_match_sha256 and req.if_match_sha256 != sha256(data):
                ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "object changed")
            if mode == "changed" and not self.changed:
                # The object is overwritten between the client's Stat and its Get.
                self.changed = True
                self.data = data = data[::-1] + b"new"
                ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "object changed")
            step = 64 * 1024
            end = len(data) if req.length == 0 else min(len(data), req.offset + req.length)
            if mode == "short":
                end -= 1000
            for i, off in enumerate(range(req.offset, end, step)):
                piece = data[off:min(off + step, end)]
                crc = _crc32c(piece)
                if mode == "crc" and i == 2:
                    crc ^= 0x1
                if mode == "offset" and i == 1:
                    off += 1
                if mode == "garbage-chunk" and i == 1:
                    yield b"\x0a\x05ab"
                    return
                yield pb.Chunk(data=piece, offset=off, crc32c=crc).SerializeToString()

        handler = grpc.method_handlers_generic_handler("ringstream.v1.Bulk", {
            "Stat": grpc.unary_unary_rpc_method_handler(
                stat, request_deserializer=pb.StatRequest.FromString,
                response_serializer=lambda b: b),
            "Get": grpc.unary_stream_rpc_method_handler(
                get, request_deserializer=pb.GetRequest.FromString,
                response_serializer=lambda b: b),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(grace=None).wait(5)


class FakeUploads:
    """The resumable-upload half of the contract in memory (StartUpload, Upload, QueryUpload,
    AbortUpload; whole messages kept when a stream breaks), plus Stat, to test the client's
    side of it against a server that does exactly what proto/bulk.proto says."""

    def __init__(self):
        import crcmod.predefined
        crc = crcmod.predefined.mkCrcFun("crc-32c")
        assert crc(b"123456789") == 0xE3069283
        pb = pb2()
        self.uploads = {}
        self.objects = {}
        self.aborted = []
        self.streams = 0
        self.query_fails = None  # a StatusCode QueryUpload answers with, when set
        n = [0]

        def status(uid):
            u = self.uploads[uid]
            st = pb.UploadStatus(upload_id=uid, persisted_size=len(u["data"]))
            if u["object"] is not None:
                st.object.CopyFrom(u["object"])
            return st

        def start(h, ctx):
            if h.name in self.objects and not h.overwrite:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, "exists")
            n[0] += 1
            uid = "up%d" % n[0]
            self.uploads[uid] = {"h": h, "data": bytearray(), "object": None}
            return status(uid)

        def upload(reqs, ctx):
            self.streams += 1
            uid = None
            for i, r in enumerate(reqs):
                if r.upload_id not in self.uploads:
                    ctx.abort(grpc.StatusCode.NOT_FOUND, "no upload")
                uid = r.upload_id
                u = self.uploads[uid]
                if i == 0 and r.write_offset != len(u["data"]):
                    ctx.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              "persisted_size %d" % len(u["data"]))
                which = r.WhichOneof("payload")
                if which == "checked_data":
                    if crc(r.checked_data.data) != r.checked_data.crc32c:
                        ctx.abort(grpc.StatusCode.DATA_LOSS, "crc32c")
                    u["data"] += r.checked_data.data
                elif which == "data":
                    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "client must send checked_data")
                if r.finish:
                    h = u["h"]
                    if len(u["data"]) != h.size or sha256(bytes(u["data"])) != h.sha256:
                        del self.uploads[uid]
                        ctx.abort(grpc.StatusCode.DATA_LOSS, "size or sha256")
                    info = pb.ObjectInfo(name=h.name, size=h.size, sha256=h.sha256,
                                         modified_unix_ms=1)
                    self.objects[h.name] = (bytes(u["data"]), info)
                    u["object"] = info
            if uid is None:
                ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty")
            return status(uid)

        def query(ref, ctx):
            if self.query_fails is not None:
                ctx.abort(self.query_fails, "the server is busy")
            if ref.upload_id not in self.uploads:
                ctx.abort(grpc.StatusCode.NOT_FOUND, "no upload")
            return status(ref.upload_id)

        def abort(ref, ctx):
            if ref.upload_id not in self.uploads:
                ctx.abort(grpc.StatusCode.NOT_FOUND, "no upload")
            st = status(ref.upload_id)
            del self.uploads[ref.upload_id]
            self.aborted.append(ref.upload_id)
            return st

        uu = grpc.unary_unary_rpc_method_handler
        handler = grpc.method_handlers_generic_handler("ringstream.v1.Bulk", {
            "StartUpload": uu(start, request_deserializer=pb.PutHeader.FromString,
                              response_serializer=pb.UploadStatus.SerializeToString),
            "Upload": grpc.stream_unary_rpc_method_handler(
                upload, request_deserializer=pb.UploadRequest.FromString,
                response_serializer=pb.UploadStatus.SerializeToString),
            "QueryUpload": uu(query, request_deserializer=pb.UploadRef.FromString,
                              response_serializer=pb.UploadStatus.SerializeToString),
            "AbortUpload": uu(abort, request_deserializer=pb.UploadRef.FromString,
                              response_serializer=pb.UploadStatus.SerializeToString),
        })
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=[("grpc.max_receive_message_length", 8 * MiB)])
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(grace=None).wait(5)


@run.case("resumed put against a contract-exact fake server: kill -9, rerun, changed file",
          group="integrity")
def _(srv):
    fake = FakeUploads()
    try:
        addr = "127.0.0.1:%d" % fake.port
        data = pattern(12 * MiB + 777, 400)
        src = write_file("fu", data)
        updir = os.path.join(CACHE, "ringstream", "uploads")
        shutil.rmtree(updir, ignore_errors=True)
        p = subprocess.Popen([CLIENT, "--server", addr, "--limit-rate", "4M", "put", src,
                              "fu/obj"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env())
        try:
            wait_for(lambda: any(len(u["data"]) >= 3 * MiB for u in fake.uploads.values()),
                     30, "3 MiB persisted")
        finally:
            kill9(p)
        check(p.returncode == -signal.SIGKILL, "the upload finished before the kill")
        check_eq(len(os.listdir(updir)), 1, "upload state files")
        kept = max(len(u["data"]) for u in fake.uploads.values())
        # QueryUpload failing with UNAVAILABLE: an error, and the state stays for the next run.
        fake.query_fails = grpc.StatusCode.UNAVAILABLE
        code, _, err = rs(addr, "put", src, "fu/obj")
        check_eq(code, EXIT_GRPC, "put while QueryUpload is UNAVAILABLE")
        check("UNAVAILABLE" in err, repr(err))
        check_eq(len(os.listdir(updir)), 1, "upload state after a failed QueryUpload")
        fake.query_fails = None
        res = rs_json(addr, "put", src, "fu/obj")[0]
        check_eq((res["resumable"], res["size"], res["sha256"]),
                 (True, len(data), sha256(data).hex()), "resumed put")
        check(0 < res["resumed_from"] <= kept, "resumed_from %d (kept %d)"
              % (res["resumed_from"], kept))
        check(fake.objects["fu/obj"][0] == data, "the fake stored other bytes")
        check_eq(os.listdir(updir), [], "upload state left behind")
        check_eq(fake.aborted, [], "aborted uploads")

        # Interrupted, then the file changes: the old upload is aborted, the new starts at 0.
        p = subprocess.Popen([CLIENT, "--server", addr, "--limit-rate", "4M", "put",
                              "--overwrite", src, "fu/obj"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env())
        try:
            wait_for(lambda: any(len(u["data"]) >= MiB and u["object"] is None
                                 for u in fake.uploads.values()), 30, "1 MiB persisted")
        finally:
            kill9(p)
        new = pattern(9 * MiB, 401)
        write_file("fu", new)
        res = rs_json(addr, "put", "--overwrite", src, "fu/obj")[0]
        check_eq((res["resumed_from"], res["sha256"]), (0, sha256(new).hex()), "changed file")
        check_eq(len(fake.aborted), 1, "the stale upload was aborted")
        check(fake.objects["fu/obj"][0] == new, "the fake stored other bytes (changed file)")
        # Below the threshold: a plain Put, which this fake does not serve.
        code, _, err = rs(addr, "put", write_file("fu-small", b"abc"), "fu/small")
        check_eq(code, EXIT_GRPC, "Put on a server without Put")
        check("UNIMPLEMENTED" in err, repr(err))
    finally:
        fake.stop()


@run.case("integrity: a wrong chunk crc32c or SHA-256 -> exit 4, no file left", group="integrity")
def _(srv):
    data = pattern(3 * MiB + 100, 300)  # 4 ranges with --streams 4 (1 MiB at least each)
    for mode, words in (("crc", "CRC32C mismatch"), ("sha", "SHA-256 mismatch")):
        fake = FakeBulk(mode, data)
        try:
            addr = "127.0.0.1:%d" % fake.port
            dst = path("lie-" + mode)
            code, _, err = rs(addr, "get", "obj", dst)
            check_eq(code, EXIT_INTEGRITY, mode + " exit code")
            check(err.startswith("ringstream: get obj: INTEGRITY: ") and words in err,
                  "%s error line: %r" % (mode, err))
            check(not os.path.exists(dst), mode + ": the file exists")
            check(not os.path.exists(dst + ".part"), mode + ": the .part file exists")
            res = rs_json(addr, "get", "obj", dst, want=EXIT_INTEGRITY)[0]
            check_eq((res["ok"], res["exit"]), (False, 4), mode + " --json")
            # Striped download sees the same lie.
            code, _, err = rs(addr, "get", "--streams", "4", "obj", dst)
            check_eq(code, EXIT_INTEGRITY, mode + " --streams 4")
            check_eq(len(err.strip().splitlines()), 1, mode + " --streams 4: one error line")
            check(not os.path.exists(dst) and not os.path.exists(dst + ".part"),
                  mode + " --streams: file left")
            # An honest answer from the same fake server works (the checker is not the bug).
        finally:
            fake.stop()
    # Malformed or wrong answers: chunks out of place, a short object, undecodable messages.
    for mode, want, words in (("offset", EXIT_INTEGRITY, "where"),
                              ("short", EXIT_INTEGRITY, "SHA-256 mismatch"),
                              ("garbage-chunk", EXIT_INTEGRITY, "malformed Chunk"),
                              ("garbage-stat", EXIT_CONN, "malformed")):
        fake = FakeBulk(mode, data)
        try:
            dst = path("bad-" + mode)
            code, _, err = rs("127.0.0.1:%d" % fake.port, "get", "obj", dst)
            check_eq(code, want, mode + " exit code (%s)" % err.strip())
            check(words in err, "%s error line: %r" % (mode, err))
            check(not os.path.exists(dst) and not os.path.exists(dst + ".part"),
                  mode + ": file left")
        finally:
            fake.stop()
    # Overwritten between Stat and Get: FAILED_PRECONDITION, and the client starts over.
    fake = FakeBulk("changed", data)
    try:
        dst = path("changed")
        res = rs_json("127.0.0.1:%d" % fake.port, "get", "obj", dst)[0]
        check(fake.changed, "the fake did not change the object")
        check_eq((res["resumed_from"], res["sha256"]), (0, sha256(fake.data).hex()), "restart")
        check(read_file(dst) == fake.data, "restarted get differs")
    finally:
        fake.stop()
    # The same with --streams 4: every range stops, the download starts over from 0.
    fake = FakeBulk("changed", data)
    try:
        dst = path("changed4")
        res = rs_json("127.0.0.1:%d" % fake.port, "get", "--streams", "4", "obj", dst)[0]
        check(fake.changed, "the fake did not change the object (--streams)")
        check_eq((res["resumed_bytes"], res["sha256"]), (0, sha256(fake.data).hex()),
                 "--streams restart")
        check(read_file(dst) == fake.data, "restarted get --streams differs")
        check(not os.path.exists(dst + ".part"), "--streams restart: .part left")
    finally:
        fake.stop()
    # An honest answer from the same fake server works (the checks are not the bug), also
    # striped.
    fake = FakeBulk("none", data)
    try:
        rs("127.0.0.1:%d" % fake.port, "get", "obj", path("honest"), want=EXIT_OK)
        check(read_file(path("honest")) == data, "honest fake server")
        rs("127.0.0.1:%d" % fake.port, "get", "--streams", "3", "obj", path("honest3"),
           want=EXIT_OK)
        check(read_file(path("honest3")) == data, "honest fake server, 3 streams")
    finally:
        fake.stop()


run.at_end.append(lambda: shutil.rmtree(TMP, ignore_errors=True))
if not os.access(CLIENT, os.X_OK):
    shutil.rmtree(TMP, ignore_errors=True)
    print("FAIL  client binary %s is not executable (set RS_CLIENT)" % CLIENT)
    sys.exit(1)
run.main()
