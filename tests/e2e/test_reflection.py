#!/usr/bin/env python3
"""gRPC server reflection (grpc.reflection.v1 and v1alpha ServerReflection) on ringstreamd.

What a tool such as grpcurl does, with python3-grpcio and python3-protobuf only: list the
services, fetch each one's file (and its imports) with file_containing_symbol, build a
DescriptorPool from the returned FileDescriptorProtos alone -- no local .proto of the served
services is read -- and call Bulk/Stat and Health/Check through message classes made from that
pool. Also: file_by_filename for every file, symbols of every kind, extensions (proto3 has
none), errors (NOT_FOUND as an error_response on a stream that goes on; malformed requests end
the call with INVALID_ARGUMENT), requests pipelined on one stream answered in order (past the
send queue's capacity), and --reflection off. Debian 12 packages neither grpcurl nor grpcio's
reflection client (python3-grpc-reflection), so this script is the client;
test_reflection_go.py adds grpc-go's generated one.

The reflection messages' python classes are generated at test time by protoc from the
repository's proto/grpc/reflection/*/reflection.proto (copied under other names into a temp
dir: a python package named grpc/ would shadow grpcio)."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

from harness import (  # noqa: E402
    PROTO_DIR, PROTOC, CaseFailure, Server, TestRun, channel, check, check_eq,
)

CALL_TIMEOUT_S = 30.0
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
VERSIONS = ("v1", "v1alpha")
SERVICES = {
    "ringstream.v1.Bulk", "grpc.testing.TestService", "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
}


def load_reflection_pb2():
    """{"v1": module, "v1alpha": module} generated from the repository's reflection protos."""
    gen = tempfile.mkdtemp(prefix="rs-reflection-pb2-")
    mods = {}
    try:
        for v in VERSIONS:
            src = os.path.join(PROTO_DIR, "grpc", "reflection", v, "reflection.proto")
            shutil.copy(src, os.path.join(gen, "rs_reflection_%s.proto" % v))
            subprocess.run([PROTOC, "--python_out=" + gen, "-I", gen,
                            os.path.join(gen, "rs_reflection_%s.proto" % v)], check=True)
        sys.path.insert(0, gen)
        try:
            for v in VERSIONS:
                mods[v] = __import__("rs_reflection_%s_pb2" % v)
        finally:
            sys.path.remove(gen)
    finally:
        shutil.rmtree(gen, ignore_errors=True)
    return mods


run = TestRun("server reflection (grpc.reflection.v1, v1alpha)")
try:
    PB = load_reflection_pb2()
except (OSError, subprocess.CalledProcessError) as e:
    print("FAIL  generating the reflection messages: %s" % e)
    print("0 passed, 1 failed")
    sys.stdout.flush()
    os._exit(1)


def path(v):
    return "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % v


def session(ch, v, requests):
    """Sends |requests| (messages, or bytes sent as they are) on one stream, half-closes, and
    returns the responses."""
    pb = PB[v]
    rpc = ch.stream_stream(
        path(v),
        request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        response_deserializer=pb.ServerReflectionResponse.FromString)
    return list(rpc(iter(requests), timeout=CALL_TIMEOUT_S))


def ask(ch, v, **kw):
    """One request on its own stream; returns the one response."""
    resps = session(ch, v, [PB[v].ServerReflectionRequest(**kw)])
    check_eq(len(resps), 1, "responses to one request")
    return resps[0]


def fdps(resp):
    """The FileDescriptorProtos of a file_descriptor_response."""
    check_eq(resp.WhichOneof("message_response"), "file_descriptor_response",
             "response kind (error: %r)" % (resp.error_response,))
    out = []
    for raw in resp.file_descriptor_response.file_descriptor_proto:
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(raw)
        out.append(fd)
    check(out, "an empty file_descriptor_response")
    return out


def expect_error(resp, code, what):
    check_eq(resp.WhichOneof("message_response"), "error_response", what + ": response kind")
    check_eq(resp.error_response.error_code, code, what + ": error_code")
    check(resp.error_response.error_message, what + ": empty error_message")


def make_pool(files):
    """A DescriptorPool of |files| (name -> FileDescriptorProto), imports added first."""
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name, depth=0):
        check(depth < 32, "import cycle at %s" % name)
        if name in added:
            return
        check(name in files, "import %s was not sent" % name)
        for dep in files[name].dependency:
            add(dep, depth + 1)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    return pool


def message_class(desc):
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(desc.file.pool).GetPrototype(desc)


def list_services(ch, v):
    resp = ask(ch, v, list_services="")
    check_eq(resp.WhichOneof("message_response"), "list_services_response", "response kind")
    return [s.name for s in resp.list_services_response.service]


def fetch_all(ch, v):
    """What a tool does first: list, then the file of each service, all on one stream.
    Returns (names, {file name: FileDescriptorProto})."""
    names = list_services(ch, v)
    reqs = [PB[v].ServerReflectionRequest(file_containing_symbol=n) for n in names]
    resps = session(ch, v, reqs)
    check_eq(len(resps), len(reqs), "responses")
    files = {}
    for name, resp in zip(names, resps):
        got = fdps(resp)
        check(any(p.package + "." + s.name == name for p in got[:1] for s in p.service),
              "the first file sent for %s does not declare it (%s)" % (name, got[0].name))
        for fd in got:
            files.setdefault(fd.name, fd)
    return names, files


for v in VERSIONS:
    @run.case("%s: list_services names every registered service" % v)
    def _(srv, v=v):
        ch = channel(srv)
        try:
            names = list_services(ch, v)
            check_eq(sorted(names), sorted(SERVICES), "services")
            check_eq(len(names), len(set(names)), "services listed once")
        finally:
            ch.close()

    @run.case("%s: a pool built from the served descriptors alone calls Bulk/Stat and "
              "Health/Check" % v)
    def _(srv, v=v):
        ch = channel(srv)
        try:
            names, files = fetch_all(ch, v)
            pool = make_pool(files)
            for name in names:
                svc = pool.FindServiceByName(name)
                check(len(svc.methods) > 0, "%s has no methods in the pool" % name)
            # Bulk/Stat of a missing object: NOT_FOUND from the store itself.
            stat = pool.FindServiceByName("ringstream.v1.Bulk").FindMethodByName("Stat")
            req_cls = message_class(stat.input_type)
            resp_cls = message_class(stat.output_type)
            rpc = ch.unary_unary("/ringstream.v1.Bulk/Stat",
                                 request_serializer=req_cls.SerializeToString,
                                 response_deserializer=resp_cls.FromString)
            try:
                rpc(req_cls(name="reflection/no-such-object"), timeout=CALL_TIMEOUT_S)
                raise CaseFailure("Stat of a missing object succeeded")
            except grpc.RpcError as e:
                check_eq(e.code(), grpc.StatusCode.NOT_FOUND, "Stat of a missing object")
            # Health/Check(""): SERVING, read through the pool's enum.
            chk = pool.FindServiceByName("grpc.health.v1.Health").FindMethodByName("Check")
            req_cls = message_class(chk.input_type)
            resp_cls = message_class(chk.output_type)
            rpc = ch.unary_unary("/grpc.health.v1.Health/Check",
                                 request_serializer=req_cls.SerializeToString,
                                 response_deserializer=resp_cls.FromString)
            resp = rpc(req_cls(service=""), timeout=CALL_TIMEOUT_S)
            enum = chk.output_type.fields_by_name["status"].enum_type
            check_eq(enum.values_by_number[resp.status].name, "SERVING", "Check status")
        finally:
            ch.close()

    @run.case("%s: file_by_filename answers every file, first, byte-identical" % v)
    def _(srv, v=v):
        ch = channel(srv)
        try:
            _, files = fetch_all(ch, v)
            for want in ("bulk.proto", "health.proto", "grpc_testing.proto",
                         "grpc/reflection/v1/reflection.proto",
                         "grpc/reflection/v1alpha/reflection.proto"):
                check(want in files, "%s not among the files of the services" % want)
            for name, fd in files.items():
                got = fdps(ask(ch, v, file_by_filename=name))
                check_eq(got[0].name, name, "first file answered")
                check_eq(got[0], fd, "descriptor of %s" % name)
            expect_error(ask(ch, v, file_by_filename="no/such.proto"), NOT_FOUND,
                         "unknown file")
            expect_error(ask(ch, v, file_by_filename=""), NOT_FOUND, "empty file name")
        finally:
            ch.close()


@run.case("file_containing_symbol finds services, methods, messages, nested types, fields, "
          "oneofs, enums and enum values")
def _(srv):
    ch = channel(srv)
    try:
        for v in VERSIONS:
            for sym, want in (
                    ("ringstream.v1.Bulk", "bulk.proto"),
                    ("ringstream.v1.Bulk.Stat", "bulk.proto"),
                    ("ringstream.v1.StatRequest", "bulk.proto"),
                    ("ringstream.v1.StatRequest.name", "bulk.proto"),
                    ("ringstream.v1.PutRequest.part", "bulk.proto"),  # a oneof
                    ("grpc.health.v1.HealthCheckResponse.ServingStatus", "health.proto"),
                    ("grpc.health.v1.HealthCheckResponse.SERVING", "health.proto"),
                    ("grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING",
                     "health.proto"),  # grpc-go <= 1.4x's name for it
                    ("grpc.health.v1.HealthCheckResponse.status", "health.proto"),
                    ("grpc.health.v1.Health.Watch", "health.proto"),
                    ("grpc.testing.TestService.FullDuplexCall", "grpc_testing.proto"),
                    ("grpc.testing.UnimplementedService", "grpc_testing.proto"),
                    ("grpc.reflection.v1alpha.ExtensionRequest.extension_number",
                     "grpc/reflection/v1alpha/reflection.proto"),
                    ("grpc.reflection.v1.ServerReflectionResponse.message_response",
                     "grpc/reflection/v1/reflection.proto")):
                got = fdps(ask(ch, v, file_containing_symbol=sym))
                check_eq(got[0].name, want, "%s: file of %s" % (v, sym))
    finally:
        ch.close()


@run.case("unknown symbols are error_response NOT_FOUND and the stream goes on")
def _(srv):
    ch = channel(srv)
    try:
        for v in VERSIONS:
            pb = PB[v]
            reqs = [pb.ServerReflectionRequest(file_containing_symbol=s)
                    for s in ("no.such.Service", "ringstream.v1", "ringstream.v1.Bulk.",
                              ".ringstream.v1.Bulk", "ringstream.v1.Bulk.Nope", "",
                              "é" * 300)]
            reqs.append(pb.ServerReflectionRequest(list_services=""))
            resps = session(ch, v, reqs)
            check_eq(len(resps), len(reqs), "%s: responses" % v)
            for req, resp in zip(reqs[:-1], resps[:-1]):
                expect_error(resp, NOT_FOUND, "%s: %r" % (v, req.file_containing_symbol[:40]))
                check_eq(resp.original_request, req, "%s: original_request" % v)
            check_eq(resps[-1].WhichOneof("message_response"), "list_services_response",
                     "%s: the request after the errors" % v)
    finally:
        ch.close()


@run.case("extensions: proto3 types have none; unknown types and extensions are NOT_FOUND")
def _(srv):
    ch = channel(srv)
    try:
        for v in VERSIONS:
            pb = PB[v]
            resp = ask(ch, v, all_extension_numbers_of_type="ringstream.v1.StatRequest")
            check_eq(resp.WhichOneof("message_response"), "all_extension_numbers_response",
                     "%s: response kind" % v)
            check_eq(resp.all_extension_numbers_response.base_type_name,
                     "ringstream.v1.StatRequest", "%s: base_type_name" % v)
            check_eq(list(resp.all_extension_numbers_response.extension_number), [],
                     "%s: extension numbers" % v)
            expect_error(ask(ch, v, all_extension_numbers_of_type="no.such.Type"), NOT_FOUND,
                         "%s: numbers of an unknown type" % v)
            ext = pb.ExtensionRequest(containing_type="ringstream.v1.StatRequest",
                                      extension_number=100)
            resp = ask(ch, v, file_containing_extension=ext)
            expect_error(resp, NOT_FOUND, "%s: file_containing_extension" % v)
            check('extension 100 of "ringstream.v1.StatRequest"'
                  in resp.error_response.error_message, resp.error_response.error_message)
    finally:
        ch.close()


@run.case("a file is sent once per stream, except when asked for again by name")
def _(srv):
    ch = channel(srv)
    try:
        pb = PB["v1"]
        reqs = [pb.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
                pb.ServerReflectionRequest(file_by_filename="health.proto"),
                pb.ServerReflectionRequest(file_containing_symbol="ringstream.v1.Bulk")]
        resps = session(ch, "v1", reqs)
        check_eq([[fd.name for fd in fdps(r)] for r in resps],
                 [["health.proto"], ["health.proto"], ["bulk.proto"]], "files per response")
    finally:
        ch.close()


@run.case("2000 requests pipelined on one stream are answered in order (past the send "
          "queue's capacity)")
def _(srv):
    # A 16 KiB send queue holds a handful of ~3 KiB file responses: the server has to wait
    # for room (the request stays unread meanwhile) many times in this run.
    own = Server(srv.binary, ["--stream-buffer", "16384"])
    own.start()
    ch = None
    try:
        ch = channel(own)
        pb = PB["v1alpha"]
        kinds = [dict(file_by_filename="grpc_testing.proto"),
                 dict(file_containing_symbol="no.such.Symbol%d"),
                 dict(list_services="%d"),
                 dict(all_extension_numbers_of_type="grpc.testing.Payload")]
        reqs = []
        for i in range(2000):
            kw = {k: (val % i if "%d" in val else val) for k, val in kinds[i % 4].items()}
            reqs.append(pb.ServerReflectionRequest(host="h%d" % i, **kw))
        resps = session(ch, "v1alpha", reqs)
        check_eq(len(resps), len(reqs), "responses")
        want = ["file_descriptor_response", "error_response", "list_services_response",
                "all_extension_numbers_response"]
        for i, (req, resp) in enumerate(zip(reqs, resps)):
            check_eq(resp.original_request, req, "original_request of response %d" % i)
            check_eq(resp.valid_host, "h%d" % i, "valid_host of response %d" % i)
            check_eq(resp.WhichOneof("message_response"), want[i % 4], "response %d" % i)
    finally:
        if ch is not None:
            ch.close()
        problems = own.stop()
        check(not problems, "the --stream-buffer 16384 server: %s" % problems)


@run.case("a client that never reads stalls only its own stream; the others are served")
def _(srv):
    stalled_ch, ch = channel(srv), channel(srv)
    pb = PB["v1"]
    # 20 MB of requests and 74 MB of responses: far past the stream's 1 MiB receive window
    # and send queue, and past what the client's transport buffers.
    total = 20000
    sent = [0]

    def requests():
        for _ in range(total):
            sent[0] += 1
            yield pb.ServerReflectionRequest(host="h" * 1000, file_by_filename="grpc_testing.proto")

    rpc = stalled_ch.stream_stream(path("v1"), request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=pb.ServerReflectionResponse.FromString)
    stalled = rpc(requests(), timeout=CALL_TIMEOUT_S)  # its responses are never read
    try:
        first = next(stalled)  # the stream is up and answering
        check_eq(first.WhichOneof("message_response"), "file_descriptor_response", "first")
        for v in VERSIONS:  # meanwhile, on another connection
            check_eq(sorted(list_services(ch, v)), sorted(SERVICES), "%s: services" % v)
            check_eq(fdps(ask(ch, v, file_by_filename="grpc_testing.proto"))[0].name,
                     "grpc_testing.proto", "%s: a file" % v)
        # Wait until the client stops sending (its requests are no longer taken), or all of
        # them went: without backpressure they all go within seconds.
        last, still = -1, 0
        for _ in range(300):  # at most 30 s
            if sent[0] >= total:
                break
            still = still + 1 if sent[0] == last else 0
            if still >= 10:  # 1 s without a request taken
                break
            last = sent[0]
            time.sleep(0.1)
        check(sent[0] < total, "the server read all %d requests of a client that does not read "
              "its responses" % total)
    finally:
        stalled.cancel()
        stalled_ch.close()
        ch.close()


@run.case("malformed requests end the call with INVALID_ARGUMENT; the server goes on")
def _(srv):
    ch = channel(srv)
    try:
        for v in VERSIONS:
            for raw, what in ((b"\x22\x05ab", "a string running past the end"),
                              (b"\x20\x01", "file_containing_symbol with a varint"),
                              (b"\x0a\x00", "no message_request (host only)"),
                              (b"", "an empty message"),
                              (b"\x22\x02\xc3\x28", "a symbol that is not UTF-8"),
                              (b"\x2a\x02\x08\x01", "an ExtensionRequest with a varint name"),
                              (b"\xff\xff\xff\xff\xff\xff", "garbage")):
                ok = PB[v].ServerReflectionRequest(list_services="").SerializeToString()
                try:
                    session(ch, v, [ok, raw, ok])
                    raise CaseFailure("%s: %s: the call succeeded" % (v, what))
                except grpc.RpcError as e:
                    check_eq(e.code(), grpc.StatusCode.INVALID_ARGUMENT, "%s: %s" % (v, what))
        check_eq(sorted(list_services(ch, "v1")), sorted(SERVICES), "services afterwards")
    finally:
        ch.close()


@run.case("a response above --max-msg ends its call with RESOURCE_EXHAUSTED, nothing else")
def _(srv):
    own = Server(srv.binary, ["--max-msg", "1024"])
    own.start()
    ch = None
    try:
        ch = channel(own)
        for v in VERSIONS:
            try:  # grpc_testing.proto is about 2.7 KiB
                req = PB[v].ServerReflectionRequest
                session(ch, v, [req(list_services=""), req(file_by_filename="grpc_testing.proto")])
                raise CaseFailure("%s: a 2.7 KiB response went out with --max-msg 1024" % v)
            except grpc.RpcError as e:
                check_eq(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, v)
            check_eq(fdps(ask(ch, v, file_by_filename="health.proto"))[0].name, "health.proto",
                     "%s: a small file afterwards" % v)
    finally:
        if ch is not None:
            ch.close()
        problems = own.stop()
        check(not problems, "the --max-msg 1024 server: %s" % problems)


@run.case("--reflection off: both services are UNIMPLEMENTED, the others still serve")
def _(srv):
    own = Server(srv.binary, ["--reflection", "off"])
    own.start()
    ch = None
    try:
        ch = channel(own)
        for v in VERSIONS:
            try:
                ask(ch, v, list_services="")
                raise CaseFailure("%s: reflection answered with --reflection off" % v)
            except grpc.RpcError as e:
                check_eq(e.code(), grpc.StatusCode.UNIMPLEMENTED, v)
        health = ch.unary_unary("/grpc.health.v1.Health/Check")
        check_eq(health(b"", timeout=CALL_TIMEOUT_S), b"\x08\x01", "Health/Check('') SERVING")
    finally:
        if ch is not None:
            ch.close()
        problems = own.stop()
        check(not problems, "the --reflection off server: %s" % problems)


run.main()
