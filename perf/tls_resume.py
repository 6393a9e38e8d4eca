#!/usr/bin/python3
"""TLS handshakes per second, full against resumed (session ticket), TLS 1.2 and TLS 1.3.

One ringstreamd with one worker (--workers 1) and a throwaway PKI; one client thread (Python's
ssl, i.e. OpenSSL) makes N connections back to back for each of the four cases: a full
handshake each, or each resuming the ticket of one earlier connection. Prints handshakes/s
seen by that client (client and server share the machine) and the server's CPU per handshake
(user + system from /proc/PID/stat), which is the figure that matters for the server.
Usage: perf/tls_resume.py BUILD_DIR/ringstreamd [N]    (default N 3000)"""
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def connect(ctx, port, session=None, want_ticket=False):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = ctx.wrap_socket(s, server_hostname="localhost", session=session)
    if want_ticket:  # TLS 1.3: the ticket follows the handshake, before the server's SETTINGS
        t.recv(1)
    reused = t.session_reused
    sess = t.session
    t.close()
    return reused, sess


def main():
    tmp = tempfile.mkdtemp()
    pki = tmp + "/pki"
    subprocess.run([repo + "/scripts/gen-test-certs.sh", pki], check=True,
                   stdout=subprocess.DEVNULL)
    port = free_port()
    srv = subprocess.Popen([binary, "--data-dir", tmp + "/d", "--listen", "127.0.0.1:%d" % port,
                            "--tls-cert", pki + "/server.pem", "--tls-key", pki + "/server.key",
                            "--workers", "1"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        print("| case (%d connections, one client thread) | handshakes/s | server CPU us "
              "per handshake | resumed |" % count)
        print("|---|---|---|---|")
        for name, ver in (("TLS 1.2", ssl.TLSVersion.TLSv1_2), ("TLS 1.3", ssl.TLSVersion.TLSv1_3)):
            ctx = ssl.create_default_context(cafile=pki + "/ca.pem")
            ctx.set_alpn_protocols(["h2"])
            ctx.minimum_version = ctx.maximum_version = ver
            _, sess = connect(ctx, port, want_ticket=True)
            if not sess.has_ticket:
                raise SystemExit("%s: no ticket" % name)
            for mode in ("full", "resumed"):
                reused = 0
                c0, t0 = cpu(srv.pid), time.monotonic()
                for _ in range(count):
                    r, _s = connect(ctx, port, sess if mode == "resumed" else None)
                    reused += r
                dt, dc = time.monotonic() - t0, cpu(srv.pid) - c0
                print("| %s %s | %.0f | %.0f | %d of %d |" % (name, mode, count / dt,
                                                          dc / count * 1e6, reused, count))
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)


main()
