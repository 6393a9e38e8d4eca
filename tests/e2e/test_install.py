"""Install and packaging (issue 14): `cmake --install` into a staging directory (DESTDIR,
never the real system), `systemd-analyze verify` on the staged units, the
`systemd-analyze security` score against its bound, the default configuration parsing, and
`cpack -G DEB` with the files and maintainer scripts the .deb must carry. Needs no running
systemd. Usage: test_install.py --build-dir BUILD"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

SECURITY_BOUND = 2.5
UNIT_DIR = "usr/lib/systemd/system"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def run(cmd, env=None, timeout=300):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def staged(build, tmp):
    stage = os.path.join(tmp, "stage")
    check(stage.startswith("/tmp/") or stage.startswith(tempfile.gettempdir()),
          "refusing a staging dir outside the temp dir: %s" % stage)
    env = dict(os.environ, DESTDIR=stage)
    code, out = run(["cmake", "--install", build, "--prefix", "/usr"], env=env)
    check(code == 0, "cmake --install failed:\n%s" % out)
    return stage


def case_install(build, tmp):
    stage = staged(build, tmp)
    for f in ("usr/bin/ringstreamd", "usr/bin/ringstream", UNIT_DIR + "/ringstreamd.service",
              UNIT_DIR + "/ringstreamd.socket", "etc/ringstream/ringstreamd.conf",
              "usr/share/doc/ringstream/README.md"):
        check(os.path.isfile(os.path.join(stage, f)), "%s not installed" % f)
    unit = open(os.path.join(stage, UNIT_DIR, "ringstreamd.service")).read()
    check("ExecStart=/usr/bin/ringstreamd --config /etc/ringstream/ringstreamd.conf" in unit,
          "the unit does not name the installed paths")
    check(re.search(r"@[A-Z_]+@", unit) is None, "unsubstituted @VAR@ in the unit")
    # the shipped default configuration parses and validates
    code, out = run([os.path.join(stage, "usr/bin/ringstreamd"), "--config",
                     os.path.join(stage, "etc/ringstream/ringstreamd.conf"), "--data-dir",
                     os.path.join(tmp, "data"), "--check-config"])
    check(code == 0 and "[server]" in out, "default configuration: %s" % out)
    # the client is installed beside the daemon and runs from there
    code, out = run([os.path.join(stage, "usr/bin/ringstream"), "--help"])
    check(code == 0 and "Exit codes:" in out, "installed ringstream --help: %s" % out)


def fd_need(workers, max_conns=4096):
    """The descriptors ringstreamd asks for (workers/main.c raise_fd_limit)."""
    return max_conns * workers + 32 + 8 * workers


def case_nofile(build, tmp):
    import resource
    stage = staged(build, tmp)
    unit = open(os.path.join(stage, UNIT_DIR, "ringstreamd.service")).read()
    m = re.search(r"^LimitNOFILE=(\d+)$", unit, re.M)
    check(m is not None, "no numeric LimitNOFILE= in the unit")
    limit = int(m.group(1))
    # the default max-conns on one worker per CPU, here and on a 128-CPU server
    for workers in (os.cpu_count() or 1, 128):
        check(fd_need(workers) <= limit, "LimitNOFILE=%d is short of the %d the default "
              "max-conns needs on %d workers" % (limit, fd_need(workers), workers))
    # one descriptor short: refused with one line naming the LimitNOFILE= to set
    need = fd_need(2)

    def cap():
        resource.setrlimit(resource.RLIMIT_NOFILE, (need - 1, need - 1))
    p = subprocess.run([os.path.join(stage, "usr/bin/ringstreamd"), "--workers", "2",
                        "--listen", "127.0.0.1:1", "--data-dir", os.path.join(tmp, "data")],
                       capture_output=True, text=True, timeout=30, preexec_fn=cap)
    check(p.returncode == 1 and "LimitNOFILE=%d" % need in p.stderr,
          "exit %d, stderr %r" % (p.returncode, p.stderr))


def case_verify(build, tmp):
    stage = staged(build, tmp)
    # verify resolves the units' dependencies (sysinit.target, ...) under --root: give the
    # staging root copies of the system's targets and slices.
    units = os.path.join(stage, UNIT_DIR)
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if os.path.isdir(d):
            for n in os.listdir(d):
                if (n.endswith(".target") or n.endswith(".slice")) and \
                        not os.path.exists(os.path.join(units, n)):
                    src = os.path.join(d, n)
                    if os.path.isfile(src) and not os.path.islink(src):
                        shutil.copy(src, units)
            break
    code, out = run(["systemd-analyze", "verify", "--root=" + stage,
                     os.path.join(units, "ringstreamd.service"),
                     os.path.join(units, "ringstreamd.socket")])
    check(code == 0 and out.strip() == "", "systemd-analyze verify:\n%s" % out)


def case_security(build, tmp):
    stage = staged(build, tmp)
    code, out = run(["systemd-analyze", "security", "--offline=true", "--root=" + stage,
                     os.path.join(stage, UNIT_DIR, "ringstreamd.service")])
    m = re.search(r"Overall exposure level for ringstreamd.service: ([0-9.]+)", out)
    check(m is not None, "no score in:\n%s" % out[-2000:])
    score = float(m.group(1))
    print("      systemd-analyze security: %.1f (bound %.1f)" % (score, SECURITY_BOUND))
    check(score <= SECURITY_BOUND, "exposure %.1f above %.1f" % (score, SECURITY_BOUND))


def case_deb(build, tmp):
    out_dir = os.path.join(tmp, "pkg")
    code, out = run(["cpack", "-G", "DEB", "--config", os.path.join(build, "CPackConfig.cmake"),
                     "-B", out_dir])
    check(code == 0, "cpack failed:\n%s" % out[-3000:])
    debs = [f for f in os.listdir(out_dir) if f.endswith(".deb")]
    check(len(debs) == 1, "want one .deb, got %r" % debs)
    deb = os.path.join(out_dir, debs[0])
    code, listing = run(["dpkg-deb", "-c", deb])
    check(code == 0, listing)
    for f in ("./usr/bin/ringstreamd", "./usr/bin/ringstream",
              "./%s/ringstreamd.service" % UNIT_DIR,
              "./%s/ringstreamd.socket" % UNIT_DIR, "./etc/ringstream/ringstreamd.conf"):
        check(f in listing, "%s missing from the .deb:\n%s" % (f, listing))
    ctl = os.path.join(tmp, "ctl")
    code, out = run(["dpkg-deb", "-e", deb, ctl])
    check(code == 0, out)
    postinst = open(os.path.join(ctl, "postinst")).read()
    check("adduser --system" in postinst and "/var/lib/ringstream" in postinst,
          "postinst does not create the user and the state directory")
    check("/etc/ringstream/ringstreamd.conf" in open(os.path.join(ctl, "conffiles")).read(),
          "the configuration is not a conffile")


CASES = [("cmake --install stages the binary, units, configuration and README", case_install),
         ("LimitNOFILE= fits the default max-conns; one short is refused naming it",
          case_nofile),
         ("systemd-analyze verify accepts the staged units", case_verify),
         ("systemd-analyze security rates the service %.1f or lower" % SECURITY_BOUND,
          case_security),
         ("cpack -G DEB: binary, units, conffile, maintainer scripts", case_deb)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    build = os.path.abspath(args.build_dir)
    passed = failed = 0
    for name, fn in CASES:
        tmp = tempfile.mkdtemp(prefix="rs-install-")
        try:
            fn(build, tmp)
            print("ok    %s" % name)
            passed += 1
        except Failure as e:
            print("FAIL  %s: %s" % (name, e))
            failed += 1
        except Exception:  # noqa: BLE001
            print("FAIL  %s: exception\n%s" % (name, traceback.format_exc()))
            failed += 1
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


main()
