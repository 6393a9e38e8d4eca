#!/usr/bin/env python3
# perf/idle_conns.py BUILD_DIR N: VmRSS of a fresh one-worker ringstreamd before and after N
# idle h2c connections (preface + empty SETTINGS, nothing else), and the cost per connection.
import shutil, socket, sys, time, subprocess, tempfile
build, n = sys.argv[1], int(sys.argv[2])
with socket.socket() as probe:  # a port nobody listens on now
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
d = tempfile.mkdtemp()
p = subprocess.Popen([build + "/ringstreamd", "--listen", f"127.0.0.1:{port}", "--data-dir", d, "--max-conns", "4096", "--workers", "1"], stderr=subprocess.DEVNULL)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
for _ in range(50):
    try: socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError: time.sleep(0.1)
if p.poll() is not None:
    sys.exit(f"ringstreamd exited with {p.returncode}")
time.sleep(0.3); r0 = rss()
pre = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(pre); socks.append(s)
time.sleep(1.0)
for s in socks:
    s.setblocking(False)
    try: s.recv(65536)
    except OSError: pass
time.sleep(0.5); r1 = rss()
print(f"{build}: {n} idle conns, VmRSS {r0} -> {r1} KiB, {(r1 - r0) * 1024 / n / 1024:.1f} KiB/conn")
p.terminate(); p.wait()
shutil.rmtree(d, ignore_errors=True)
