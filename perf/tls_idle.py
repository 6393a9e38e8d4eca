#!/usr/bin/python3
"""Memory of idle connections, h2c against TLS: 1,000 connections each (past the handshake,
HTTP/2 preface sent) to one ringstreamd with one worker; prints the VmRSS growth.
Usage: perf/tls_idle.py BUILD_DIR/ringstreamd     (needs ulimit -n >= 2100)"""
import socket, ssl, subprocess, sys, time, os, tempfile, shutil
binary = sys.argv[1]
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def port():
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
tmp=tempfile.mkdtemp()
pki=tmp+"/pki"
subprocess.run([repo+"/scripts/gen-test-certs.sh", pki], check=True, stdout=subprocess.DEVNULL)
P1,P2=port(),port()
srv=subprocess.Popen([binary,"--data-dir",tmp+"/d","--listen","127.0.0.1:%d"%P1,"--listen","h2c://127.0.0.1:%d"%P2,
    "--tls-cert",pki+"/server.pem","--tls-key",pki+"/server.key","--workers","1","--max-conns","2000","--handshake-timeout-ms","600000"],stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1",P2)).close(); break
        except OSError: time.sleep(0.1)
    time.sleep(0.5)
    def rss():
        for l in open("/proc/%d/status"%srv.pid):
            if l.startswith("VmRSS"): return int(l.split()[1])
    ctx=ssl.create_default_context(cafile=pki+"/ca.pem"); ctx.set_alpn_protocols(["h2"])
    preface=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"+b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    for label,port_,tls in (("h2c",P2,False),("tls",P1,True)):
        conns=[]
        r0=rss()
        for i in range(1000):
            if srv.poll() is not None: print("server exited", srv.returncode, i); raise SystemExit
            s=socket.create_connection(("127.0.0.1",port_))
            if tls: s=ctx.wrap_socket(s,server_hostname="localhost")
            s.sendall(preface)
            conns.append(s)
        time.sleep(1.0)
        r1=rss()
        print("%s: 1000 idle connections: RSS +%d KiB (%.1f KiB each)"%(label,r1-r0,(r1-r0)/1000.0))
        for s in conns: s.close()
        time.sleep(1.5)
finally:
    srv.terminate(); srv.wait(10); shutil.rmtree(tmp)
