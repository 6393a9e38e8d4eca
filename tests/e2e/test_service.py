"""Running ringstreamd as a service (issue 14): one server per address and per data directory,
and the shared server keeps serving while a second one is refused. Every extra server started
here runs on 127.0.0.1 with a fresh temp dir and is stopped by its PID in a finally block."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Bulk, TestRun, channel, check, check_eq, free_port  # noqa: E402

run = TestRun("service", server_args=("--workers", "2"))
WAIT_S = 10.0


def run_second(srv, args):
    """Starts another ringstreamd with |args|; returns (exit code, stderr) once it exits (it
    must, within WAIT_S: it is meant to be refused)."""
    proc = subprocess.Popen([srv.binary] + args, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=WAIT_S)
        return proc.returncode, (out + err).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def still_serving(srv):
    with channel(srv) as ch:
        b = Bulk(ch)
        name = "probe-%d" % os.getpid()
        b.put(name, b"still here", overwrite=True)
        check_eq(b.get(name), b"still here", "the first server's answer")


@run.case("a second server on the same address is refused; the first keeps serving")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    try:
        code, text = run_second(srv, ["--listen", srv.address, "--data-dir",
                                      os.path.join(tmp, "data"), "--workers", "2"])
        check(code == 1, "exit code %r, output %r" % (code, text))
        check("address already in use by another process" in text,
              "no clear line: %r" % text)
        for _ in range(8):  # with a joined reuseport group some of these would go astray
            still_serving(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@run.case("a second server on the same data directory is refused; the first keeps serving")
def _(srv):
    code, text = run_second(srv, ["--listen", "127.0.0.1:%d" % free_port(), "--data-dir",
                                  srv.data_dir, "--workers", "1"])
    check(code == 1, "exit code %r, output %r" % (code, text))
    check("is in use by another ringstreamd (pid %d" % srv.pid() in text,
          "no clear line naming the holder: %r" % text)
    still_serving(srv)


run.main()
