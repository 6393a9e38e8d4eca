#!/usr/bin/python3
"""End-to-end tests of the bulk store under storage faults (issue 16, findings 4 and 10).

Needs a server built with -DRS_FAULT_INJECTION=ON (named fault points, core/fault.h, configured
with RS_FAULTS; the points are listed in workers/bulk/storeop.h). Every case starts its own
server with its own RS_FAULTS and a fresh data dir, and stops it in a finally block.

Group "commit" (finding 4: a publish and its status agree):
  - deadline: a slow disk (put.fsync delayed) and a connection whose send is busy (a raw
    HTTP/2 client that does not read while a large Get fills the socket), so the core ends
    the Put on its grpc-timeout while the handler still works: the client gets
    DEADLINE_EXCEEDED and the object is not published; for an overwrite the old version is
    intact;
  - the same with the delay right before the publish's linkat, and for a Delete (its rename
    aside delayed): DEADLINE_EXCEEDED and the object intact;
  - client cancel during the slow fsync: nothing published;
  - drain: SIGTERM with a short --drain-ms while a slow Put is in flight: the client gets an
    error, and after a restart on the same data dir the object is not there.
Group "codes" (finding 10): ENOSPC, EROFS, EIO (and a short write) on Put's and Delete's steps
answer the documented codes (workers/bulk/status.h, README "Storage errors"), publish or
remove nothing, and a bystander call on the same server still works.
Group "startup": a data dir the server user cannot write: one clear line, non-zero exit.

Usage: test_storage_faults.py --server build-asan/ringstreamd [--group G] [--only SUBSTRING]
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SANITIZER_PATTERNS, Bulk, CaseFailure, Server, TestRun, channel,  # noqa: E402
                     check, check_eq, expect_status, pb2, sha256)

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
except ImportError:  # python3-h2 (scripts/deps.sh)
    h2 = None

KiB = 1024
MiB = 1024 * KiB
FSYNC_DELAY_MS = 1500     # the slow disk: longer than the Put's grpc-timeout below
PUT_TIMEOUT = "400m"      # grpc-timeout of the Put the core ends
WAIT_S = 60               # bound of every wait loop

run = TestRun("storage faults")


def fault_server(srv, faults, extra=(), data_dir=None):
    s = Server(srv.binary, list(extra), env={"RS_FAULTS": faults}, data_dir=data_dir)
    s.start()
    if "RS_FAULTS" not in s.stderr_text():
        s.stop()
        raise CaseFailure("the server did not announce RS_FAULTS: not a fault build "
                          "(-DRS_FAULT_INJECTION=ON)?")
    return s


def finish(s):
    problems = s.stop()
    check(not problems, "fault server: %s" % "; ".join(problems))


def obj_files(s):
    return {k: v for k, v in s.files().items() if k.startswith("objects/")}


def bystander(s, tag):
    """Another client's calls on the same server still work."""
    with channel(s) as ch:
        b = Bulk(ch)
        data = os.urandom(100 * KiB + 7)
        info = b.put("bystander/" + tag, data, overwrite=True)
        check_eq(info.sha256, sha256(data), "bystander sha256")
        check_eq(sha256(b.get("bystander/" + tag)), sha256(data), "bystander sha256 read back")
        b.delete("bystander/" + tag)


# --- a raw HTTP/2 client whose connection's send side the server cannot empty -----------------

def grpc_frame(msg):
    body = msg.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


class RawClient:
    """h2 client with huge windows and a tiny receive buffer that reads only when told: a large
    Get then fills the server's socket, so the server cannot send anything else (trailers)."""

    def __init__(self, s):
        if h2 is None:
            raise CaseFailure("python3-h2 is missing (scripts/deps.sh installs it)")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(WAIT_S)
        self.sock.connect(("127.0.0.1", s.port))
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.conn.increment_flow_control_window(2**31 - 1 - 65535)
        self.flush()
        self.status = {}

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def call(self, method, messages, timeout=None):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "POST"), (":scheme", "http"), (":path", "/ringstream.v1.Bulk/" + method),
                (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")]
        if timeout:
            hdrs.append(("grpc-timeout", timeout))
        self.conn.send_headers(sid, hdrs)
        body = b"".join(grpc_frame(m) for m in messages)
        # the stream window is huge; the connection window of the server is 64 KiB at first
        off = 0
        while off < len(body):
            n = min(len(body) - off, self.conn.local_settings.max_frame_size, 16384)
            while self.conn.local_flow_control_window(sid) < n:
                self.pump_once()
            self.conn.send_data(sid, body[off:off + n])
            off += n
            self.flush()
        self.conn.end_stream(sid)
        self.flush()
        return sid

    def pump_once(self):
        data = self.sock.recv(65536)
        if not data:
            raise CaseFailure("the server closed the connection")
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.TrailersReceived) or (
                    isinstance(ev, h2.events.ResponseReceived) and
                    any(k == "grpc-status" for k, _ in ev.headers)):
                self.status[ev.stream_id] = int(dict(ev.headers)["grpc-status"])
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id not in self.status:
                self.status[ev.stream_id] = "reset"
        self.flush()

    def wait_status(self, sid):
        t_end = time.monotonic() + WAIT_S
        for _ in range(1000000):
            if sid in self.status or time.monotonic() > t_end:
                break
            self.pump_once()
        if sid not in self.status:
            raise CaseFailure("no status for stream %d within %d s" % (sid, WAIT_S))
        return self.status[sid]

    def close(self):
        self.sock.close()


def put_msgs(name, data, overwrite=False):
    pb = pb2()
    hdr = pb.PutHeader(name=name, size=len(data), sha256=sha256(data), overwrite=overwrite)
    return [pb.PutRequest(header=hdr), pb.PutRequest(data=data)]


def deadline_case(srv, overwrite):
    # hits of put.fsync: 0 = the big object, 1 = the old version (overwrite only), then slow
    skip = 2 if overwrite else 1
    s = fault_server(srv, "put.fsync=delay:%d@%d" % (FSYNC_DELAY_MS, skip))
    raw = None
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            b.put("big", os.urandom(64 * KiB) * 512)  # 32 MiB: more than the sockets hold
            old = os.urandom(10 * KiB)
            if overwrite:
                b.put("victim", old)
            raw = RawClient(s)
            pb = pb2()
            raw.call("Get", [pb.GetRequest(name="big")])
            new = os.urandom(20 * KiB)
            sid = raw.call("Put", put_msgs("victim", new, overwrite), timeout=PUT_TIMEOUT)
            # Not reading: the Get fills the socket; the Put's deadline passes, its fsync ends
            # (after FSYNC_DELAY_MS) while its trailers wait behind the Get's data.
            time.sleep(2 * FSYNC_DELAY_MS / 1000.0)
            st = raw.wait_status(sid)
            check_eq(st, 4, "grpc-status of the Put (DEADLINE_EXCEEDED)")
            raw.close()
            raw = None
            if overwrite:
                check_eq(sha256(b.get("victim")), sha256(old),
                         "sha256 of the object after an overwrite that timed out (the old one)")
                check_eq(b.stat("victim").sha256, sha256(old), "Stat of the old version")
            else:
                expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "victim")
            bystander(s, "deadline")
    finally:
        if raw is not None:
            raw.close()
        finish(s)


@run.case("deadline during a slow fsync, send side busy: DEADLINE_EXCEEDED and not published",
          group="commit")
def _(srv):
    deadline_case(srv, overwrite=False)


@run.case("deadline during a slow fsync of an overwrite: DEADLINE_EXCEEDED, old version intact",
          group="commit")
def _(srv):
    deadline_case(srv, overwrite=True)


@run.case("deadline during a slow link, send side busy: DEADLINE_EXCEEDED and not published",
          group="commit")
def _(srv):
    s = fault_server(srv, "put.link=delay:%d@1" % FSYNC_DELAY_MS)  # hit 0: the big object
    raw = None
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            b.put("big", os.urandom(64 * KiB) * 512)
            raw = RawClient(s)
            raw.call("Get", [pb2().GetRequest(name="big")])
            sid = raw.call("Put", put_msgs("victim", os.urandom(20 * KiB)), timeout=PUT_TIMEOUT)
            time.sleep(2 * FSYNC_DELAY_MS / 1000.0)
            check_eq(raw.wait_status(sid), 4, "grpc-status of the Put (DEADLINE_EXCEEDED)")
            raw.close()
            raw = None
            expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "victim")
            bystander(s, "link")
    finally:
        if raw is not None:
            raw.close()
        finish(s)


@run.case("deadline during a slow Delete (rename delayed), send side busy: DEADLINE_EXCEEDED "
          "and the object intact", group="commit")
def _(srv):
    s = fault_server(srv, "delete.rename=delay:%d" % FSYNC_DELAY_MS)
    raw = None
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            b.put("big", os.urandom(64 * KiB) * 512)
            data = os.urandom(20 * KiB)
            b.put("victim", data)
            raw = RawClient(s)
            raw.call("Get", [pb2().GetRequest(name="big")])
            sid = raw.call("Delete", [pb2().DeleteRequest(name="victim")], timeout=PUT_TIMEOUT)
            time.sleep(2 * FSYNC_DELAY_MS / 1000.0)
            check_eq(raw.wait_status(sid), 4, "grpc-status of the Delete (DEADLINE_EXCEEDED)")
            raw.close()
            raw = None
            check_eq(sha256(b.get("victim")), sha256(data), "sha256 of the object kept")
            bystander(s, "delete-deadline")
    finally:
        if raw is not None:
            raw.close()
        finish(s)


@run.case("client cancel during a slow fsync: nothing published", group="commit")
def _(srv):
    s = fault_server(srv, "put.fsync=delay:%d" % FSYNC_DELAY_MS)
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            fut = b.Put.future(iter(put_msgs("cancelled", os.urandom(50 * KiB))), timeout=WAIT_S)
            time.sleep(FSYNC_DELAY_MS / 3000.0)  # all sent; the server sits in the fsync
            fut.cancel()
            try:
                fut.result()
                raise CaseFailure("the cancelled Put succeeded")
            except grpc.FutureCancelledError:
                pass
            except grpc.RpcError as e:
                check_eq(e.code(), grpc.StatusCode.CANCELLED, "status of the cancelled Put")
            time.sleep(2 * FSYNC_DELAY_MS / 1000.0)  # past the fsync: the publish decision
            expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "cancelled")
            bystander(s, "cancel")
    finally:
        finish(s)


@run.case("drain (SIGTERM, short --drain-ms) during a slow Put: error, nothing published after "
          "a restart", group="commit")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-drain-")
    data_dir = os.path.join(tmp, "data")
    os.mkdir(data_dir)
    s = fault_server(srv, "put.fsync=delay:%d" % (2 * FSYNC_DELAY_MS), ("--drain-ms", "300"),
                     data_dir=data_dir)
    s2 = None
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            fut = b.Put.future(iter(put_msgs("drained", os.urandom(50 * KiB))), timeout=WAIT_S)
            time.sleep(FSYNC_DELAY_MS / 3000.0)
            s.proc.send_signal(signal.SIGTERM)
            try:
                fut.result()
                raise CaseFailure("the Put in flight during the drain succeeded")
            except grpc.RpcError as e:
                print("      Put during drain: %s" % e.code().name)
        code = s.proc.wait(WAIT_S)
        check_eq(code, 0, "exit code after the drain")
        check(not SANITIZER_PATTERNS.search(s.stderr_text()), "sanitizer report after the drain")
        s.kill9()  # already exited: only marks it stopped
        s2 = Server(srv.binary, data_dir=data_dir)
        s2.start()
        with channel(s2) as ch:
            expect_status(grpc.StatusCode.NOT_FOUND, Bulk(ch).stat, "drained")
    finally:
        problems = s.stop()  # both servers are stopped before anything is checked
        if s2 is not None:
            problems += s2.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    check(not problems, "; ".join(problems))


# --- finding 10: codes a client can act on ------------------------------------------------------

PUT_CODES = [
    # (RS_FAULTS, status, what)
    ("put.write=enospcx1", grpc.StatusCode.RESOURCE_EXHAUSTED, "ENOSPC on write"),
    ("put.write=edquotx1", grpc.StatusCode.RESOURCE_EXHAUSTED, "EDQUOT on write"),
    ("put.write=eiox1", grpc.StatusCode.UNAVAILABLE, "EIO on write"),
    ("put.fsync=eiox1", grpc.StatusCode.UNAVAILABLE, "EIO on fsync"),
    ("store.create=erofsx1", grpc.StatusCode.FAILED_PRECONDITION, "EROFS on create"),
    ("store.create=eaccesx1", grpc.StatusCode.FAILED_PRECONDITION, "EACCES on create"),
    ("store.setxattr=enospcx1", grpc.StatusCode.RESOURCE_EXHAUSTED, "ENOSPC on setxattr"),
    ("put.link=erofsx1", grpc.StatusCode.FAILED_PRECONDITION, "EROFS on link"),
]


def put_code_case(spec, code, what):
    def case(srv):
        s = fault_server(srv, spec)
        try:
            before = obj_files(s)
            with channel(s) as ch:
                b = Bulk(ch)
                data = os.urandom(1 * MiB + 3)
                e = expect_status(code, b.put, "victim", data)
                print("      %s: %s %r" % (what, code.name, e.details()))
                expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "victim")
                check_eq(obj_files(s), before, "files under objects/ after the failed Put")
                bystander(s, "put")
        finally:
            finish(s)
    return case


for _spec, _code, _what in PUT_CODES:
    run.case("Put with %s (%s) answers %s, publishes nothing, server goes on"
             % (_what, _spec, _code.name), group="codes")(put_code_case(_spec, _code, _what))


@run.case("Put with an overwrite and EIO on the rename: UNAVAILABLE, old version intact",
          group="codes")
def _(srv):
    s = fault_server(srv, "put.rename=eiox1")
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            old = os.urandom(30 * KiB)
            b.put("victim", old)
            before = obj_files(s)
            expect_status(grpc.StatusCode.UNAVAILABLE, b.put, "victim", os.urandom(40 * KiB),
                          overwrite=True)
            check_eq(sha256(b.get("victim")), sha256(old), "sha256 of the old version")
            check_eq(obj_files(s), before, "files under objects/ (no tmp- name left)")
            bystander(s, "rename")
    finally:
        finish(s)


@run.case("Put with short writes (every write moves half): OK and intact", group="codes")
def _(srv):
    s = fault_server(srv, "put.write=short")
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            data = os.urandom(3 * MiB + 12345)
            info = b.put("short", data)
            check_eq(info.size, len(data), "size")
            check_eq(sha256(b.get("short")), sha256(data), "sha256 read back")
    finally:
        finish(s)


@run.case("Get with short reads (every read moves half), 64 KiB, 1 MiB and odd chunks: every "
          "chunk whole, its crc32c right", group="codes")
def _(srv):
    import crcmod.predefined
    crc32c = crcmod.predefined.mkCrcFun("crc-32c")
    s = fault_server(srv, "get.read=short")
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            data = os.urandom(3 * MiB + 12345)
            b.put("short", data)
            for cs, off in ((0, 0), (MiB, 0), (MiB, 4097), (65537, 3), (200000, 0)):
                chunks = b.get_chunks("short", offset=off, chunk_size=cs)
                want = cs or 64 * KiB
                check_eq(b"".join(c.data for c in chunks), data[off:], "data, chunk %d" % cs)
                for i, c in enumerate(chunks):
                    check_eq(c.offset, off + i * want, "chunk %d offset (chunk %d)" % (i, cs))
                    check(len(c.data) == want or i == len(chunks) - 1,
                          "chunk %d has %d bytes (chunk %d)" % (i, len(c.data), cs))
                    check_eq(c.crc32c, crc32c(c.data), "chunk %d crc32c (chunk %d)" % (i, cs))
    finally:
        finish(s)


@run.case("Get with EIO on a read mid-object (64 KiB and 1 MiB chunks): UNAVAILABLE, and the "
          "next Get is whole", group="codes")
def _(srv):
    for cs in (0, MiB):
        s = fault_server(srv, "get.read=eio@2x1")
        try:
            with channel(s) as ch:
                b = Bulk(ch)
                data = os.urandom(5 * MiB + 7)
                b.put("victim", data)
                e = expect_status(grpc.StatusCode.UNAVAILABLE, b.get, "victim", chunk_size=cs)
                print("      chunk %d: %r" % (cs, e.details()))
                check_eq(sha256(b.get("victim", chunk_size=cs)), sha256(data),
                         "sha256 of the next Get")
                bystander(s, "get")
        finally:
            finish(s)


DELETE_CODES = [
    ("delete.rename=erofsx1", grpc.StatusCode.FAILED_PRECONDITION, "EROFS on rename"),
    ("delete.rename=eaccesx1", grpc.StatusCode.FAILED_PRECONDITION, "EACCES on rename"),
    ("delete.rename=eiox1", grpc.StatusCode.UNAVAILABLE, "EIO on rename"),
    ("delete.rename=enospcx1", grpc.StatusCode.RESOURCE_EXHAUSTED, "ENOSPC on rename"),
]


def delete_code_case(spec, code, what):
    def case(srv):
        s = fault_server(srv, spec)
        try:
            with channel(s) as ch:
                b = Bulk(ch)
                data = os.urandom(70 * KiB)
                b.put("victim", data)
                before = obj_files(s)
                e = expect_status(code, b.delete, "victim")
                print("      %s: %s %r" % (what, code.name, e.details()))
                check_eq(sha256(b.get("victim")), sha256(data), "sha256 after the failed Delete")
                check_eq(obj_files(s), before, "files under objects/ after the failed Delete")
                bystander(s, "delete")
                b.delete("victim")  # the rule fired once: now it works
                expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "victim")
        finally:
            finish(s)
    return case


for _spec, _code, _what in DELETE_CODES:
    run.case("Delete with %s (%s) answers %s, removes nothing, server goes on"
             % (_what, _spec, _code.name), group="codes")(delete_code_case(_spec, _code, _what))


@run.case("Delete: EIO on the directory sync is reported (UNAVAILABLE), a retry answers "
          "NOT_FOUND", group="codes")
def _(srv):
    s = fault_server(srv, "delete.dirsync=eiox1")
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            b.put("victim", b"x" * 1000)
            expect_status(grpc.StatusCode.UNAVAILABLE, b.delete, "victim")
            expect_status(grpc.StatusCode.NOT_FOUND, b.delete, "victim")
            bystander(s, "dirsync")
    finally:
        finish(s)


@run.case("Stat with EIO on the metadata read: UNAVAILABLE, not INTERNAL", group="codes")
def _(srv):
    s = fault_server(srv, "store.getxattr=eio@1x1")
    try:
        with channel(s) as ch:
            b = Bulk(ch)
            b.put("victim", b"y" * 1000)
            b.stat("victim")  # hit 0
            expect_status(grpc.StatusCode.UNAVAILABLE, b.stat, "victim")  # hit 1
            b.stat("victim")
    finally:
        finish(s)


# --- startup --------------------------------------------------------------------------------

def run_as_nobody(binary, data_dir):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", binary,
           "--listen", "127.0.0.1:0", "--data-dir", data_dir]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT_S)
    return p


@run.case("startup: a data dir the server user cannot write: one clear line, exit non-zero",
          group="startup")
def _(srv):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        print("      SKIP: needs root and setpriv to run the server as nobody")
        return
    tmp = tempfile.mkdtemp(prefix="rs-ro-")
    try:
        os.chmod(tmp, 0o755)
        # the binary must be reachable for nobody: copy it next to the data dir
        binary = os.path.join(tmp, "ringstreamd")
        shutil.copy2(srv.binary, binary)
        os.chmod(binary, 0o755)
        for pre_objects in (False, True):
            d = os.path.join(tmp, "data-%d" % pre_objects)
            os.mkdir(d, 0o755)  # owned by root: nobody cannot write it
            if pre_objects:
                os.mkdir(os.path.join(d, "objects"), 0o755)
            p = run_as_nobody(binary, d)
            err = p.stderr.decode(errors="replace").strip()
            print("      objects/ %s: exit %d: %s" % ("present" if pre_objects else "missing",
                                                      p.returncode, err))
            check(p.returncode != 0, "the server started on an unwritable data dir")
            check_eq(len(err.splitlines()), 1, "lines on stderr")
            check("data dir %s: not writable (Permission denied)" % d in err,
                  "the message does not say the data dir is not writable: %r" % err)
            check("O_TMPFILE" not in err, "the message blames O_TMPFILE: %r" % err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


run.main()
