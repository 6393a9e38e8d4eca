#!/usr/bin/python3
"""Writes h2load request bodies: 5-byte-prefixed ringstream.v1.Bulk messages.

  gen_msgs.py put NAME BYTES > put.bin   PutHeader (overwrite) + 64 KiB data messages
  gen_msgs.py get NAME > get.bin         one GetRequest (default chunk size)
  gen_msgs.py stat NAME > stat.bin       one StatRequest
"""
import os
import struct
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
tmp = tempfile.mkdtemp(prefix="rs-gen-")
subprocess.run(["protoc", "--python_out=" + tmp, "-I", os.path.join(here, "..", "proto"),
                "bulk.proto"], check=True)
sys.path.insert(0, tmp)
import bulk_pb2 as pb  # noqa: E402


def frame(msg):
    b = msg.SerializeToString()
    return b"\0" + struct.pack(">I", len(b)) + b


def main():
    kind, name = sys.argv[1], sys.argv[2]
    out = sys.stdout.buffer
    if kind == "put":
        size = int(sys.argv[3])
        out.write(frame(pb.PutRequest(header=pb.PutHeader(name=name, size=size,
                                                          overwrite=True))))
        block = bytes(range(256)) * 256
        for off in range(0, size, len(block)):
            out.write(frame(pb.PutRequest(data=block[:min(len(block), size - off)])))
    elif kind == "get":
        out.write(frame(pb.GetRequest(name=name)))
    elif kind == "stat":
        out.write(frame(pb.StatRequest(name=name)))
    else:
        sys.exit("unknown kind " + kind)


main()
