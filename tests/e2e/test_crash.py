#!/usr/bin/python3
"""End-to-end crash-safety tests of the bulk store (issue 16: crash-safety tests).

Group "crash":
  - kill -9 during Puts, overwrites and Deletes, ROUNDS times on one data dir: each round
    starts the server, runs THREADS client threads (each on its own names, so the calls on
    one name are sequential and the model below is exact), SIGKILLs the server at a random
    moment, restarts it on the same data dir, and checks:
      * every object List reports has a Stat, and Get returns its recorded size and SHA-256;
      * every name is in a state the clients allow: its last acknowledged Put (or absent
        after an acknowledged Delete), or the outcome of the one call in flight at the kill;
      * no staging or temporary file is left: objects/ holds only object files, and as many
        as List reports.
  - a Put onto a full file system (a 4 MiB tmpfs, or a loop-mounted ext4 when tmpfs will not
    do; skipped with one printed line when this user may not mount): the Put that does not fit
    fails RESOURCE_EXHAUSTED, leaves nothing (Stat NOT_FOUND, the free space comes back), and
    a smaller Put after it works. The mount is always unmounted.

Usage: test_crash.py --server build/ringstreamd [--group crash] [--only SUBSTRING]
"""

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SANITIZER_PATTERNS, Bulk, CaseFailure, Server, TestRun, channel,  # noqa: E402
                     check, check_eq, expect_status, pb2, sha256)

KiB = 1024
MiB = 1024 * KiB
ROUNDS = 10
THREADS = 6
NAMES_PER_THREAD = 4
CALL_TIMEOUT_S = 20
KEY_RE = re.compile(r"^[0-9a-f]{64}$")
ABSENT = "absent"

run = TestRun("crash")


def payload(rng):
    r = rng.random()
    if r < 0.1:
        n = 0
    elif r < 0.8:
        n = rng.randrange(1, 256 * KiB)
    else:
        n = rng.randrange(1 * MiB, 3 * MiB)
    return rng.randbytes(n)


class Model:
    """Per name: the acknowledged state and the outcome of a call whose answer never came."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}      # name -> sha256 bytes or ABSENT
        self.maybe = {}      # name -> set of states a call without an answer may have left

    def allowed(self, name):
        with self.lock:
            return {self.acked.get(name, ABSENT)} | self.maybe.get(name, set())


def client(srv, model, names, stop, seed, counts):
    rng = random.Random(seed)
    with channel(srv) as ch:
        b = Bulk(ch)
        while not stop.is_set():
            name = rng.choice(names)
            if rng.random() < 0.7:
                data = payload(rng)
                want = sha256(data)
                try:
                    info = b.put(name, data, overwrite=True, timeout=CALL_TIMEOUT_S)
                except grpc.RpcError:
                    with model.lock:
                        model.maybe.setdefault(name, set()).add(want)
                    return
                if info.sha256 != want or info.size != len(data):
                    counts["bad_ack"] += 1
                with model.lock:
                    model.acked[name] = want
                    model.maybe.pop(name, None)
                counts["put"] += 1
            else:
                try:
                    b.delete(name, timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.NOT_FOUND:
                        with model.lock:  # absent already: agrees with the model or not
                            if model.acked.get(name, ABSENT) != ABSENT and not model.maybe.get(name):
                                counts["bad_notfound"] += 1
                            model.acked[name] = ABSENT
                            model.maybe.pop(name, None)
                        continue
                    with model.lock:
                        model.maybe.setdefault(name, set()).add(ABSENT)
                    return
                with model.lock:
                    model.acked[name] = ABSENT
                    model.maybe.pop(name, None)
                counts["delete"] += 1


def check_store(srv, model, all_names, rnd):
    with channel(srv) as ch:
        b = Bulk(ch)
        listed = {}
        for info in b.list(timeout=CALL_TIMEOUT_S):
            listed[info.name] = info
        for name, info in listed.items():
            data = b.get(name, timeout=CALL_TIMEOUT_S)
            check_eq(len(data), info.size, "round %d: size of %r read back" % (rnd, name))
            check_eq(sha256(data), info.sha256, "round %d: sha256 of %r read back" % (rnd, name))
            st = b.stat(name, timeout=CALL_TIMEOUT_S)
            check_eq(st.sha256, info.sha256, "round %d: Stat and List of %r" % (rnd, name))
        for name in all_names:
            if name in listed:
                state = listed[name].sha256
            else:
                expect_status(grpc.StatusCode.NOT_FOUND, b.stat, name, timeout=CALL_TIMEOUT_S)
                state = ABSENT
            ok = model.allowed(name)
            check(state in ok, "round %d: %r is %s; acknowledged calls allow only %s"
                  % (rnd, name, "absent" if state == ABSENT else state.hex()[:16],
                     ", ".join("absent" if s == ABSENT else s.hex()[:16] for s in ok)))
            with model.lock:  # what the store holds now is the truth the next round starts from
                model.acked[name] = state
                model.maybe.pop(name, None)
        check(set(listed) <= set(all_names), "round %d: unknown objects listed: %s"
              % (rnd, sorted(set(listed) - set(all_names))))
    objdir = os.path.join(srv.data_dir, "objects")
    entries = os.listdir(objdir)
    stray = [e for e in entries if not KEY_RE.match(e)]
    check(not stray, "round %d: staging/temporary files left in objects/: %s" % (rnd, stray))
    check_eq(len(entries), len(listed), "round %d: object files vs objects listed" % rnd)
    top = [e for e in os.listdir(srv.data_dir) if e.startswith(("tmp-", "del-", ".tmp"))]
    check(not top, "round %d: temporary files in the data dir: %s" % (rnd, top))


@run.case("kill -9 during concurrent Puts, overwrites and Deletes, %d rounds: every object "
          "intact, acknowledged calls hold, no staging files" % ROUNDS, group="crash")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-crash-")
    data_dir = os.path.join(tmp, "data")
    os.mkdir(data_dir)
    model = Model()
    seed = int(os.environ.get("RS_CRASH_SEED", str(random.randrange(1 << 30))))
    print("      seed %d (RS_CRASH_SEED to repeat)" % seed)
    rng = random.Random(seed)
    all_names = ["t%d/obj-%d" % (t, i) for t in range(THREADS) for i in range(NAMES_PER_THREAD)]
    counts = {"put": 0, "delete": 0, "bad_ack": 0, "bad_notfound": 0}
    pb2()  # generate the stubs once, before the client threads import them
    s = None
    try:
        for rnd in range(ROUNDS):
            s = Server(srv.binary, ["--workers", "2"], data_dir=data_dir)
            s.start()
            if rnd > 0:
                check_store(s, model, all_names, rnd)
            stop = threading.Event()
            threads = [threading.Thread(target=client, daemon=True,
                                        args=(s, model, all_names[t * NAMES_PER_THREAD:
                                                                  (t + 1) * NAMES_PER_THREAD],
                                              stop, rng.randrange(1 << 30), counts))
                       for t in range(THREADS)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 1.2))  # a random moment of the load
            text = s.stderr_text()
            s.kill9()
            check(not SANITIZER_PATTERNS.search(text), "round %d: sanitizer report" % rnd)
            stop.set()
            for t in threads:
                t.join(CALL_TIMEOUT_S + 5)
                check(not t.is_alive(), "round %d: a client thread did not stop" % rnd)
            s = None
        s = Server(srv.binary, ["--workers", "2"], data_dir=data_dir)
        s.start()
        check_store(s, model, all_names, ROUNDS)
        problems = s.stop()
        s = None
        check(not problems, "; ".join(problems))
        print("      %d Puts and %d Deletes acknowledged over %d kills"
              % (counts["put"], counts["delete"], ROUNDS))
        check_eq(counts["bad_ack"], 0, "Puts acknowledged with a wrong size or sha256")
        check_eq(counts["bad_notfound"], 0, "Deletes of acknowledged objects answered NOT_FOUND")
        check(counts["put"] > 0 and counts["delete"] > 0, "no load ran")
    finally:
        if s is not None:
            s.kill9()
        shutil.rmtree(tmp, ignore_errors=True)


# --- a full file system ---------------------------------------------------------------------

def try_mount(mnt, img):
    """Mounts a small file system at mnt: tmpfs, else a loop ext4. Returns a description, or
    None when this user may not mount."""
    if os.geteuid() != 0:
        return None
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", mnt],
                       capture_output=True)
    if r.returncode == 0:
        return "tmpfs 4 MiB"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True)
    if r.returncode == 0:
        r = subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True)
        if r.returncode == 0:
            return "loop ext4 8 MiB"
    return None


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@run.case("Put onto a full file system: RESOURCE_EXHAUSTED, nothing left, a smaller Put works",
          group="crash")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-full-")
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    mounted = None
    s = None
    try:
        mounted = try_mount(mnt, os.path.join(tmp, "fs.img"))
        if mounted is None:
            print("      SKIP: this user may not mount a small file system (needs root)")
            return
        data_dir = os.path.join(mnt, "data")
        os.mkdir(data_dir)
        s = Server(srv.binary, ["--workers", "1"], data_dir=data_dir)
        s.start()
        with channel(s) as ch:
            b = Bulk(ch)
            free0 = free_bytes(mnt)
            filler = os.urandom(max(0, free0 - 1536 * KiB))
            b.put("filler", filler)
            free1 = free_bytes(mnt)
            big = os.urandom(3 * MiB)
            e = expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, b.put, "big", big)
            print("      %s: %d bytes free before the Put of %d: %s %r"
                  % (mounted, free1, len(big), e.code().name, e.details()))
            expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "big")
            # the unnamed file's blocks are freed by its close, in the kernel, after the answer
            slack = 64 * KiB
            t_end = time.monotonic() + 10
            for _ in range(1000):
                if free_bytes(mnt) >= free1 - slack or time.monotonic() > t_end:
                    break
                time.sleep(0.01)
            check(free_bytes(mnt) >= free1 - slack, "the failed Put kept %d bytes"
                  % (free1 - free_bytes(mnt)))
            entries = os.listdir(os.path.join(data_dir, "objects"))
            check_eq(len(entries), 1, "files in objects/ (the filler only)")
            small = os.urandom(256 * KiB)
            check_eq(b.put("small", small).sha256, sha256(small), "the smaller Put")
            check_eq(sha256(b.get("small")), sha256(small), "the smaller object read back")
            check_eq(sha256(b.get("filler")), sha256(filler), "the filler read back")
        problems = s.stop()
        s = None
        check(not problems, "; ".join(problems))
    finally:
        if s is not None:
            s.kill9()
        if mounted is not None:
            subprocess.run(["umount", mnt], capture_output=True)
            if os.path.ismount(mnt):
                subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


run.main()
