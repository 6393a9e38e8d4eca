"""End-to-end tests of List over the sorted name index (workers/bulk/index.c, issue 15).

Groups:
  order   exact order and prefixes with names that stress byte order; partial reads (quick;
          also registered in the asan build)
  crash   kill -9 during Puts and Deletes, restart: List equals what Stat finds, every
          acknowledged Put is listed, every acknowledged Delete is not; a clean restart keeps it
  memory  40 Lists whose clients never read, over 20,000 objects: server RSS grows by less
          than LIST_RSS_BOUND_MIB, and a bystander's List still completes
  big     a store of LIST_BIG_OBJECTS objects (default 100,000) written directly in the store's
          layout; the server rebuilds the index at start; List streams all of it in order and
          with flat memory, its first result arriving within 1/FIRST_RESULT_FRACTION of the
          whole List (a ratio from one run: streamed, not built first). The first-result time
          is printed against the issue's 100 ms target, not asserted: timing on a shared
          machine is a benchmark's business (perf/list_index.sh)
  huge    the same with 1,000,000 objects: about 1.5 GB on a tmpfs, 4 GB on ext4 (the xattr
          does not fit in the inode); ctest runs it as e2e/list_index_huge
The generated stores go to /dev/shm when it has room (see big_store_parent).

Servers other than the harness's are Daemon objects below: 127.0.0.1, a free port, a data
dir under a fresh temp dir, stopped by PID in finally/atexit (SIGKILL if SIGTERM fails).
"""

import atexit
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Bulk, CaseFailure, TestRun, check, check_eq, free_port,  # noqa: E402
                     pb2, SANITIZER_PATTERNS)

MiB = 1024 * 1024
FIRST_RESULT_TARGET_S = 0.100  # the target for List of 1,000,000 objects (reported)
FIRST_RESULT_FRACTION = 20  # asserted: first result within 1/20 of the whole List
LIST_RSS_BOUND_MIB = int(os.environ.get("LIST_RSS_BOUND_MIB", "80"))
BIG_OBJECTS = int(os.environ.get("LIST_BIG_OBJECTS", "100000"))
HUGE_OBJECTS = 1000000

run = TestRun("list index")

# A channel whose client really does not read ahead much: no BDP probing, so the window stays
# at its initial size and a non-reading List stalls the server's send queue.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.bdp_probe", 0),
]


def chan(address):
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def byte_sorted(names):
    return sorted(names, key=lambda s: s.encode())


def proc_status(pid, field):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM), or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --- our own servers (restartable on one data dir) ------------------------------------------

class Daemon:
    """A ringstreamd on a data dir that survives restarts. Every start gets a free port."""

    def __init__(self, binary, data_dir, extra_args=()):
        self.binary = os.path.abspath(binary)
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.log_path = os.path.join(os.path.dirname(data_dir), "stderr-%d.log" % id(self))
        self.log = None
        atexit.register(self.kill)

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout_s=300.0):
        """Starts and waits until it accepts (a rebuild of a big store takes a while)."""
        self.port = free_port()
        self.log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen([self.binary, "--listen", self.address, "--data-dir",
                                      self.data_dir] + self.extra_args,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     env=env)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise CaseFailure("server exited with %d at start:\n%s"
                                  % (self.proc.returncode, self.log_text()[-3000:]))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise CaseFailure("server did not accept within %.0f s" % timeout_s)
            time.sleep(0.05)

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None

    def stop(self):
        """SIGTERM; must exit 0 within 10 s with no sanitizer report."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise CaseFailure("server ignored SIGTERM for 10 s")
        self.proc = None
        self.log.close()
        self.log = None
        check_eq(code, 0, "server exit code after SIGTERM")
        check(not SANITIZER_PATTERNS.search(self.log_text()), "sanitizer report:\n%s"
              % self.log_text()[-3000:])

    def kill(self):
        try:
            self.kill9()
        except Exception:  # noqa: BLE001  (atexit: best effort)
            pass


def big_store_parent():
    """Where the generated stores go: a tmpfs (/dev/shm) when it has room, because on ext4
    every object's xattr takes a 4 KiB block and creating and removing 100,000 files costs
    minutes on a busy machine; else the default temp dir. LIST_STORE_DIR overrides."""
    if os.environ.get("LIST_STORE_DIR"):
        return os.environ["LIST_STORE_DIR"]
    try:
        st = os.statvfs("/dev/shm")
        if os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize > 4 << 30:
            return "/dev/shm"
    except OSError:
        pass
    return None


class Workspace:
    """A temp dir holding a data dir; removed at the end whatever happens."""

    def __init__(self, parent=None):
        self.parent = parent

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="rs-e2e-index-", dir=self.parent)
        self.data_dir = os.path.join(self.tmp, "data")
        self.daemons = []
        return self

    def daemon(self, binary, extra_args=()):
        d = Daemon(binary, self.data_dir, extra_args)
        self.daemons.append(d)
        return d

    def __exit__(self, *exc):
        for d in self.daemons:
            d.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def write_store(data_dir, names):
    """Writes empty objects exactly as a publish leaves them (workers/bulk/store.h): the file
    objects/<hex SHA-256 of the name> with the xattr user.ringstream.meta = "rso1", size and
    modified_unix_ms (little-endian 64-bit), the SHA-256 of the data, the name."""
    obj = os.path.join(data_dir, "objects")
    os.makedirs(obj, exist_ok=True)
    empty = hashlib.sha256(b"").digest()
    head = b"rso1" + struct.pack("<Qq", 0, 1700000000000) + empty
    for name in names:
        n = name.encode()
        fd = os.open(os.path.join(obj, hashlib.sha256(n).hexdigest()),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            os.setxattr(fd, "user.ringstream.meta", head + n)
        finally:
            os.close(fd)


# --- order ----------------------------------------------------------------------------------

ALPHABET = "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


def order_names():
    names = ["o/" + c + "x" for c in ALPHABET]  # every allowed byte, '/' below
    names += ["o/a", "o/a-", "o/a.", "o/a/b", "o/a/b/c", "o/a0", "o/aa", "o/aaa", "o/aaaa",
              "o/a.b", "o/a-b", "o/a_b", "o/aZ", "o/a/-", "o/b", "o/B", "o/-", "o/..x",
              "o/...", "o/.x", "o/z", "o/zz", "o/zzz"]
    names += ["o/p" + "q" * k for k in range(1, 40)]  # a chain, each a prefix of the next
    names += ["o/n/%03d" % i for i in range(100)]  # crosses several List batches
    names.append("o/" + "L" * 253)  # 255 bytes
    return sorted(set(names))


@run.case("List order and prefixes are exact for names that stress byte order", group="order")
def _(srv):
    b = Bulk(chan(srv.address))
    names = order_names()
    order = list(names)
    random.Random(7).shuffle(order)
    for n in order:
        b.put(n, n.encode()[:7])
    want = byte_sorted(names)
    check_eq([o.name for o in b.list("o/")], want, "List('o/')")
    prefixes = set()
    for n in names[::5] + ["o/a/b/c", "o/" + "L" * 253, "o/pqqqq"]:
        for k in range(2, len(n) + 1, 1 if len(n) < 12 else 50):
            prefixes.add(n[:k])
    # Prefixes no name has: UTF-8, 0x7f, bytes beyond the alphabet on both sides, too long.
    prefixes |= {"o/\x7f", "o/a\x7f", "\x7f", "o/\u00e9", "o/\U0001f600", "o/a\u00ff",
                 "o/ ", "o/a~", "o/" + "L" * 254, "o/" + "L" * 400}
    for p in sorted(prefixes):
        pb = p.encode()
        exp = [n for n in want if n.encode().startswith(pb)]
        check_eq([o.name for o in b.list(p)], exp, "List(%r)" % p[:40])
    # Partial reads: the first k of a stream are the first k of the whole, then cancel.
    for k in (1, 31, 32, 33, 64, 100):
        it = b.List(b.pb.ListRequest(prefix="o/"), timeout=30)
        got = []
        for o in it:
            got.append(o.name)
            if len(got) == k:
                break
        it.cancel()
        check_eq(got, want[:k], "first %d of List('o/')" % k)
    # A slow reader gets the same list.
    got = []
    for o in b.List(b.pb.ListRequest(prefix="o/n/"), timeout=30):
        got.append(o.name)
        if len(got) % 20 == 0:
            time.sleep(0.05)
    check_eq(got, [n for n in want if n.startswith("o/n/")], "slow reader List('o/n/')")


@run.case("List after Delete and overwrite: gone names skipped, overwritten ones once", group="order")
def _(srv):
    b = Bulk(chan(srv.address))
    names = ["d/%02d" % i for i in range(70)]
    for n in names:
        b.put(n, b"v1")
    for n in names[::3]:
        b.delete(n)
    for n in names[1::3]:
        b.put(n, b"version 2", overwrite=True)
    want = [n for i, n in enumerate(names) if i % 3 != 0]
    got = b.list("d/")
    check_eq([o.name for o in got], want, "List('d/') after Deletes")
    for o in got:
        check_eq(o.size, 9 if names.index(o.name) % 3 == 1 else 2, "size of %s" % o.name)


# --- crash ----------------------------------------------------------------------------------

def churn(address, rnd_no, seconds, acked_puts, acked_deletes, tried_deletes, attempted, stop):
    """Puts and Deletes from 4 threads until |stop| or |seconds|; records what was answered OK."""
    lock = threading.Lock()
    pb2()  # generated once here, not by four threads at once

    def worker(t):
        b = Bulk(chan(address))
        rnd = random.Random(t)
        i = 0
        end = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < end and i < 100000:
            i += 1
            name = "c/%d/%d/%05d" % (rnd_no, t, i)
            with lock:
                attempted.add(name)
            try:
                b.put(name, b"x" * rnd.randrange(0, 300), timeout=10)
                with lock:
                    acked_puts.append(name)
                if rnd.random() < 0.4:
                    victim = "c/%d/%d/%05d" % (rnd_no, t, rnd.randrange(1, i + 1))
                    with lock:
                        tried_deletes.add(victim)
                    b.delete(victim, timeout=10)
                    with lock:
                        acked_deletes.append(victim)
            except grpc.RpcError:
                pass  # NOT_FOUND for a victim deleted twice, or the server was killed
            except Exception:  # noqa: BLE001  (the channel breaks when killed)
                pass

    ts = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(4)]
    for t in ts:
        t.start()
    return ts


def check_agreement(address, attempted, acked_puts, acked_deletes, tried_deletes, what):
    b = Bulk(chan(address))
    listed = [o.name for o in b.list("c/", timeout=120)]
    check_eq(listed, byte_sorted(set(listed)), "%s: List order, no duplicates" % what)
    found = set()
    for n in sorted(attempted):
        try:
            b.stat(n, timeout=30)
            found.add(n)
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, "%s: Stat %s: %s" % (what, n, e.code()))
    check_eq(set(listed) - found, set(), "%s: listed but Stat finds nothing" % what)
    check_eq(found - set(listed), set(), "%s: Stat finds them but List misses them" % what)
    # Deletes pick victims among their own thread's earlier names of the round, so a name acknowledged as
    # deleted is never put again: it must be gone, and every acknowledged Put no Delete was
    # sent for must be listed.
    deleted = set(acked_deletes)
    missing = [n for n in acked_puts if n not in tried_deletes and n not in found]
    check_eq(missing, [], "%s: acknowledged Puts missing" % what)
    check_eq(deleted & found, set(), "%s: acknowledged Deletes still there" % what)
    return len(listed)


@run.case("kill -9 during Puts and Deletes, restart: List equals what Stat finds", group="crash")
def _(srv):
    with Workspace() as ws:
        d = ws.daemon(run.args.server)
        attempted, acked_puts, acked_deletes, tried_deletes = set(), [], [], set()
        for rnd in range(3):
            d.start()
            stop = threading.Event()
            ts = churn(d.address, rnd, 30, acked_puts, acked_deletes, tried_deletes, attempted,
                       stop)
            time.sleep(1.0 + 0.7 * rnd)  # kill at a different moment each round
            d.kill9()
            stop.set()
            for t in ts:
                t.join(20)
            rebuilds = d.log_text().count("rebuilt from objects/ (no clean-stop marker)")
            d.start()
            check_eq(d.log_text().count("rebuilt from objects/ (no clean-stop marker)"),
                     rebuilds + 1, "rebuild lines after kill -9 and restart")
            n = check_agreement(d.address, attempted, acked_puts, acked_deletes, tried_deletes,
                                "round %d" % rnd)
            check(len(acked_puts) > 0, "no Put was acknowledged before the kill")
            print("      round %d: %d puts, %d deletes acknowledged, %d listed"
                  % (rnd, len(acked_puts), len(acked_deletes), n))
            d.kill9()
        # A crash between a publish and its index write, and between a Delete's unlink and
        # its recheck, made by hand while the server is down: the restart repairs both.
        write_store(d.data_dir, ["c/orphan"])
        attempted.add("c/orphan")
        acked_puts.append("c/orphan")
        victim = next(n for n in acked_puts if n not in tried_deletes)
        os.unlink(os.path.join(d.data_dir, "objects",
                               hashlib.sha256(victim.encode()).hexdigest()))
        tried_deletes.add(victim)
        acked_deletes.append(victim)
        d.start()
        check_agreement(d.address, attempted, acked_puts, acked_deletes, tried_deletes,
                        "after objects changed behind the index's back")
        d.kill9()
        # A clean stop keeps the index: the next start trusts it and agrees just the same.
        d.start()
        d.stop()
        before = d.log_text().count("opened after a clean stop")
        d.start()
        check_eq(d.log_text().count("opened after a clean stop"), before + 1,
                 "start after a clean stop opened the index without a rebuild")
        check_agreement(d.address, attempted, acked_puts, acked_deletes, tried_deletes, "after clean restart")
        d.stop()


# --- memory ---------------------------------------------------------------------------------

@run.case("40 Lists that never read over 20,000 objects hold bounded memory", group="memory")
def _(srv):
    n_obj = 20000
    with Workspace(big_store_parent()) as ws:
        names = ["m/%06d" % i for i in range(n_obj)]
        write_store(ws.data_dir, names)
        d = ws.daemon(run.args.server)
        d.start()
        b = Bulk(chan(d.address))
        check_eq(len(b.list("m/", timeout=120)), n_obj, "warm-up List count")
        base = proc_status(d.proc.pid, "VmRSS")
        chans = [chan(d.address) for _ in range(4)]
        calls = []
        try:
            for i in range(40):
                bb = Bulk(chans[i % 4])
                calls.append(bb.List(bb.pb.ListRequest(prefix="m/"), timeout=120))
            # Wait until the server stops growing (its send queues are full), bounded in time.
            last, stable, peak = base, 0, base
            for _ in range(100):
                time.sleep(0.1)
                cur = proc_status(d.proc.pid, "VmRSS")
                peak = max(peak, cur)
                stable = stable + 1 if abs(cur - last) < 256 else 0
                last = cur
                if stable >= 10:
                    break
            # A bystander still gets its whole List while the 40 hang.
            t0 = time.monotonic()
            got = [o.name for o in b.list("m/00", timeout=60)]
            check_eq(got, names[:10000], "bystander List('m/00')")
            by_s = time.monotonic() - t0
            peak = max(peak, proc_status(d.proc.pid, "VmRSS"))
            grew_mib = (peak - base) / 1024.0
            print("      RSS before %.1f MiB, peak with 40 stalled Lists %.1f MiB (+%.1f MiB), "
                  "bystander List of 10,000 in %.2f s"
                  % (base / 1024.0, peak / 1024.0, grew_mib, by_s))
            check(grew_mib < LIST_RSS_BOUND_MIB,
                  "40 stalled Lists grew RSS by %.1f MiB (bound %d MiB)"
                  % (grew_mib, LIST_RSS_BOUND_MIB))
        finally:
            for c in calls:
                c.cancel()
            for c in chans:
                c.close()
        time.sleep(0.3)
        check_eq(len(b.list("m/", timeout=120)), n_obj, "List after the cancels")
        d.stop()


# --- big / huge -----------------------------------------------------------------------------

def big_case(n_obj):
    with Workspace(big_store_parent()) as ws:
        t0 = time.monotonic()
        names = ["g/%07d" % i for i in range(n_obj)]
        write_store(ws.data_dir, names)
        gen_s = time.monotonic() - t0
        d = ws.daemon(run.args.server)
        t0 = time.monotonic()
        d.start(timeout_s=600)
        start_s = time.monotonic() - t0
        m = re.search(r"rebuilt from objects/ \(no clean-stop marker\): (\d+) names in (\d+) ms",
                      d.log_text())
        ch = chan(d.address)
        # Connect before the clock starts: the first-result time is the server's, not the
        # client's channel set-up.
        grpc.channel_ready_future(ch).result(timeout=30)
        b = Bulk(ch)
        rss0 = proc_status(d.proc.pid, "VmRSS")
        samples, anon = [], []
        stop = threading.Event()

        def sample():
            while not stop.wait(0.05):
                v = proc_status(d.proc.pid, "VmRSS")
                a = proc_status(d.proc.pid, "RssAnon")
                if v is not None and a is not None:
                    samples.append(v)
                    anon.append(a)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            t0 = time.monotonic()
            first_s = None
            count = 0
            prev = None
            for o in b.List(b.pb.ListRequest(prefix=""), timeout=1800):
                if first_s is None:
                    first_s = time.monotonic() - t0
                    rss_first = proc_status(d.proc.pid, "VmRSS")
                    anon_first = proc_status(d.proc.pid, "RssAnon")
                if o.name != names[count]:
                    raise CaseFailure("entry %d: got %r, want %r (previous %r)"
                                      % (count, o.name, names[count], prev))
                prev = o.name
                count += 1
            all_s = time.monotonic() - t0
        finally:
            stop.set()
            sampler.join(5)
        check_eq(count, n_obj, "objects listed")
        peak = max(samples + [rss_first])
        anon_peak = max(anon + [anon_first])
        print("      %d objects: generated in %.1f s; server start (index rebuild) %.1f s, "
              "rebuild %s ms; first result %.1f ms; whole List %.1f s; RSS at start %.1f MiB, "
              "at first result %.1f MiB, peak during List %.1f MiB, VmHWM %.1f MiB; anonymous RSS at "
              "first result %.1f MiB, peak %.1f MiB"
              % (n_obj, gen_s, start_s, m.group(2) if m else "(none)", first_s * 1000, all_s, rss0 / 1024.0,
                 rss_first / 1024.0, peak / 1024.0, proc_status(d.proc.pid, "VmHWM") / 1024.0,
                 anon_first / 1024.0, anon_peak / 1024.0))
        check(m is not None, "no rebuild line in the log")
        check_eq(int(m.group(1)), n_obj, "names counted by the rebuild")
        print("      first result %.1f ms (issue's target %.0f ms; reported, not asserted)"
              % (first_s * 1000, FIRST_RESULT_TARGET_S * 1000))
        check(first_s * FIRST_RESULT_FRACTION < all_s,
              "first result after %.1f ms of a %.1f s List: not streamed (bound 1/%d of the List)"
              % (first_s * 1000, all_s, FIRST_RESULT_FRACTION))
        # Flat: the List adds its send queue and a batch, not something per object. The index
        # map pages it walks are file-backed page cache, counted in VmRSS (~60 bytes a name)
        # but not in RssAnon, which is what a server holds of its own.
        grew_anon = (anon_peak - anon_first) / 1024.0
        check(grew_anon < 16, "anonymous RSS grew by %.1f MiB during the List (bound 16 MiB)"
              % grew_anon)
        index_mib = n_obj * 128 / MiB
        grew = (peak - rss_first) / 1024.0
        check(grew < 16 + index_mib, "RSS grew by %.1f MiB during the List (bound %.1f MiB)"
              % (grew, 16 + index_mib))
        d.stop()


@run.case("List of a 100,000-object store: streamed in order, flat memory", group="big")
def _(srv):
    big_case(BIG_OBJECTS)


@run.case("List of a 1,000,000-object store: streamed in order, flat memory", group="huge")
def _(srv):
    big_case(HUGE_OBJECTS)


run.main()
