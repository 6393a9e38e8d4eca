#!/usr/bin/env python3
"""grpc.health.v1.Health on ringstreamd: Check for the whole server (""), for
ringstream.v1.Bulk and for an unknown service; Watch, which must report SERVING and then,
once the server gets SIGTERM, NOT_SERVING (on a server of its own, since it ends it)."""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from harness import (  # noqa: E402
    PROTO_DIR, STOP_GRACE_S, CaseFailure, Server, TestRun, channel, check,
    check_eq, expect_status,
)
from interop_client import load_pb2  # noqa: E402

HEALTH = "/grpc.health.v1.Health/"
CALL_TIMEOUT_S = 30.0

run = TestRun("health (grpc.health.v1.Health)")
try:
    hpb = load_pb2(PROTO_DIR, "health")
except (CaseFailure, subprocess.CalledProcessError) as e:
    print("FAIL  generating health_pb2: %s" % e)
    print("0 passed, 1 failed")
    sys.stdout.flush()
    os._exit(1)

SERVING = hpb.HealthCheckResponse.SERVING
NOT_SERVING = hpb.HealthCheckResponse.NOT_SERVING


def status_name(v):
    return hpb.HealthCheckResponse.ServingStatus.Name(v) if v in (0, 1, 2, 3) else str(v)


def stubs(ch):
    check_rpc = ch.unary_unary(HEALTH + "Check",
                               request_serializer=hpb.HealthCheckRequest.SerializeToString,
                               response_deserializer=hpb.HealthCheckResponse.FromString)
    watch_rpc = ch.unary_stream(HEALTH + "Watch",
                                request_serializer=hpb.HealthCheckRequest.SerializeToString,
                                response_deserializer=hpb.HealthCheckResponse.FromString)
    return check_rpc, watch_rpc


def check_serving(srv, service):
    ch = channel(srv)
    try:
        check_rpc, _ = stubs(ch)
        resp = check_rpc(hpb.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S)
        check_eq(status_name(resp.status), "SERVING", "Check(%r) status" % service)
    finally:
        ch.close()


@run.case('Check("") is SERVING')
def _(srv):
    check_serving(srv, "")


@run.case('Check("ringstream.v1.Bulk") is SERVING')
def _(srv):
    check_serving(srv, "ringstream.v1.Bulk")


@run.case("Check of an unknown service fails with NOT_FOUND")
def _(srv):
    ch = channel(srv)
    try:
        check_rpc, _ = stubs(ch)
        for name in ("no.such.Service", "ringstream.v1.Bulk2", "ringstream.v1"):
            expect_status(grpc.StatusCode.NOT_FOUND, check_rpc,
                          hpb.HealthCheckRequest(service=name), timeout=CALL_TIMEOUT_S)
        # The server still answers afterwards.
        resp = check_rpc(hpb.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        check_eq(status_name(resp.status), "SERVING", 'Check("") afterwards')
    finally:
        ch.close()


@run.case("a string field sent with a scalar wire type is INVALID_ARGUMENT (Health, interop)")
def _(srv):
    # A string field sent as a varint (Health: service, field 1; UnaryCall: response_status
    # .message, field 7.2): nanopb hands it to the view callback as a copy on its own stack;
    # the server must refuse it, not read dead memory (found by tests/fuzz/fuzz_pbview).
    ch = channel(srv)
    try:
        raw = b"\x08\x61"
        for path in ("/grpc.health.v1.Health/Check", "/grpc.testing.TestService/UnaryCall"):
            rpc = ch.unary_unary(path)
            try:
                rpc(raw if "Health" in path else b"\x3a\x02\x10\x61", timeout=CALL_TIMEOUT_S)
                raise CaseFailure("%s answered OK to a malformed request" % path)
            except grpc.RpcError as e:
                check_eq(e.code(), grpc.StatusCode.INVALID_ARGUMENT, path)
        check_rpc, _ = stubs(ch)
        resp = check_rpc(hpb.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        check_eq(status_name(resp.status), "SERVING", 'Check("") afterwards')
    finally:
        ch.close()


@run.case('Watch("") sends SERVING, then NOT_SERVING on SIGTERM; the server exits 0')
def _(srv):
    own = Server(srv.binary)
    own.start()
    ch = None
    try:
        ch = channel(own)
        _, watch_rpc = stubs(ch)
        it = watch_rpc(hpb.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        seen = []
        box = {}

        def reader():
            try:
                for resp in it:
                    seen.append(resp.status)
                    if resp.status == NOT_SERVING:
                        return
            except grpc.RpcError as e:
                box["error"] = e

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while not seen and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        check(seen, "no first Watch message within 10 s (ended: %r)" % box.get("error"))
        check_eq(status_name(seen[0]), "SERVING", "first Watch status")
        time.sleep(0.2)
        check_eq([status_name(s) for s in seen], ["SERVING"], "Watch messages before SIGTERM")

        # harness.Server.stop() sends SIGTERM and waits for the exit (SIGKILL after
        # STOP_GRACE_S); it runs beside the reader, which must see NOT_SERVING meanwhile.
        stopper = threading.Thread(target=lambda: box.__setitem__("problems", own.stop()),
                                   daemon=True)
        stopper.start()
        t0 = time.monotonic()
        t.join(STOP_GRACE_S + 1)
        latency = time.monotonic() - t0
        seen_names = [status_name(s) for s in seen]
        if t.is_alive():
            raise CaseFailure("no NOT_SERVING within %.0f s of SIGTERM; seen %s"
                              % (STOP_GRACE_S + 1, seen_names))
        if "error" in box:
            e = box["error"]
            raise CaseFailure("Watch ended with %s (%r) after %s, before NOT_SERVING"
                              % (e.code().name, e.details(), seen_names))
        if seen[-1] != NOT_SERVING:
            raise CaseFailure("Watch ended (OK) after %s, without NOT_SERVING" % seen_names)
        check_eq(set(seen_names[:-1]), {"SERVING"}, "Watch statuses before NOT_SERVING")
        it.cancel()
        ch.close()
        ch = None
        stopper.join(STOP_GRACE_S + 5)
        check(not stopper.is_alive(), "harness stop() did not return")
        problems = box.get("problems", [])
        if problems:
            raise CaseFailure("server stop after SIGTERM (NOT_SERVING after %.2f s): %s"
                              % (latency, "; ".join(problems)))
    finally:
        if ch is not None:
            ch.close()
        own.stop()  # idempotent: kills the server if the case failed before stopping it


run.main()
