"""Running ringstreamd as a service (issue 14): one server per address and per data directory,
and the shared server keeps serving while a second one is refused. Every extra server started
here runs on 127.0.0.1 with a fresh temp dir and is stopped by its PID in a finally block."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Bulk, TestRun, channel, check, check_eq, free_port  # noqa: E402

run = TestRun("service", server_args=("--workers", "2", "--log-level", "debug"))
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


def run_tool(srv, args, stdin=None):
    """Runs ringstreamd with |args| that make it exit at once; returns (code, stdout, stderr)."""
    proc = subprocess.run([srv.binary] + args, input=stdin, capture_output=True,
                          timeout=WAIT_S)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


BAD_CONFIGS = [  # (file text, line, what the message must say)
    ("[server]\nworkers = 2\nbogus = 1\n", 3, "unknown key 'bogus'"),
    ("[server]\n\nmax-msg = 12q\n", 3, "key 'max-msg': invalid value '12q' (see --help)"),
    ("workers = 2\n", 1, "key 'workers' outside the [server] section"),
    ("[other]\nworkers = 2\n", 2, "key 'workers' outside the [server] section (in [other])"),
    ("[server]\nlisten = nowhere\n", 2, "key 'listen': invalid value 'nowhere' (see --help)"),
    ("[server]\nmetrics = maybe\n", 2, "key 'metrics': invalid value 'maybe' (see --help)"),
    ("[server]\nlog-level = loud\n", 2, "key 'log-level': invalid value 'loud' (see --help)"),
    ("[server]\nworkers = 0\n", 2, "key 'workers': invalid value '0' (see --help)"),
    ("[server]\nhelp = 1\n", 2, "unknown key 'help'"),
    ("[server]\nthis is not ini\n", 2,
     "syntax error (want 'key = value' or '[section]')"),
]


@run.case("config: each bad file fails naming file, line and key", group="config")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    try:
        for i, (text, line, want) in enumerate(BAD_CONFIGS):
            path = os.path.join(tmp, "bad%d.conf" % i)
            with open(path, "w") as f:
                f.write(text)
            code, out, err = run_tool(srv, ["--config", path, "--data-dir", tmp,
                                            "--check-config"])
            check(code == 2, "%r: exit %r" % (text, code))
            check_eq(err.strip(), "ringstreamd: %s:%d: %s" % (path, line, want),
                     "message for %r" % text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@run.case("config: --check-config prints every key, round-trips, flags override the file",
          group="config")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    try:
        path = os.path.join(tmp, "a.conf")
        with open(path, "w") as f:
            f.write("# comment\n[server]\nlisten = 127.0.0.1:1234\ndata-dir = %s\n"
                    "workers = 3\nmax-msg = 8m\ndrain-ms = 700\nmetrics = off\n" % tmp)
        code, out, err = run_tool(srv, ["--config", path, "--workers", "2", "--check-config"])
        check(code == 0, "exit %r: %s" % (code, err))
        got = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
        check_eq(got["workers"], "2", "workers (the flag wins)")
        check_eq(got["max-msg"], str(8 << 20), "max-msg (from the file)")
        check_eq(got["drain-ms"], "700", "drain-ms")
        check_eq(got["metrics"], "off", "metrics")
        check_eq(got["listen"], "127.0.0.1:1234", "listen")
        _, help_text, _ = run_tool(srv, ["--help"])
        for key in got:  # every key is an option
            check("--" + key + " " in help_text, "key %s is not in --help" % key)
        check(len(got) >= 18, "only %d keys printed" % len(got))
        code, out2, err = run_tool(srv, ["--config", "/dev/stdin", "--check-config"],
                                   stdin=out.encode())
        check(code == 0, "the printout does not parse back: %s" % err)
        check_eq(out2, out, "second printout")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@run.case("--version names ringstreamd and the libraries", group="config")
def _(srv):
    code, out, _ = run_tool(srv, ["--version"])
    check(code == 0, "exit %r" % code)
    for word in ("ringstreamd ", "liburing ", "nghttp2 ", "wolfSSL ", "OpenSSL ", "zlib "):
        check(word in out, "%r missing from %r" % (word, out))


def scrape(srv):
    """GET /metrics over h2c (curl, one connection); returns {(name, labels...): value} summed
    over workers, parsed by prometheus_client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-",
                          "http://%s/metrics" % srv.address], capture_output=True,
                         timeout=WAIT_S)
    check(out.returncode == 0, "curl: %s" % out.stderr.decode())
    head, _, body = out.stdout.decode().partition("\r\n\r\n")
    check("text/plain; version=0.0.4" in head, "content-type in %r" % head)
    sums = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))
            key = (s.name,) + labels
            sums[key] = sums.get(key, 0) + s.value
    return sums


def handled(m, service, method, code):
    """grpc_server_handled_total of one method and code, whatever its grpc_type."""
    want = {"grpc_code": code, "grpc_method": method, "grpc_service": service}
    return sum(v for k, v in m.items() if k[0] == "grpc_server_handled_total" and
               {n: x for n, x in k[1:] if n != "grpc_type"} == want)


@run.case("metrics: each counter moves by exactly what was done; calls are logged",
          group="metrics")
def _(srv):
    import grpc
    from harness import expect_status
    before = scrape(srv)
    prefix = "m-%d-" % os.getpid()
    with channel(srv) as ch:
        b = Bulk(ch)
        for i in range(2):
            b.put("%s%d" % (prefix, i), b"x" * 1000, overwrite=True)
        for i in range(3):
            expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "missing-%d" % i)
        expect_status(grpc.StatusCode.UNIMPLEMENTED,
                      ch.unary_unary("/ringstream.v1.Bulk/NoSuchMethod"), b"")
        check_eq(len(b.get(prefix + "0")), 1000, "Get")
        check_eq(len(b.list(prefix)), 2, "List")
        b.delete(prefix + "1")
        expect_status(grpc.StatusCode.NOT_FOUND, b.delete, prefix + "1")
    after = scrape(srv)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)
    svc = "ringstream.v1.Bulk"
    check_eq(handled(after, svc, "Put", "OK") - handled(before, svc, "Put", "OK"), 2, "Put OK")
    check_eq(handled(after, svc, "Stat", "NOT_FOUND") - handled(before, svc, "Stat", "NOT_FOUND"),
             3, "Stat NOT_FOUND")
    # the store's own series: operations by result, bytes stored and read, no storage error
    for op, result, n in (("put", "OK", 2), ("stat", "NOT_FOUND", 3), ("get", "OK", 1),
                          ("list", "OK", 1), ("delete", "OK", 1), ("delete", "NOT_FOUND", 1),
                          ("stat", "OK", 0), ("echo", "OK", 0)):
        check_eq(delta(("ringstream_bulk_operations_total", ("op", op), ("result", result))), n,
                 "ringstream_bulk_operations_total{op=%s,result=%s}" % (op, result))
    check_eq(delta(("ringstream_bulk_stored_bytes_total",)), 2000, "bytes stored")
    check_eq(delta(("ringstream_bulk_read_bytes_total",)), 1000, "bytes read")
    errors = [k for k in after if k[0] == "ringstream_bulk_storage_errors_total"]
    check_eq(len(errors), 10, "causes of ringstream_bulk_storage_errors_total: %r" % errors)
    check_eq(sum(delta(k) for k in errors), 0, "storage errors")
    check_eq(handled(after, "unknown", "unknown", "UNIMPLEMENTED") -
             handled(before, "unknown", "unknown", "UNIMPLEMENTED"), 1, "unknown method")
    # the gRPC channel's connection and the second scrape's own
    check_eq(delta(("ringstream_connections_accepted_total",)), 2, "connections accepted")
    check(delta(("ringstream_received_bytes_total",)) > 2000, "bytes in")
    check(delta(("ringstream_sent_bytes_total",)) > 0, "bytes out")
    check(after[("ringstream_budget_limit_bytes",)] > 0, "budget limit")
    for key in (("ringstream_connections_open",), ("ringstream_streams_open",),
                ("ringstream_pool_blocks_in_use",), ("ringstream_pool_bytes_in_use",),
                ("ringstream_timers",),
                ("ringstream_budget_refusals_total", ("reason", "stream"))):
        check(key in after, "%s missing" % (key,))
    log = srv.stderr_text()
    check("call /ringstream.v1.Bulk/Stat: NOT_FOUND" in log, "no info line for a NOT_FOUND")
    check("info: " in log.split("call /ringstream.v1.Bulk/Stat: NOT_FOUND")[0].splitlines()[-1],
          "a failed call is logged at info")
    check(any("debug: " in l and "call /ringstream.v1.Bulk/Put: OK (in " in l
              for l in log.splitlines()), "no debug line for a Put")


def testing_pb2():
    """grpc_testing_pb2, generated by protoc into a temp dir."""
    from harness import PROTO_DIR, PROTOC
    gen = tempfile.mkdtemp(prefix="rs-svc-pb2-")
    try:
        subprocess.run([PROTOC, "--python_out=" + gen, "-I", PROTO_DIR,
                        os.path.join(PROTO_DIR, "grpc_testing.proto")], check=True)
        sys.path.insert(0, gen)
        try:
            return __import__("grpc_testing_pb2")
        finally:
            sys.path.remove(gen)
    finally:
        shutil.rmtree(gen, ignore_errors=True)


@run.case("drain: a call within --drain-ms finishes OK, one outlasting it gets UNAVAILABLE",
          group="drain")
def _(srv):
    import threading
    import time
    import grpc
    from harness import Server
    pb = testing_pb2()
    other = Server(srv.binary, ["--workers", "1", "--drain-ms", "300"])
    try:
        other.start()
        with channel(other) as ch:
            call = ch.unary_stream(
                "/grpc.testing.TestService/StreamingOutputCall",
                request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
                response_deserializer=pb.StreamingOutputCallResponse.FromString)

            def req(n, interval_us):
                return pb.StreamingOutputCallRequest(response_parameters=[
                    pb.ResponseParameters(size=10, interval_us=interval_us) for _ in range(n)])
            results = {}

            def consume(key, it):
                got = 0
                try:
                    for _ in it:
                        got += 1
                    results[key] = ("OK", got, "")
                except grpc.RpcError as e:
                    results[key] = (e.code().name, got, e.details())
            short = call(req(2, 100000), timeout=WAIT_S)      # 0.2 s: inside the drain
            long_ = call(req(50, 200000), timeout=WAIT_S)     # 10 s: outlasts it
            threads = [threading.Thread(target=consume, args=(k, it), daemon=True)
                       for k, it in (("short", short), ("long", long_))]
            for t in threads:
                t.start()
            time.sleep(0.15)  # both calls are running
            t0 = time.monotonic()
            other.proc.send_signal(signal.SIGTERM)
            for t in threads:
                t.join(WAIT_S)
            code = other.proc.wait(WAIT_S)
            took = time.monotonic() - t0
        check_eq(results.get("short"), ("OK", 2, ""), "the call that fits in the drain")
        check_eq(results.get("long", ("?",))[0], "UNAVAILABLE", "the call outlasting the drain")
        check_eq(results["long"][2], "server shutting down", "its message")
        check(results["long"][1] >= 1, "it got its first responses")
        check_eq(code, 0, "exit status")
        check(took < 3.0, "stopping took %.1f s with --drain-ms 300" % took)
        check("drain time over: ending 1 calls with UNAVAILABLE" in other.stderr_text(),
              "no log line for the ended call")
    finally:
        other.stop()


@run.case("drain: a Get in flight at SIGTERM finishes OK with every byte; exit status 0",
          group="drain")
def _(srv):
    import time
    from harness import Server
    other = Server(srv.binary, ["--workers", "1"])  # the default drain, 30 s
    try:
        other.start()
        data = os.urandom(32 << 20)  # more than the client's flow-control windows hold
        with channel(other) as ch:
            b = Bulk(ch)
            b.put("drain-get", data)
            it = b.Get(b.pb.GetRequest(name="drain-get"), timeout=60)
            got = [next(it).data]  # the Get is under way: the rest waits for our reads
            other.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + WAIT_S
            while "draining for up to" not in other.stderr_text() and \
                    time.monotonic() < deadline:
                time.sleep(0.02)
            check("draining for up to" in other.stderr_text(), "the drain did not start")
            got.extend(c.data for c in it)
            check(b"".join(got) == data, "the Get's bytes (%d of %d)" %
                  (sum(len(g) for g in got), len(data)))
        check_eq(other.proc.wait(WAIT_S), 0, "exit status")
    finally:
        other.stop()


@run.case("sd_notify: READY=1, live STATUS=, WATCHDOG=1 with WATCHDOG_USEC, STOPPING=1",
          group="systemd")
def _(srv):
    import socket
    import time
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = None
    try:
        path = os.path.join(tmp, "notify")
        sock.bind(path)
        sock.settimeout(WAIT_S)
        port = free_port()
        env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
        proc = subprocess.Popen([srv.binary, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                                 os.path.join(tmp, "data"), "--workers", "2"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        msgs = [sock.recv(4096).decode()]
        check("READY=1" in msgs[0], "first notification %r" % msgs[0])
        # READY=1 comes once every worker listens: the port accepts now, with no retry
        probe = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        probe.close()
        deadline = time.monotonic() + 4.0  # a 1 s watchdog pings every 0.5 s
        while time.monotonic() < deadline:
            msgs.append(sock.recv(4096).decode())
        pings = sum(m.count("WATCHDOG=1") for m in msgs)
        check(pings >= 4, "%d WATCHDOG=1 in 4 s: %r" % (pings, msgs))
        check(any("STATUS=serving on" in m and "connections" in m for m in msgs),
              "no live STATUS=: %r" % msgs)
        proc.send_signal(signal.SIGTERM)
        while True:
            m = sock.recv(4096).decode()
            if "STOPPING=1" in m:
                break
        check_eq(proc.wait(WAIT_S), 0, "exit status")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@run.case("socket activation: calls go through the socket passed in LISTEN_FDS", group="systemd")
def _(srv):
    import socket
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    proc = None
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        port = lsock.getsockname()[1]
        # The shell moves the socket to fd 3 and execs ringstreamd, so LISTEN_PID (the
        # shell's pid) is ringstreamd's. --listen names another port: a passed socket wins.
        fd = lsock.fileno()
        moves = " 3<&%d %d<&-" % (fd, fd) if fd != 3 else ""
        script = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"' + moves
        proc = subprocess.Popen(["/bin/sh", "-c", script, srv.binary, "--listen",
                                 "127.0.0.1:%d" % free_port(), "--data-dir",
                                 os.path.join(tmp, "data"), "--workers", "2"],
                                pass_fds=(fd,), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

        class Addr:
            address = "127.0.0.1:%d" % port
        for i in range(6):  # several connections: each worker accepts on the shared socket
            with channel(Addr) as ch:
                b = Bulk(ch)
                b.put("sa-%d" % i, b"through the passed socket", overwrite=True)
                check_eq(b.get("sa-%d" % i), b"through the passed socket", "answer")
        lsock.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_S)
        check_eq(proc.returncode, 0, "exit status")
        check("socket passed by systemd" in err.decode(), "log: %r" % err.decode()[-500:])
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        lsock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@run.case("metrics off: GET /metrics is 404, POST /metrics 405 when on", group="metrics")
def _(srv):
    from harness import Server

    def status(address, method="GET"):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              "--http2-prior-knowledge", "-X", method,
                              "http://%s/metrics" % address], capture_output=True,
                             timeout=WAIT_S)
        return out.stdout.decode()
    check_eq(status(srv.address, "POST"), "405", "POST /metrics")
    other = Server(srv.binary, ["--workers", "1", "--metrics", "off"])
    try:
        other.start()
        check_eq(status(other.address), "404", "GET /metrics with --metrics off")
    finally:
        problems = other.stop()
    check(not problems, "second server: %s" % problems)


@run.case("drain: a Get whose client stopped reading gets UNAVAILABLE trailers", group="drain")
def _(srv):
    import socket
    import struct
    import time
    import h2.config
    import h2.connection
    import h2.events
    from harness import Server, pb2
    other = Server(srv.binary, ["--workers", "1", "--drain-ms", "300"])
    s = None
    try:
        other.start()
        with channel(other) as ch:
            Bulk(ch).put("stall", b"a" * (1 << 20))
        req = pb2().GetRequest(name="stall").SerializeToString()
        s = socket.create_connection(("127.0.0.1", other.port), timeout=WAIT_S)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                           (":path", "/ringstream.v1.Bulk/Get"), (":authority", "x"),
                           ("content-type", "application/grpc"), ("te", "trailers")])
        c.send_data(1, b"\0" + struct.pack(">I", len(req)) + req, end_stream=True)
        s.sendall(c.data_to_send())
        # Never acknowledge DATA: the stream stalls at the 65535-byte initial window.
        got, rest = 0, b""
        deadline = time.monotonic() + WAIT_S
        while got < 65535 and time.monotonic() < deadline:
            for e in c.receive_data(s.recv(65536)):
                if isinstance(e, h2.events.DataReceived):
                    got += len(e.data)
        check_eq(got, 65535, "DATA before the stall")
        other.proc.send_signal(signal.SIGTERM)
        # h2 stops parsing after GOAWAY, but the stream it spares goes on: read raw frames.
        trailers = None
        while time.monotonic() < deadline and trailers is None:
            data = s.recv(65536)
            if not data:
                break
            rest += data
            while len(rest) >= 9:
                n = int.from_bytes(rest[:3], "big")
                if len(rest) < 9 + n:
                    break
                ftype, flags = rest[3], rest[4]
                sid = int.from_bytes(rest[5:9], "big") & 0x7fffffff
                payload, rest = rest[9:9 + n], rest[9 + n:]
                if ftype == 1 and sid == 1:  # HEADERS: END_HEADERS, no padding expected
                    trailers = dict((k.decode() if isinstance(k, bytes) else k,
                                     v.decode() if isinstance(v, bytes) else v)
                                    for k, v in c.decoder.decode(payload))
                    check(flags & 0x1, "trailers without END_STREAM")
        check(trailers is not None, "no trailers before the connection closed")
        check_eq(trailers.get("grpc-status"), "14", "grpc-status")
        check_eq(trailers.get("grpc-message"), "server shutting down", "grpc-message")
        check_eq(other.proc.wait(WAIT_S), 0, "exit status")
    finally:
        if s is not None:
            s.close()
        other.stop()


@run.case("stop: a second SIGTERM during the drain exits at once", group="drain")
def _(srv):
    import threading
    import time
    from harness import Server
    pb = testing_pb2()
    other = Server(srv.binary, ["--workers", "1", "--drain-ms", "20000"])
    try:
        other.start()
        with channel(other) as ch:
            call = ch.unary_stream(
                "/grpc.testing.TestService/StreamingOutputCall",
                request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
                response_deserializer=pb.StreamingOutputCallResponse.FromString)
            it = call(pb.StreamingOutputCallRequest(response_parameters=[
                pb.ResponseParameters(size=10, interval_us=200000) for _ in range(100)]),
                timeout=WAIT_S)
            t = threading.Thread(target=lambda: [None for _ in it], daemon=True)
            t.start()
            time.sleep(0.3)
            other.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            check(other.proc.poll() is None, "exited during a 20 s drain with a call running")
            t0 = time.monotonic()
            other.proc.send_signal(signal.SIGTERM)
            code = other.proc.wait(WAIT_S)
            took = time.monotonic() - t0
        check_eq(code, 1, "exit status after the second signal")
        check(took < 2.0, "took %.1f s after the second signal" % took)
        check("again: exiting without waiting for the drain" in other.stderr_text(),
              "no log line")
    finally:
        other.stop()


@run.case("stop: drain-ms defaults to 30000; an idle server still stops at once", group="drain")
def _(srv):
    import time
    from harness import Server
    code, out, err = run_tool(srv, ["--data-dir", srv.data_dir, "--check-config"])
    check(code == 0, "exit %r: %s" % (code, err))
    check("drain-ms = 30000\n" in out, "default drain-ms in %r" % out)
    other = Server(srv.binary, ["--workers", "2"])  # the default drain
    try:
        other.start()
        still_serving(other)  # a channel was opened and closed: nothing in flight
        t0 = time.monotonic()
        other.proc.send_signal(signal.SIGTERM)
        code = other.proc.wait(WAIT_S)
        took = time.monotonic() - t0
        check_eq(code, 0, "exit status")
        # generous: the point is "not the 30 s drain"; it takes milliseconds
        check(took < 2.0, "an idle server took %.2f s to stop" % took)
        print("idle stop took %.3f s" % took)
    finally:
        other.stop()


@run.case("logs: sd-daemon priority prefixes when JOURNAL_STREAM names stderr, plain otherwise",
          group="logs")
def _(srv):
    import time
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    try:
        texts = {}
        for mode in ("journal", "other-stream", "plain"):
            path = os.path.join(tmp, mode + ".log")
            with open(path, "wb") as err:
                st = os.fstat(err.fileno())
                env = dict(os.environ)
                env.pop("JOURNAL_STREAM", None)
                if mode == "journal":
                    env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
                elif mode == "other-stream":  # inherited from a parent whose stderr it was
                    env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + 1)
                port = free_port()
                proc = subprocess.Popen(
                    [srv.binary, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                     os.path.join(tmp, "data-" + mode), "--workers", "1", "--log-level",
                     "debug"], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
                try:
                    deadline = time.monotonic() + WAIT_S
                    while b"listening on" not in open(path, "rb").read():
                        check(proc.poll() is None and time.monotonic() < deadline,
                              "%s: the server did not start" % mode)
                        time.sleep(0.05)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(WAIT_S)
            with open(path) as f:
                texts[mode] = f.read().splitlines()
        want = {"error": "<3>", "warn": "<4>", "info": "<6>", "debug": "<7>"}
        seen = set()
        for line in texts["journal"]:
            check(line[:3] in want.values(), "journal line without a priority: %r" % line)
            level = line[3:].split(": ", 2)[1]
            check_eq(line[:3], want[level], "prefix of %r" % line)
            seen.add(level)
        check({"info", "debug"} <= seen, "levels seen: %r" % seen)
        for mode in ("other-stream", "plain"):
            check(texts[mode], "%s: no lines" % mode)
            for line in texts[mode]:
                check(line.startswith("ringstreamd: "), "%s line %r" % (mode, line))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scrape_http1(address):
    """GET /metrics over HTTP/1.1 with urllib (what Prometheus does); returns
    {(name, labels...): value} summed over workers, parsed by prometheus_client's parser."""
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen("http://%s/metrics" % address, timeout=WAIT_S) as r:
        check_eq(r.status, 200, "HTTP status")
        check("text/plain; version=0.0.4" in r.headers["Content-Type"], "content-type")
        body = r.read().decode()
    sums = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))
            key = (s.name,) + labels
            sums[key] = sums.get(key, 0) + s.value
    return sums


@run.case("metrics-listen: HTTP/1.1 scrape; started, handled, messages and the histogram move "
          "by exactly what was done", group="metrics")
def _(srv):
    import time
    import urllib.error
    import urllib.request
    import grpc
    from harness import Server, expect_status
    from harness import CaseFailure
    pb = testing_pb2()
    for attempt in range(3):  # free_port() may hand the server's own port out twice
        maddr = "127.0.0.1:%d" % free_port()
        other = Server(srv.binary, ["--workers", "2", "--metrics-listen", maddr])
        try:
            other.start()
            break
        except CaseFailure:
            other.stop()
            if attempt == 2:
                raise
    try:
        # metrics-listen is bound before the workers start and served once "listening on"
        # is logged (and READY=1 sent); wait for that as a scraper started by systemd would
        deadline = time.monotonic() + WAIT_S
        while "listening on" not in other.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        before = scrape_http1(maddr)
        svc = "grpc.testing.TestService"
        with channel(other) as ch:
            empty = ch.unary_unary("/grpc.testing.TestService/EmptyCall",
                                   request_serializer=pb.Empty.SerializeToString,
                                   response_deserializer=pb.Empty.FromString)
            for _ in range(3):
                empty(pb.Empty(), timeout=WAIT_S)
            stream = ch.unary_stream(
                "/grpc.testing.TestService/StreamingOutputCall",
                request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
                response_deserializer=pb.StreamingOutputCallResponse.FromString)
            for _ in range(2):
                got = list(stream(pb.StreamingOutputCallRequest(response_parameters=[
                    pb.ResponseParameters(size=10) for _ in range(4)]), timeout=WAIT_S))
                check_eq(len(got), 4, "responses")
            b = Bulk(ch)
            expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "missing-%d" % os.getpid())
        after = scrape_http1(maddr)

        def delta(name, method, typ, *extra):
            key = (name,) + tuple(sorted((("grpc_method", method), ("grpc_service", s_),
                                          ("grpc_type", typ)) + extra))
            return after.get(key, 0) - before.get(key, 0)
        s_ = svc
        for name, want_e, want_s in (("grpc_server_started_total", 3, 2),
                                     ("grpc_server_msg_received_total", 3, 2),
                                     ("grpc_server_msg_sent_total", 3, 8),
                                     ("grpc_server_handling_seconds_count", 3, 2)):
            check_eq(delta(name, "EmptyCall", "unary"), want_e, name + " EmptyCall")
            check_eq(delta(name, "StreamingOutputCall", "server_stream"), want_s,
                     name + " StreamingOutputCall")
        check_eq(delta("grpc_server_handled_total", "EmptyCall", "unary", ("grpc_code", "OK")),
                 3, "handled EmptyCall OK")
        check_eq(delta("grpc_server_handled_total", "StreamingOutputCall", "server_stream",
                       ("grpc_code", "OK")), 2, "handled StreamingOutputCall OK")
        check_eq(delta("grpc_server_handling_seconds_bucket", "EmptyCall", "unary",
                       ("le", "+Inf")), 3, "the +Inf bucket")
        s_ = "ringstream.v1.Bulk"
        check_eq(delta("grpc_server_handled_total", "Stat", "unary",
                       ("grpc_code", "NOT_FOUND")), 1, "handled Stat NOT_FOUND")
        check_eq(delta("grpc_server_msg_sent_total", "Stat", "unary"), 0, "Stat sent nothing")
        # the histogram's count equals handled, method by method, over the whole exposition
        for key, v in after.items():
            if key[0] != "grpc_server_handling_seconds_count":
                continue
            labels = dict(key[1:])
            handled_sum = sum(val for k, val in after.items()
                              if k[0] == "grpc_server_handled_total" and
                              all(dict(k[1:]).get(n) == labels[n] for n in labels))
            check_eq(v, handled_sum, "histogram count vs handled for %r" % (labels,))
        # ringstream's own series are there too, and the HTTP/2 endpoint still answers
        for key in (("ringstream_connections_accepted_total",),
                    ("ringstream_connections_closed_total", ("reason", "peer")),
                    ("ringstream_connections_closed_total", ("reason", "glitch")),
                    ("ringstream_glitch_goaways_total",), ("ringstream_streams_stalled",),
                    ("ringstream_queued_bytes",), ("ringstream_budget_used_bytes",)):
            check(key in after, "%s missing" % (key,))
        for path, code in (("/nope", 404),):
            try:
                urllib.request.urlopen("http://%s%s" % (maddr, path), timeout=WAIT_S)
                check(False, "%s answered 200" % path)
            except urllib.error.HTTPError as e:
                check_eq(e.code, code, path)
        try:
            urllib.request.urlopen(urllib.request.Request("http://%s/metrics" % maddr,
                                                          data=b"x", method="POST"),
                                   timeout=WAIT_S)
            check(False, "POST answered 200")
        except urllib.error.HTTPError as e:
            check_eq(e.code, 405, "POST /metrics")
    finally:
        problems = other.stop()
    check(not problems, "server: %s" % problems)
    # a taken port is one clear line and exit status 1
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    try:
        code, out, err = run_tool(srv, ["--listen", "127.0.0.1:%d" % free_port(), "--data-dir",
                                        os.path.join(tmp, "data"), "--workers", "1",
                                        "--metrics-listen", srv.address])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_eq(code, 1, "exit status with a taken metrics port")
    check("metrics-listen %s: Address already in use" % srv.address in err, "message %r" % err)


@run.case("logs: --access-log writes one line per call; RESOURCE_EXHAUSTED is a warn with "
          "its cause", group="logs")
def _(srv):
    import re
    import grpc
    from harness import Server, expect_status
    other = Server(srv.binary, ["--workers", "1", "--access-log", "on", "--max-msg", "1k",
                                "--log-level", "warn"])
    try:
        other.start()
        with channel(other) as ch:
            b = Bulk(ch)
            b.put("al/obj-1", b"y" * 100, overwrite=True)
            expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          ch.unary_unary("/grpc.testing.TestService/EmptyCall"), b"z" * 2000)
        log = other.stderr_text()
    finally:
        problems = other.stop()
    check(not problems, "server: %s" % problems)
    puts = [l for l in log.splitlines() if l.startswith("ringstreamd: access: ") and
            " /ringstream.v1.Bulk/Put " in l]
    check_eq(len(puts), 1, "access lines for the Put in %r" % log)
    m = re.match(r"ringstreamd: access: 127\.0\.0\.1:(\d+) /ringstream\.v1\.Bulk/Put "
                 r"name=al/obj-1 OK in=(\d+) out=(\d+) (\d+\.\d{3})ms$", puts[0])
    check(m is not None, "access line %r" % puts[0])
    check(int(m.group(2)) > 100 and int(m.group(3)) > 0, "bytes in/out %r" % puts[0])
    warn = [l for l in log.splitlines() if "call /grpc.testing.TestService/EmptyCall" in l]
    check_eq(len(warn), 1, "log lines for the oversized call in %r" % log)
    check(warn[0].startswith("ringstreamd: warn: ") and
          "RESOURCE_EXHAUSTED \"received message larger than max" in warn[0],
          "warn line with the cause: %r" % warn[0])
    check(any(l.startswith("ringstreamd: access: ") and "EmptyCall name=- RESOURCE_EXHAUSTED"
              in l for l in log.splitlines()), "access line of the oversized call")
    # off by default: not one access line from the shared server
    check("ringstreamd: access: " not in srv.stderr_text(), "access lines without --access-log")


@run.case("access log and metrics of every Bulk method; a full disk is counted by cause "
          "(fault builds)", group="logs")
def _(srv):
    import re
    import grpc
    from harness import Server, expect_status
    other = Server(srv.binary, ["--workers", "2", "--access-log", "on", "--log-level", "warn"],
                   env={"RS_FAULTS": "put.write=enospcx1"})
    try:
        other.start()
        faults = "fault injection" in other.stderr_text()
        if not faults:
            print("      not a fault build: the disk-full Put is left out")
        before = scrape(other)
        with channel(other) as ch:
            b = Bulk(ch)
            if faults:  # the first write of any Put fails with ENOSPC
                expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, b.put, "al/full",
                              b"f" * 100000)
            b.put("al/obj-1", b"y" * 3000, overwrite=True)
            check_eq(len(b.get("al/obj-1")), 3000, "Get")
            b.stat("al/obj-1")
            expect_status(grpc.StatusCode.NOT_FOUND, b.stat, "al/missing")
            check_eq(len(b.list("al/")), 1, "List")
            got = list(b.Echo(iter([b.pb.Chunk(data=b"e" * 10)]), timeout=WAIT_S))
            check_eq(sum(len(c.data) for c in got), 10, "Echo")
            b.delete("al/obj-1")
            check_eq(b.list("bad prefix\n"), [], "List of a prefix no name has")
        after = scrape(other)
        log = other.stderr_text()
    finally:
        problems = other.stop()
    check(not problems, "server: %s" % problems)
    line = re.compile(r"ringstreamd: access: 127\.0\.0\.1:\d+ /ringstream\.v1\.Bulk/(\w+) "
                      r"name=(\S+) ([A-Z_]+) in=(\d+) out=(\d+) (\d+\.\d{3})ms( \".*\")?$")
    seen = []
    for l in log.splitlines():
        if l.startswith("ringstreamd: access: ") and "/ringstream.v1.Bulk/" in l:
            m = line.match(l)
            check(m is not None, "access line %r" % l)
            seen.append(m.groups()[:5])
    want = [("Put", "al/obj-1", "OK"), ("Get", "al/obj-1", "OK"), ("Stat", "al/obj-1", "OK"),
            ("Stat", "al/missing", "NOT_FOUND"), ("List", "al/", "OK"), ("Echo", "-", "OK"),
            ("Delete", "al/obj-1", "OK")]
    if faults:
        want.insert(0, ("Put", "al/full", "RESOURCE_EXHAUSTED"))
    # a prefix that could begin no name is not logged (the line stays one line)
    want.append(("List", "-", "OK"))
    # A call's line is written when the server releases it, after its last I/O completion,
    # which may come after the client has its status and has started the next call: List's
    # index read-ahead can finish after a quick Echo. So the lines are compared as a set of
    # calls, not in order (each call once).
    check_eq(sorted(g[:3] for g in seen), sorted(want), "access lines (method, name, status)")
    for method, name, status, n_in, n_out in seen:
        check(int(n_in) > 0, "%s %s: in=%s" % (method, name, n_in))
        if (method, status) in (("Get", "OK"), ("Put", "OK"), ("Stat", "OK"), ("Echo", "OK")):
            check(int(n_out) > 0, "%s %s: out=%s" % (method, name, n_out))
    puts = [g for g in seen if g[0] == "Put" and g[2] == "OK"]
    check(int(puts[0][3]) > 3000 and int(seen[1 if faults else 0][3]) > 0, "Put's bytes in")
    check_eq(int([g for g in seen if g[0] == "Get"][0][4]) > 3000, True, "Get's bytes out")

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)
    for op, result, n in (("put", "OK", 1), ("put", "RESOURCE_EXHAUSTED", 1 if faults else 0),
                          ("get", "OK", 1), ("stat", "OK", 1), ("stat", "NOT_FOUND", 1),
                          ("list", "OK", 2),
                          ("echo", "OK", 1), ("delete", "OK", 1)):
        check_eq(delta(("ringstream_bulk_operations_total", ("op", op), ("result", result))), n,
                 "ringstream_bulk_operations_total{op=%s,result=%s}" % (op, result))
    check_eq(delta(("ringstream_bulk_stored_bytes_total",)), 3000, "bytes stored (the full "
             "disk's Put stored nothing)")
    check_eq(delta(("ringstream_bulk_read_bytes_total",)), 3000, "bytes read")
    check_eq(delta(("ringstream_bulk_storage_errors_total", ("cause", "enospc"))),
             1 if faults else 0, "storage errors, cause enospc")
    check_eq(sum(delta(k) for k in after if k[0] == "ringstream_bulk_storage_errors_total"),
             1 if faults else 0, "storage errors, every cause")
    if faults:
        warn = [l for l in log.splitlines() if "call /ringstream.v1.Bulk/Put" in l]
        check(len(warn) == 1 and warn[0].startswith("ringstreamd: warn: ") and
              "No space left on device" in warn[0], "warn line with the cause: %r" % warn)


@run.case("metrics-listen keeps answering during the drain and stops at exit", group="drain")
def _(srv):
    import threading
    import time
    import grpc
    from harness import Server, CaseFailure
    import socket
    pb = testing_pb2()
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(tmp, "notify"))
    sock.settimeout(WAIT_S)
    for attempt in range(3):  # free_port() may hand the server's own port out twice
        maddr = "127.0.0.1:%d" % free_port()
        other = Server(srv.binary, ["--workers", "1", "--metrics-listen", maddr,
                                    "--drain-ms", "60000"],
                       env={"NOTIFY_SOCKET": os.path.join(tmp, "notify")})
        try:
            other.start()
            break
        except CaseFailure:
            other.stop()
            if attempt == 2:
                raise
    try:
        with channel(other) as ch:
            call = ch.unary_stream(
                "/grpc.testing.TestService/StreamingOutputCall",
                request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
                response_deserializer=pb.StreamingOutputCallResponse.FromString)
            # one response now, the next in 60 s: the call holds the drain open until we
            # cancel it
            it = call(pb.StreamingOutputCallRequest(response_parameters=[
                pb.ResponseParameters(size=10, interval_us=0),
                pb.ResponseParameters(size=10, interval_us=60000000)]), timeout=120)
            next(it)
            other.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + WAIT_S
            while "draining for up to" not in other.stderr_text() and \
                    time.monotonic() < deadline:
                time.sleep(0.02)
            check("draining for up to" in other.stderr_text(), "the drain did not start")
            m = scrape_http1(maddr)  # while the call holds the drain open
            check_eq(m.get(("ringstream_streams_open",)), 1, "the call in flight, scraped "
                     "during the drain")
            check(other.proc.poll() is None, "the server exited with a call in flight")
            while True:  # STATUS= says what the drain waits for (socket timeout: WAIT_S)
                msg = sock.recv(4096).decode()
                if msg.startswith("STATUS=draining"):
                    break
            check_eq(msg, "STATUS=draining: 1 connections, 1 streams left", "drain status")
            it.cancel()
            code = other.proc.wait(WAIT_S)
        check_eq(code, 0, "exit status")
        import urllib.request
        try:
            urllib.request.urlopen("http://%s/metrics" % maddr, timeout=WAIT_S)
            check(False, "metrics-listen still answers after exit")
        except OSError:
            pass
    finally:
        other.stop()  # we stopped it: stop() only cleans up (and kills it on a failure)
        sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@run.case("socket activation under systemd-socket-activate: calls go through its socket",
          group="systemd")
def _(srv):
    import time
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        print("skipped: systemd-socket-activate is not installed (package systemd)")
        return
    tmp = tempfile.mkdtemp(prefix="rs-svc-")
    proc = None
    try:
        for attempt in range(3):  # the port is picked free, then bound by the tool
            port = free_port()
            errpath = os.path.join(tmp, "stderr-%d.log" % attempt)
            with open(errpath, "wb") as err:
                proc = subprocess.Popen(
                    [tool, "-l", "127.0.0.1:%d" % port, srv.binary, "--listen",
                     "127.0.0.1:%d" % free_port(), "--data-dir", os.path.join(tmp, "data"),
                     "--workers", "2"], stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            # The tool says "Listening on ..." once bound and execs ringstreamd at the first
            # connection (the calls below), which then finds it in its backlog.
            deadline = time.monotonic() + WAIT_S
            while proc.poll() is None and time.monotonic() < deadline:
                with open(errpath, "rb") as f:
                    if b"Listening on " in f.read():
                        break
                time.sleep(0.05)
            if proc.poll() is None:
                break
            if attempt == 2:
                check(False, "did not start: %s" % open(errpath).read())

        class Addr:
            address = "127.0.0.1:%d" % port
        for i in range(4):  # several connections: both workers accept on the one socket
            with channel(Addr) as ch:
                b = Bulk(ch)
                b.put("ssa-%d" % i, b"via systemd-socket-activate", overwrite=True)
                check_eq(b.get("ssa-%d" % i), b"via systemd-socket-activate", "answer")
        proc.send_signal(signal.SIGTERM)  # the tool exec'd ringstreamd: same pid
        check_eq(proc.wait(WAIT_S), 0, "exit status")
        log = open(errpath).read()
        check("socket passed by systemd" in log, "log: %r" % log[-500:])
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


run.main()
