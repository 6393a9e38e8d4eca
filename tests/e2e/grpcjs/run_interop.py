#!/usr/bin/env python3
"""Runs the grpc-js interop client (interop.js) against one ringstreamd started through the
e2e harness:

    run_interop.py --server build/ringstreamd --case ping_pong     (or --case all)

Each case is one `node interop.js --test_case=NAME` run; its output is shown when it fails.
node_modules comes from `npm ci` in this directory (scripts/deps.sh does it)."""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness import CaseFailure  # noqa: E402
from interop_client import CaseRun  # noqa: E402

NODE = shutil.which("node") or "/usr/bin/node"
NODE_TIMEOUT_S = 60
proto_dir = None  # from --proto-dir

JS_CASES = [
    "empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
    "empty_stream", "status_code_and_message", "special_status_message", "custom_metadata",
    "unimplemented_method", "unimplemented_service", "timeout_on_sleeping_server",
    "cancel_after_begin", "cancel_after_first_response",
]


def js_case(name):
    def run(srv):
        if not os.path.isdir(os.path.join(HERE, "node_modules", "@grpc", "grpc-js")):
            raise CaseFailure("%s/node_modules is missing: run scripts/deps.sh (npm ci)" % HERE)
        cmd = [NODE, os.path.join(HERE, "interop.js"), "--server_host=127.0.0.1",
               "--server_port=%d" % srv.port, "--test_case=" + name,
               "--proto_dir=" + proto_dir]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                               timeout=NODE_TIMEOUT_S, cwd=HERE)
        except subprocess.TimeoutExpired:
            raise CaseFailure("node interop.js did not finish within %d s" % NODE_TIMEOUT_S)
        if p.returncode != 0:
            out = (p.stdout + p.stderr).strip()
            lines = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
            raise CaseFailure("node exit %d: %s" % (p.returncode, "\n".join(lines) or out[-2000:]))
    return run


if __name__ == "__main__":
    run = CaseRun("interop (grpc.testing.TestService, grpc-js)",
                  [(n, js_case(n)) for n in JS_CASES])
    proto_dir = os.path.abspath(run.args.proto_dir)
    run.main()
