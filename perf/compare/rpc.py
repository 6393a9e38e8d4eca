#!/usr/bin/python3
"""perf/compare/rpc.py: the gRPC side of perf/compare (python3-grpcio, stubs from protoc).

  rpc.py bodies DIR SIZE       writes the h2load request bodies (5-byte-prefixed messages)
                               for objects of SIZE bytes into DIR (skipped when present)
  rpc.py delete PORT NAME      Bulk/Delete, NOT_FOUND accepted (before a timed Put)
  rpc.py check PORT KIND SIZE  one real call of the scenario's kind with a gRPC client,
                               its grpc-status and answer checked: unary, get-CHUNK,
                               put (the object the timed Put stored), echo-CHUNK
Exit status 0 when the call succeeded, 1 with a line on stderr saying what was wrong.

The object data is one pattern everywhere: byte i of an object is i % 256, so the 64 KiB
and 1 MiB Put bodies store the same object, and a Get can be checked anywhere.
"""
import atexit
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
tmp = tempfile.mkdtemp(prefix="rs-compare-")
atexit.register(shutil.rmtree, tmp, True)
subprocess.run(["protoc", "--python_out=" + tmp, "-I", os.path.join(here, "..", "..", "proto"),
                "bulk.proto", "grpc_testing.proto"], check=True)
sys.path.insert(0, tmp)
import bulk_pb2 as pb  # noqa: E402
import grpc_testing_pb2 as tpb  # noqa: E402

OBJECT = "compare/object"   # what Get reads (stored once per server before the runs)
PUT_OBJECT = "compare/put"  # what the timed Put writes
UNARY_BYTES = 32
KiB, MiB = 1024, 1024 * 1024
CHUNKS = {"64k": 64 * KiB, "1m": MiB}
PATTERN = bytes(range(256)) * (MiB // 256)


def frame(msg):
    b = msg.SerializeToString()
    return b"\0" + struct.pack(">I", len(b)) + b


def pattern_sha256(size):
    h = hashlib.sha256()
    for off in range(0, size, MiB):
        h.update(PATTERN[:min(MiB, size - off)])
    return h.digest()


def write_body(path, messages):
    if os.path.exists(path):
        return
    with open(path + ".tmp", "wb") as f:
        for m in messages:
            f.write(m)
    os.rename(path + ".tmp", path)


def put_messages(name, size, chunk, digest):
    yield frame(pb.PutRequest(header=pb.PutHeader(name=name, size=size, sha256=digest,
                                                  overwrite=True)))
    for off in range(0, size, chunk):
        yield frame(pb.PutRequest(data=PATTERN[:min(chunk, size - off)]))


def echo_messages(size, chunk):
    for off in range(0, size, chunk):
        yield frame(pb.Chunk(data=PATTERN[:min(chunk, size - off)]))


def bodies(out, size):
    os.makedirs(out, exist_ok=True)
    digest = pattern_sha256(size)
    unary = tpb.SimpleRequest(response_size=UNARY_BYTES, payload=tpb.Payload(body=b"x" * UNARY_BYTES))
    write_body(os.path.join(out, "unary.bin"), [frame(unary)])
    write_body(os.path.join(out, "seed.bin"), put_messages(OBJECT, size, MiB, digest))
    for tag, chunk in CHUNKS.items():
        write_body(os.path.join(out, "get-%s.bin" % tag),
                   [frame(pb.GetRequest(name=OBJECT, chunk_size=chunk))])
        write_body(os.path.join(out, "put-%s.bin" % tag), put_messages(PUT_OBJECT, size, chunk, digest))
        write_body(os.path.join(out, "echo-%s.bin" % tag), echo_messages(size, chunk))


def channel(port):
    import grpc
    return grpc.insecure_channel("127.0.0.1:%s" % port,
                                 options=[("grpc.max_receive_message_length", -1)])


def get_range(ch, name, offset, length, chunk):
    get = ch.unary_stream("/ringstream.v1.Bulk/Get", request_serializer=pb.GetRequest.SerializeToString,
                          response_deserializer=pb.Chunk.FromString)
    return list(get(pb.GetRequest(name=name, offset=offset, length=length, chunk_size=chunk),
                    timeout=30))


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def check_object(ch, name, size, chunk):
    """The first chunks and the last byte of NAME: the pattern, chunk sizes as bulk.proto says."""
    want = min(size, 3 * chunk + 100)
    chunks = get_range(ch, name, 0, want, chunk)
    data = b"".join(c.data for c in chunks)
    expect(len(data) == want, "Get returned %d bytes, wanted %d" % (len(data), want))
    expect(all(len(c.data) == chunk for c in chunks[:-1]), "a chunk other than the last is not %d bytes" % chunk)
    expect(all(c.offset == i * chunk for i, c in enumerate(chunks)), "wrong Chunk.offset")
    expect(data == (PATTERN * (want // MiB + 1))[:want], "Get data is not the pattern")
    last = get_range(ch, name, size - 1, 0, chunk)
    expect(len(last) == 1 and last[0].data == bytes([(size - 1) % 256]),
           "the object does not end at byte %d as expected" % size)


def check(port, kind, size):
    import grpc
    ch = channel(port)
    try:
        if kind == "unary":
            call = ch.unary_unary("/grpc.testing.TestService/UnaryCall",
                                  request_serializer=tpb.SimpleRequest.SerializeToString,
                                  response_deserializer=tpb.SimpleResponse.FromString)
            r = call(tpb.SimpleRequest(response_size=UNARY_BYTES,
                                       payload=tpb.Payload(body=b"x" * UNARY_BYTES)), timeout=10)
            expect(len(r.payload.body) == UNARY_BYTES, "UnaryCall payload %d bytes" % len(r.payload.body))
        elif kind.startswith("get-"):
            check_object(ch, OBJECT, size, CHUNKS[kind[4:]])
        elif kind == "put":
            check_object(ch, PUT_OBJECT, size, 64 * KiB)
        elif kind.startswith("echo-"):
            chunk = CHUNKS[kind[5:]]
            echo = ch.stream_stream("/ringstream.v1.Bulk/Echo", request_serializer=pb.Chunk.SerializeToString,
                                    response_deserializer=pb.Chunk.FromString)
            out = list(echo(iter([pb.Chunk(data=PATTERN[:chunk])] * 3), timeout=30))
            expect(len(out) == 3, "Echo returned %d chunks for 3" % len(out))
            expect(all(c.data == PATTERN[:chunk] and c.offset == i * chunk for i, c in enumerate(out)),
                   "Echo chunk data or offset wrong")
        else:
            raise SystemExit("rpc.py: unknown check " + kind)
    except grpc.RpcError as e:
        print("grpc-status %s (%s): %s" % (e.code().value[0], e.code().name, e.details()), file=sys.stderr)
        return 1
    except AssertionError as e:
        print("grpc-status 0 but wrong answer: %s" % e, file=sys.stderr)
        return 1
    return 0


def delete(port, name):
    import grpc
    call = channel(port).unary_unary("/ringstream.v1.Bulk/Delete",
                                      request_serializer=pb.DeleteRequest.SerializeToString,
                                      response_deserializer=pb.ObjectInfo.FromString)
    try:
        call(pb.DeleteRequest(name=name), timeout=10)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            print("Delete: grpc-status %s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    return 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "bodies":
        bodies(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "delete":
        return delete(sys.argv[2], sys.argv[3])
    if len(sys.argv) == 5 and sys.argv[1] == "check":
        return check(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


sys.exit(main())
