"""tests/e2e/bystander.py: what the per-server bound tests share (test_attacks.py,
test_budget.py): a well-behaved client that must keep getting answers while an attack runs,
and the server's memory figures from /proc."""
import threading
import time

import grpc

from harness import CHANNEL_OPTIONS, PROTO_DIR, CaseFailure, check
from interop_client import load_pb2

TS = "/grpc.testing.TestService/"
# A connection of its own for every channel (grpcio shares subchannels between channels).
OWN_CONN = CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]


def pb():
    return load_pb2(PROTO_DIR, "grpc_testing")


def vm_kib(pid, key):
    """VmRSS, VmHWM, ... of |pid| in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise CaseFailure("no %s in /proc/%d/status" % (key, pid))


class Bystander:
    """EmptyCall every |period_s| on its own connection, each within |bound_s|."""

    def __init__(self, srv, bound_s, period_s=0.1):
        self.bound_s = bound_s
        self.period_s = period_s
        self.channel = grpc.insecure_channel(srv.address, options=OWN_CONN)
        self.call = self.channel.unary_unary(TS + "EmptyCall",
                                             request_serializer=pb().Empty.SerializeToString,
                                             response_deserializer=pb().Empty.FromString)
        self.ok = 0
        self.failures = []
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.call(pb().Empty(), timeout=self.bound_s)
                self.ok += 1
            except grpc.RpcError as e:
                self.failures.append("%s %r" % (e.code().name, e.details()))
            self.worst = max(self.worst, time.monotonic() - t0)
            self._stop.wait(self.period_s)

    def start(self):
        self.call(pb().Empty(), timeout=10)  # up and answering before the attack starts
        self._thread.start()

    def stop_and_check(self, min_calls):
        self._stop.set()
        self._thread.join(5)
        self.channel.close()
        print("      bystander: %d calls ok, %d failed, worst %.0f ms (bound %.0f ms)"
              % (self.ok, len(self.failures), self.worst * 1000, self.bound_s * 1000))
        check(not self.failures, "bystander calls failed (%d ok): %s"
              % (self.ok, "; ".join(self.failures[:5])))
        check(self.ok >= min_calls, "bystander made only %d calls (want >= %d)"
              % (self.ok, min_calls))
