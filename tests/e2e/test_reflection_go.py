#!/usr/bin/env python3
"""Server reflection read by grpc-go's own generated client (v1alpha), the library grpcurl is
built on: tests/e2e/reflection_go/main.go, built here offline in GOPATH mode from Debian's
golang-go and golang-google-grpc-dev (/usr/share/gocode), into a temp dir that is removed
again. Debian 12 packages neither grpcurl nor a Go reflection client library (jhump/
protoreflect), so this is the closest stand-in; test_reflection.py covers the rest."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import TestRun, check, check_eq  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GO = shutil.which("go") or "/usr/bin/go"
BUILD_TIMEOUT_S = 300
RUN_TIMEOUT_S = 60

run = TestRun("server reflection through grpc-go's client")


def build(tmp):
    src = os.path.join(tmp, "src", "reflection_go")
    os.makedirs(src)
    shutil.copy(os.path.join(HERE, "reflection_go", "main.go"), src)
    env = dict(os.environ, GO111MODULE="off", GOPATH=tmp + ":/usr/share/gocode",
               GOCACHE=os.path.join(tmp, "cache"), GOFLAGS="", GOPROXY="off", CGO_ENABLED="0")
    exe = os.path.join(tmp, "reflection_go")
    res = subprocess.run([GO, "build", "-o", exe, "."], cwd=src, env=env, capture_output=True,
                         text=True, timeout=BUILD_TIMEOUT_S)
    check(res.returncode == 0, "go build failed:\n%s%s" % (res.stdout, res.stderr))
    return exe


@run.case("grpc-go's v1alpha client lists, fetches and parses every service's file")
def _(srv):
    tmp = tempfile.mkdtemp(prefix="rs-reflection-go-")
    try:
        exe = build(tmp)
        res = subprocess.run([exe, srv.address], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
        lines = res.stdout.splitlines()
        check_eq(res.returncode, 0, "reflection_go exit (output: %s%s)" % (res.stdout, res.stderr))
        check_eq(lines[-1:], ["ok"], "last line")
        check_eq(sorted(lines[:-1]), [
            "grpc.health.v1.Health health.proto",
            "grpc.reflection.v1.ServerReflection grpc/reflection/v1/reflection.proto",
            "grpc.reflection.v1alpha.ServerReflection grpc/reflection/v1alpha/reflection.proto",
            "grpc.testing.TestService grpc_testing.proto",
            "ringstream.v1.Bulk bulk.proto",
        ], "service files")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


run.main()
