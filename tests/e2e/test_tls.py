"""TLS end to end (issue 12): real clients against ringstreamd with --tls-cert/--tls-key.

Each case starts the servers it needs (fresh data dir, free ports, stopped in finally); the
test PKI is made by scripts/gen-test-certs.sh into a temp dir and removed at the end.
Groups: quick (runs under ASan too), full (adds the reload cases, the 64 MiB transfer, h2load,
nghttp and grpc-js) and large (1 GiB Put and Get with and without client certificates, SIGHUP
during a 1 GiB download; data generated on the fly, never held whole).
"""

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import CaseFailure, Server, Bulk, check, check_eq, free_port, sha256  # noqa: E402

WAIT_S = 10.0
ap = argparse.ArgumentParser(description="ringstream e2e: TLS")
ap.add_argument("--server", required=True)
ap.add_argument("--group", action="append", default=[])
ap.add_argument("--only", default=None)
ap.add_argument("--large-bytes", type=int, default=1 << 30,
                help="object size of the large group (default 1 GiB; smaller under ASan)")
ARGS = ap.parse_args()

TMP = tempfile.mkdtemp(prefix="rs-tls-")
PKI = os.path.join(TMP, "pki")
subprocess.run([os.path.join(harness.REPO, "scripts", "gen-test-certs.sh"), PKI, "first"],
               check=True, stdout=subprocess.DEVNULL)


def pki(name):
    return os.path.join(PKI, name)


def read(name):
    with open(pki(name), "rb") as f:
        return f.read()


def tls_args(cert=None, key=None, client_ca=None):
    a = ["--tls-cert", cert or pki("server.pem"), "--tls-key", key or pki("server.key")]
    if client_ca:
        a += ["--tls-client-ca", client_ca]
    return a


def secure(srv, client=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read(client + ".key") if client else None,
        certificate_chain=read(client + ".pem") if client else None)
    return grpc.secure_channel(srv.address, creds, options=harness.CHANNEL_OPTIONS)


def s_client(port, *args, stdin=b""):
    """openssl s_client against 127.0.0.1:port; returns its combined output."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-CAfile", pki("ca.pem"), "-servername", "localhost"] + list(args),
                       input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=WAIT_S)
    return p.stdout.decode(errors="replace")


def served_cn(port):
    out = s_client(port, "-alpn", "h2")
    for line in out.splitlines():
        if line.startswith("subject=") or line.startswith("subject ="):
            return line.split("CN", 1)[1].lstrip(" =").strip()
    raise CaseFailure("no subject in s_client output:\n" + out[-800:])


def closed(srv):
    """ringstream_connections_closed_total by reason, summed over workers (GET /metrics over
    TLS with curl; that connection itself is still open while it is served)."""
    p = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki("ca.pem"), "--max-time", "10",
                        "https://localhost:%d/metrics" % srv.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT_S + 5)
    out = p.stdout.decode(errors="replace")
    check(p.returncode == 0, "curl /metrics: %r" % out[-500:])
    got = {}
    for line in out.splitlines():
        m = re.match(r'ringstream_connections_closed_total\{worker="\d+",reason="(\w+)"\} (\d+)$',
                     line)
        if m:
            got[m.group(1)] = got.get(m.group(1), 0) + int(m.group(2))
    check("tls_handshake" in got and "tls" in got, "no TLS close reasons in /metrics:\n"
          + out[-1500:])
    return got


def wait_closed(srv, reason, at_least):
    """Polls /metrics (bounded) until |reason| counts |at_least| closed connections; a
    connection is counted when the server frees it, just after the client saw it end."""
    for _ in range(100):
        got = closed(srv)
        if got[reason] >= at_least:
            return got
        time.sleep(0.05)
    raise CaseFailure("closed connections with reason %s: %d, want at least %d (%r)"
                      % (reason, got[reason], at_least, got))


class Servers:
    """Servers started by one case; all stopped (and checked) at the end of it."""

    def __init__(self):
        self.list = []

    def start(self, extra):
        s = Server(ARGS.server, extra)
        self.list.append(s)
        s.start()
        return s

    def stop(self):
        problems = []
        for s in self.list:
            problems += s.stop()
        return problems


CASES = []


def case(name, group="quick"):
    def deco(fn):
        CASES.append((name, group, fn))
        return fn
    return deco


def bulk_round_trip(ch, name, size):
    b = Bulk(ch)
    data = os.urandom(size)
    info = b.put(name, data)
    check_eq(info.size, size, "Put size")
    check_eq(b.stat(name).sha256, sha256(data), "Stat sha256")
    got = b.get(name)
    check(got == data, "Get returned other bytes (%d of %d)" % (len(got), size))


@case("grpcio secure channel: Bulk Put/Get/Stat over TLS, NOT_FOUND over TLS")
def _(ss):
    srv = ss.start(tls_args())
    with secure(srv) as ch:
        bulk_round_trip(ch, "tls-small", 100000)
        bulk_round_trip(ch, "tls-multi", 5 * 1024 * 1024 + 17)
        harness.expect_status(grpc.StatusCode.NOT_FOUND, Bulk(ch).stat, "missing")


@case("grpcio secure channel: 64 MiB Put and Get with SHA-256", group="full")
def _(ss):
    srv = ss.start(tls_args())
    with secure(srv) as ch:
        bulk_round_trip(ch, "tls-big", 64 << 20)


@case("curl --http2 over TLS: GET /healthz, HTTP/2 negotiated by ALPN")
def _(ss):
    srv = ss.start(tls_args())
    p = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki("ca.pem"), "--max-time", "10",
                        "-w", "\n%{http_version} %{http_code}",
                        "https://localhost:%d/healthz" % srv.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT_S + 5)
    out = p.stdout.decode(errors="replace")
    check(p.returncode == 0 and out.endswith("2 200"), "curl: %r" % out)


@case("openssl s_client: TLS 1.2 and 1.3 negotiate h2; ALPN http/1.1 gets no_application_protocol")
def _(ss):
    srv = ss.start(tls_args())
    for ver, proto in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        out = s_client(srv.port, ver, "-alpn", "h2")
        check("ALPN protocol: h2" in out and ("Protocol  : " + proto in out or
                                              "New, " + proto in out),
              "%s: no h2/%s in:\n%s" % (ver, proto, out[-1500:]))
    before = closed(srv)
    out = s_client(srv.port, "-alpn", "http/1.1")
    check("no application protocol" in out, "ALPN http/1.1: no alert 120 in:\n" + out[-1500:])
    after = wait_closed(srv, "tls_handshake", before["tls_handshake"] + 1)
    check_eq(after["tls"], before["tls"], "closes counted as TLS record failures")
    with secure(srv) as ch:  # the server goes on
        harness.expect_status(grpc.StatusCode.NOT_FOUND, Bulk(ch).stat, "x")


@case("a non-AEAD suite (TLS 1.2 CBC) is refused")
def _(ss):
    srv = ss.start(tls_args())
    out = s_client(srv.port, "-tls1_2", "-cipher",
                   "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:AES128-SHA256:AES128-SHA")
    check("Cipher is (NONE)" in out or "Cipher    : 0000" in out,
          "a CBC suite was negotiated:\n" + out[-1500:])


@case("h2c:// listener beside a TLS one")
def _(ss):
    port = free_port()
    srv = ss.start(tls_args() + ["--listen", "h2c://127.0.0.1:%d" % port])
    with secure(srv) as ch:
        Bulk(ch).put("both", b"hello")
    with grpc.insecure_channel("127.0.0.1:%d" % port, options=harness.CHANNEL_OPTIONS) as ch:
        check_eq(Bulk(ch).get("both"), b"hello", "Get over h2c")
    # and the TLS port does not speak h2c: the preface gets no SETTINGS back
    with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        data = b""
        for _ in range(100):  # bounded: until EOF
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        check(b"\x00\x00\x00\x04" not in data[:9], "plaintext HTTP/2 answered on the TLS port")


@case("a stalled handshake is closed after --handshake-timeout-ms; others unaffected")
def _(ss):
    srv = ss.start(tls_args() + ["--handshake-timeout-ms", "500"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S) as s:
        s.sendall(b"\x16\x03\x01\x00\x50")  # a ClientHello record header, then nothing
        with secure(srv) as ch:  # a well-behaved client meanwhile
            bulk_round_trip(ch, "beside-stall", 1000)
        try:
            got = s.recv(4096)  # the server closes: EOF (an alert at most) before WAIT_S
        except socket.timeout:
            raise CaseFailure("stalled handshake still open after %.0f s" % WAIT_S)
        check(len(got) < 64, "unexpected %d bytes" % len(got))


def tls_connect(port):
    """A TLS 1.3 connection with ALPN h2 (python ssl); returns the raw descriptor too."""
    ctx = ssl.create_default_context(cafile=pki("ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=WAIT_S),
                        server_hostname="localhost")
    check_eq(s.selected_alpn_protocol(), "h2", "ALPN")
    return s, s.fileno()


def until_eof(fd):
    """Reads raw bytes until the server closes; bounded by WAIT_S per read."""
    import select
    for _ in range(1000):
        r, _w, _x = select.select([fd], [], [], WAIT_S)
        if not r:
            raise CaseFailure("the server kept the connection open")
        try:
            if not os.read(fd, 65536):
                return
        except ConnectionResetError:
            return


@case("bad input: garbage after the handshake, a truncated record, a reset mid-record, "
      "a TLS 1.2 renegotiation; a concurrent client is unaffected")
def _(ss):
    srv = ss.start(tls_args())
    with secure(srv) as ch:
        b = Bulk(ch)
        b.put("bystander", b"b" * 100000)
        # garbage where a record should be: an alert, then close (counted)
        before = closed(srv)
        s, fd = tls_connect(srv.port)
        os.write(fd, b"\x17\x03\x03\x00\x20" + os.urandom(32))
        until_eof(fd)
        s.close()
        wait_closed(srv, "tls", before["tls"] + 1)
        # a record header promising 16 KiB, 100 bytes of it, then the client's FIN
        s, fd = tls_connect(srv.port)
        os.write(fd, b"\x17\x03\x03\x40\x00" + b"x" * 100)
        half = socket.socket(fileno=os.dup(fd))
        half.shutdown(socket.SHUT_WR)
        half.close()
        until_eof(fd)
        s.close()
        # the same, ended by a reset
        s, fd = tls_connect(srv.port)
        os.write(fd, b"\x17\x03\x03\x40\x00" + b"x" * 100)
        raw = socket.socket(fileno=os.dup(fd))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        raw.close()
        s.close()
        # renegotiation (TLS 1.2, s_client's "R" command): refused, the server goes on
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                            "-tls1_2", "-alpn", "h2", "-CAfile", pki("ca.pem")],
                           input=b"R\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=WAIT_S)
        out = p.stdout.decode(errors="replace")
        check("RENEGOTIATING" in out, "s_client did not try:\n" + out[-800:])
        # the bystander connection still works, and new ones too
        check_eq(b.get("bystander"), b"b" * 100000, "Get on the bystander connection")
    with secure(srv) as ch:
        check_eq(Bulk(ch).stat("bystander").size, 100000, "Stat on a new connection")


@case("startup: a key not matching the certificate, an unreadable file, a ticket key interval "
      "over 24 h: one line, exit != 0")
def _(ss):
    d = os.path.join(TMP, "start")
    os.makedirs(d, exist_ok=True)
    for args, want in ((tls_args(key=pki("wrong.key")), "does not match"),
                       (tls_args(cert=os.path.join(TMP, "nope.pem")), "cannot read"),
                       (["--tls-cert", pki("server.pem")], "go together"),
                       # ticket keys rotate at least daily: no longer interval is accepted
                       (tls_args() + ["--tls-ticket-hours", "25"],
                        "invalid value '25' for --tls-ticket-hours")):
        p = subprocess.run([ARGS.server, "--listen", "127.0.0.1:%d" % free_port(), "--data-dir",
                            os.path.join(d, "data")] + args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=WAIT_S)
        err = [l for l in p.stderr.decode(errors="replace").splitlines()
               if not l.startswith("ringstreamd: info:")]
        check(p.returncode != 0, "exit 0 with %s" % args)
        check(len(err) == 1 and want in err[0], "want one line with %r, got %r" % (want, err))


@case("mTLS: with a client certificate OK; without one, or from another CA, the handshake fails")
def _(ss):
    h2c_port = free_port()
    srv = ss.start(tls_args(client_ca=pki("ca.pem")) +
                   ["--log-level", "debug", "--listen", "h2c://127.0.0.1:%d" % h2c_port])
    with secure(srv, client="client") as ch:
        bulk_round_trip(ch, "mtls", 70000)
    for who in (None, "other-client"):
        with secure(srv, client=who) as ch:
            harness.expect_status(grpc.StatusCode.UNAVAILABLE, Bulk(ch).stat, "mtls",
                                  timeout=WAIT_S)
    # counted (read over the plaintext listener: a TLS one wants a client certificate)
    for _ in range(100):  # bounded poll: a connection is counted when the server frees it
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10",
                            "http://127.0.0.1:%d/metrics" % h2c_port], capture_output=True,
                           text=True, timeout=WAIT_S + 5)
        n = sum(int(m) for m in re.findall(
            r'ringstream_connections_closed_total\{worker="\d+",reason="tls_handshake"\} (\d+)',
            p.stdout))
        if n >= 2:
            break
        time.sleep(0.05)
    check(n >= 2, "rejected client certificates counted %d times, want at least 2" % n)
    # the verified identity reaches the handler (rs_call_peer_identity, logged at debug)
    wait_log(srv, "from subject=/CN=ringstream-test-client; san=")
    check("spiffe://test/client" in srv.stderr_text(), "no URI SAN in:\n" + srv.stderr_tail())
    out = s_client(srv.port, "-alpn", "h2", "-cert", pki("client.pem"), "-key", pki("client.key"))
    check("ALPN protocol: h2" in out, "s_client with a client cert:\n" + out[-1000:])
    # no tickets under mTLS (a resumption would carry no certificate): nothing to resume
    for ver in ("-tls1_2", "-tls1_3"):
        sess = os.path.join(TMP, "sess-mtls" + ver)
        # stays connected 0.5 s, long enough to read a ticket if one were sent (they come
        # within milliseconds: see the resumption case)
        p = subprocess.run("sleep 0.5 | openssl s_client -connect 127.0.0.1:%d -CAfile %s "
                           "-servername localhost %s -alpn h2 -cert %s -key %s -sess_out %s"
                           % (srv.port, pki("ca.pem"), ver, pki("client.pem"),
                              pki("client.key"), sess),
                           shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=WAIT_S)
        out = p.stdout.decode(errors="replace")
        check("New, " in out, "%s mTLS handshake failed:\n%s" % (ver, out[-1000:]))
        check(not os.path.exists(sess) and "session ticket lifetime" not in out,
              "%s: a resumable session under mTLS:\n%s" % (ver, out[-1500:]))


@case("grpc-js over TLS: interop cases through a secure channel", group="full")
def _(ss):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpcjs")
    if not os.path.isdir(os.path.join(here, "node_modules", "@grpc", "grpc-js")):
        raise CaseFailure("%s/node_modules is missing: run scripts/deps.sh (npm ci)" % here)
    srv = ss.start(tls_args())
    for name in ("empty_unary", "large_unary", "client_streaming", "server_streaming",
                 "ping_pong", "status_code_and_message", "custom_metadata",
                 "cancel_after_first_response"):
        p = subprocess.run([shutil.which("node") or "/usr/bin/node", "interop.js",
                            "--server_host=localhost", "--server_port=%d" % srv.port,
                            "--test_case=" + name, "--ca_file=" + pki("ca.pem")],
                           capture_output=True, text=True, errors="replace", timeout=60, cwd=here)
        check(p.returncode == 0, "grpc-js %s: exit %d\n%s" % (name, p.returncode,
                                                              (p.stdout + p.stderr)[-1500:]))


def tool_output(cmd, timeout=60):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def grpc_message(msg):
    b = msg.SerializeToString()
    return b"\0" + len(b).to_bytes(4, "big") + b


@case("h2load https://: /healthz and gRPC Stat over TLS, every response 2xx", group="full")
def _(ss):
    srv = ss.start(tls_args())
    with secure(srv) as ch:
        Bulk(ch).put("h2load", b"h" * 1000)
    body = os.path.join(TMP, "stat.bin")
    with open(body, "wb") as f:
        f.write(grpc_message(harness.pb2().StatRequest(name="h2load")))
    base = "https://127.0.0.1:%d" % srv.port
    for args in (["-n", "2000", "-c", "10", "-m", "10", base + "/healthz"],
                 ["-n", "2000", "-c", "4", "-m", "20", "-d", body,
                  "-H", "content-type: application/grpc", "-H", "te: trailers",
                  base + "/ringstream.v1.Bulk/Stat"]):
        rc, out = tool_output(["h2load"] + args)
        check(rc == 0 and "2000 succeeded, 0 failed, 0 errored" in out and
              "status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx" in out,
              "h2load %s:\n%s" % (args[-1], out[-1500:]))
        check("TLS Protocol: TLSv1.3" in out and "Application protocol: h2" in out,
              "h2load did not report TLS 1.3 with h2:\n" + out[-1500:])


@case("nghttp -v https://: ALPN h2 negotiated, :status 200", group="full")
def _(ss):
    srv = ss.start(tls_args())
    rc, out = tool_output(["nghttp", "-v", "https://localhost:%d/healthz" % srv.port])
    check(rc == 0 and "The negotiated protocol: h2" in out,
          "nghttp: no ALPN h2 in:\n" + out[-1500:])
    check(re.search(r"recv \(stream_id=\d+\) :status: 200", out) is not None,
          "nghttp: no :status 200 in:\n" + out[-1500:])


# --- 1 GiB (--large-bytes) ------------------------------------------------------------------

LARGE = ARGS.large_bytes
PIECE = 1 << 20  # bytes per generated piece and per Put message


def generate(seed, size=LARGE):
    """Deterministic pseudo-random bytes, one piece at a time (never the whole object)."""
    rng = random.Random(seed)
    for off in range(0, size, PIECE):
        yield rng.randbytes(min(PIECE, size - off))


def digest_of(seed, size=LARGE):
    h = hashlib.sha256()
    for piece in generate(seed, size):
        h.update(piece)
    return h.digest()


def put_large(b, name, seed, size=LARGE):
    """Streams a generated object up with its SHA-256 in the header: the server checks it (a
    mismatch fails the Put) and answers the digest it computed. Returns the digest."""
    pb = b.pb
    want = digest_of(seed, size)

    def requests():
        yield pb.PutRequest(header=pb.PutHeader(name=name, size=size, sha256=want,
                                                overwrite=True))
        for piece in generate(seed, size):
            yield pb.PutRequest(data=piece)

    info = b.Put(requests(), timeout=600)
    check_eq(info.size, size, "Put size")
    check(info.sha256 == want, "the server's SHA-256 of the Put differs from the client's")
    return want


def get_large(b, name, want, size=LARGE, during=None):
    """Streams the object down, hashing as it comes; calls |during| once, half way."""
    h = hashlib.sha256()
    pos = 0
    for c in b.Get(b.pb.GetRequest(name=name, chunk_size=PIECE), timeout=600):
        check_eq(c.offset, pos, "chunk offset")
        h.update(c.data)
        pos += len(c.data)
        if during is not None and pos >= size // 2:
            during()
            during = None
    check_eq(pos, size, "bytes received by Get")
    check(h.digest() == want, "the SHA-256 of the bytes received differs from the Put's")
    check_eq(b.stat(name).sha256, want, "Stat sha256")


@case("grpcio secure channel: large (1 GiB) Put and Get, SHA-256 checked on both ends",
      group="large")
def _(ss):
    srv = ss.start(tls_args())
    with secure(srv) as ch:
        b = Bulk(ch)
        want = put_large(b, "tls-1g", 1)
        get_large(b, "tls-1g", want)


@case("mTLS: large (1 GiB) Put and Get with a client certificate; without one: UNAVAILABLE",
      group="large")
def _(ss):
    srv = ss.start(tls_args(client_ca=pki("ca.pem")))
    with secure(srv, client="client") as ch:
        b = Bulk(ch)
        want = put_large(b, "mtls-1g", 2)
        get_large(b, "mtls-1g", want)
    with secure(srv) as ch:
        harness.expect_status(grpc.StatusCode.UNAVAILABLE, Bulk(ch).stat, "mtls-1g",
                              timeout=WAIT_S)


@case("SIGHUP during a large (1 GiB) TLS download: it completes intact; a new connection sees "
      "the new certificate", group="large")
def _(ss):
    live = os.path.join(TMP, "live-large")
    os.makedirs(live, exist_ok=True)
    shutil.copy(pki("server.pem"), live)
    shutil.copy(pki("server.key"), live)
    srv = ss.start(tls_args(cert=os.path.join(live, "server.pem"),
                            key=os.path.join(live, "server.key")))
    second = os.path.join(TMP, "pki-large")
    subprocess.run([os.path.join(harness.REPO, "scripts", "gen-test-certs.sh"), second,
                    "second"], check=True, stdout=subprocess.DEVNULL)
    check_eq(served_cn(srv.port), "first", "CN before the reload")

    def reload():
        shutil.copy(os.path.join(second, "server.pem"), live)
        shutil.copy(os.path.join(second, "server.key"), live)
        os.kill(srv.pid(), signal.SIGHUP)
        wait_log(srv, "TLS certificate, key and client CA reloaded")
        check_eq(served_cn(srv.port), "second", "CN of a new connection after the reload")

    with secure(srv) as ch:
        b = Bulk(ch)
        want = put_large(b, "hup-1g", 3)
        get_large(b, "hup-1g", want, during=reload)
    check_eq(served_cn(srv.port), "second", "CN after the download")


def wait_log(srv, text):
    for _ in range(200):  # bounded poll of the server's log, not a timing assertion
        if text in srv.stderr_text():
            return
        time.sleep(0.05)
    raise CaseFailure("no %r in the server log:\n%s" % (text, srv.stderr_tail()))


def s_client_session(port, ver, path):
    """A full handshake with s_client -sess_out |path|; returns its output once the session
    with its ticket is written. s_client writes the file when a ticket arrives: in the handshake
    for TLS 1.2, after it (NewSessionTicket) for TLS 1.3, so it must stay connected and read:
    stdin stays open (-ign_eof) until the file is complete, then it is stopped."""
    if os.path.exists(path):
        os.unlink(path)
    p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-CAfile", pki("ca.pem"), "-servername", "localhost", "-alpn", "h2",
                          ver, "-sess_out", path, "-ign_eof"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):  # bounded wait for the file, not a timing assertion
            if os.path.exists(path):
                with open(path) as f:
                    if "END SSL SESSION PARAMETERS" in f.read():
                        break
            time.sleep(0.05)
        else:
            raise CaseFailure("s_client %s wrote no session to %s" % (ver, path))
    finally:
        p.kill()
        out = p.communicate(timeout=WAIT_S)[0].decode(errors="replace")
    return out


def resumes(port, ver, path):
    """s_client -sess_in |path|: True for "Reused", False for "New" (a full handshake)."""
    out = s_client(port, ver, "-alpn", "h2", "-sess_in", path)
    if "Reused, " in out:
        return True
    check("New, " in out and "ALPN protocol: h2" in out,
          "%s -sess_in: neither Reused nor a full handshake:\n%s" % (ver, out[-1500:]))
    return False


VERSIONS = (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3"))


@case("session resumption: TLS 1.2 and 1.3 tickets resume (s_client -sess_out, -sess_in)")
def _(ss):
    srv = ss.start(tls_args() + ["--tls-ticket-hours", "2"])
    for ver, proto in VERSIONS:
        sess = os.path.join(TMP, "sess" + ver)
        out = s_client_session(srv.port, ver, sess)
        check("New, " + proto in out, "%s: first handshake not a full %s one:\n%s"
              % (ver, proto, out[-1500:]))
        text = subprocess.run(["openssl", "sess_id", "-in", sess, "-noout", "-text"],
                              capture_output=True, text=True, timeout=WAIT_S).stdout
        check("lifetime hint: 7200 (seconds)" in text and "TLS session ticket:" in text,
              "%s: no ticket with --tls-ticket-hours 2's lifetime:\n%s" % (ver, text))
        for i in range(2):  # a ticket is not single-use
            check(resumes(srv.port, ver, sess), "%s: resumption %d not Reused" % (ver, i + 1))
    with secure(srv) as ch:  # and gRPC goes on
        harness.expect_status(grpc.StatusCode.NOT_FOUND, Bulk(ch).stat, "x")


@case("session resumption survives SIGHUP; another server's (other keys) ticket: full handshake")
def _(ss):
    srv = ss.start(tls_args())
    other = ss.start(tls_args())
    reloaded = "TLS certificate, key and client CA reloaded"
    for n, (ver, proto) in enumerate(VERSIONS):
        sess = os.path.join(TMP, "sess-hup" + ver)
        s_client_session(srv.port, ver, sess)
        os.kill(srv.pid(), signal.SIGHUP)
        for _ in range(200):  # bounded poll for this reload's log line
            if srv.stderr_text().count(reloaded) > n:
                break
            time.sleep(0.05)
        else:
            raise CaseFailure("reload %d not logged:\n%s" % (n + 1, srv.stderr_tail()))
        check(resumes(srv.port, ver, sess), "%s: no resumption after a SIGHUP reload" % ver)
        check(not resumes(other.port, ver, sess),
              "%s: a ticket sealed with another server's keys resumed" % ver)


@case("SIGHUP: new cert for new connections, the old connection keeps going; a bad file keeps the old",
      group="full")
def _(ss):
    live = os.path.join(TMP, "live")
    os.makedirs(live, exist_ok=True)
    shutil.copy(pki("server.pem"), live)
    shutil.copy(pki("server.key"), live)
    srv = ss.start(tls_args(cert=os.path.join(live, "server.pem"),
                            key=os.path.join(live, "server.key")))
    check_eq(served_cn(srv.port), "first", "CN before the reload")
    ch = secure(srv)
    try:
        b = Bulk(ch)
        b.put("reload", b"x" * 1000)
        second = os.path.join(TMP, "pki2")
        subprocess.run([os.path.join(harness.REPO, "scripts", "gen-test-certs.sh"), second,
                        "second"], check=True, stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(second, "server.pem"), live)
        shutil.copy(os.path.join(second, "server.key"), live)
        os.kill(srv.pid(), signal.SIGHUP)
        wait_log(srv, "TLS certificate, key and client CA reloaded")
        check_eq(served_cn(srv.port), "second", "CN after the reload")
        check_eq(b.get("reload"), b"x" * 1000, "Get on the connection made before the reload")
        with open(os.path.join(live, "server.pem"), "w") as f:
            f.write("not a certificate\n")
        os.kill(srv.pid(), signal.SIGHUP)
        wait_log(srv, "TLS reload failed, keeping the previous certificate")
        check_eq(served_cn(srv.port), "second", "CN after a bad reload")
        check_eq(b.stat("reload").size, 1000, "Stat on the old connection")
    finally:
        ch.close()


def main():
    passed = failed = 0
    for name, group, fn in CASES:
        if ARGS.group and group not in ARGS.group:
            continue
        if ARGS.only and ARGS.only not in name:
            continue
        ss = Servers()
        t0 = time.monotonic()
        err = None
        try:
            fn(ss)
        except CaseFailure as e:
            err = str(e)
        except grpc.RpcError as e:
            err = "unexpected %s (%r)" % (e.code().name, e.details())
        except Exception:  # noqa: BLE001
            err = "exception\n" + traceback.format_exc()
        finally:
            problems = ss.stop()
        if err is None and problems:
            err = "server shutdown: " + "; ".join(problems)
        if err is None:
            print("ok    %s (%.2fs)" % (name, time.monotonic() - t0))
            passed += 1
        else:
            print("FAIL  %s: %s" % (name, err))
            failed += 1
        sys.stdout.flush()
    shutil.rmtree(TMP, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.stdout.flush()
    os._exit(1 if failed or passed == 0 else 0)


main()
