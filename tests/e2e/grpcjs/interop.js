#!/usr/bin/env node
// gRPC interop client cases (grpc/grpc doc/interop-test-descriptions.md) with grpc-js, the
// second client stack of ringstream's e2e tests. Runs against a server that is already up:
//
//   node interop.js --server_host=127.0.0.1 --server_port=PORT --test_case=NAME|all
//                   [--proto_dir=DIR]   (default: the repo's proto/)
//
// Messages and services come from proto/grpc_testing.proto through @grpc/proto-loader.
// Prints one "ok"/"FAIL" line per case and "N passed, M failed" last; exits 1 on a failure.
// tests/e2e/grpcjs/run_interop.py starts ringstreamd through the harness and runs this.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const CASE_TIMEOUT_MS = 30000;
const CALL_DEADLINE_MS = 20000;

// --- arguments ------------------------------------------------------------------------------

function parseArgs(argv) {
  const out = {
    server_host: '127.0.0.1',
    server_port: null,
    test_case: 'all',
    proto_dir: path.resolve(__dirname, '..', '..', '..', 'proto'),
    ca_file: '', // PEM CA: connect with TLS (server name: --server_host) instead of h2c
  };
  for (const a of argv) {
    const m = /^--([a-z_]+)=(.*)$/.exec(a);
    if (!m || !(m[1] in out)) {
      throw new Error(`unknown argument ${a}`);
    }
    out[m[1]] = m[2];
  }
  if (!out.server_port) {
    throw new Error('--server_port is required');
  }
  return out;
}

// --- checks ---------------------------------------------------------------------------------

class CaseFailure extends Error {}

function check(cond, msg) {
  if (!cond) throw new CaseFailure(msg);
}

function checkEq(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new CaseFailure(`${what}: got ${g}, want ${w}`);
}

function zeros(n) {
  return Buffer.alloc(n);
}

function checkPayload(payload, size, what) {
  check(payload && Buffer.isBuffer(payload.body), `${what}: no payload body`);
  checkEq(payload.body.length, size, `${what}: payload body size`);
  check(payload.body.equals(zeros(size)), `${what}: payload body is not all zeros`);
}

function statusName(code) {
  const name = Object.keys(grpc.status).find((k) => grpc.status[k] === code);
  return name || String(code);
}

function checkStatus(status, code, what) {
  check(status, `${what}: no status`);
  if (status.code !== code) {
    throw new CaseFailure(`${what}: want ${statusName(code)}, got ${statusName(status.code)} ` +
                          `(${JSON.stringify(status.details)})`);
  }
}

// --- calls as promises ----------------------------------------------------------------------
// Each resolves with {err, resp|responses, initial, status} once the call's final status is
// in; a failed call resolves too (the case checks status.code).

function deadline(ms = CALL_DEADLINE_MS) {
  return new Date(Date.now() + ms);
}

function unary(client, method, req, { metadata, ms } = {}) {
  return new Promise((resolve) => {
    const r = { err: null, resp: null, initial: null, status: null };
    let pending = 2;
    const done = () => { if (--pending === 0) resolve(r); };
    const call = client[method](req, metadata || new grpc.Metadata(), { deadline: deadline(ms) },
                                (err, resp) => { r.err = err; r.resp = resp; done(); });
    call.on('metadata', (md) => { r.initial = md; });
    call.on('status', (s) => { r.status = s; done(); });
  });
}

// Attaches the handlers that collect a streaming call's results; `onData(resp, index)` may
// write more or end. Returns the promise of the result.
function collect(call, r, onData, extraDone) {
  return new Promise((resolve) => {
    let pending = extraDone ? 2 : 1;
    const done = () => { if (--pending === 0) resolve(r); };
    if (extraDone) r.extraDone = done;
    call.on('metadata', (md) => { r.initial = md; });
    call.on('data', (resp) => {
      r.responses.push(resp);
      if (onData) {
        try {
          onData(resp, r.responses.length - 1);
        } catch (e) {
          r.thrown = r.thrown || e;
          call.cancel();
        }
      }
    });
    call.on('error', (e) => { r.err = e; });
    call.on('status', (s) => { r.status = s; done(); });
  });
}

function streamResult() {
  return { err: null, responses: [], initial: null, status: null, thrown: null };
}

function rethrow(r) {
  if (r.thrown) throw r.thrown;
  return r;
}

// --- the cases ------------------------------------------------------------------------------

const ECHO_INITIAL_KEY = 'x-grpc-test-echo-initial';
const ECHO_INITIAL_VALUE = 'test_initial_metadata_value';
const ECHO_TRAILING_KEY = 'x-grpc-test-echo-trailing-bin';
const ECHO_TRAILING_VALUE = Buffer.from([0xab, 0xab, 0xab]);
const SPECIAL_MESSAGE =
  '\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \u{1f608}\t\n';

function simpleRequest(extra = {}) {
  return Object.assign({ response_size: 314159, payload: { body: zeros(271828) } }, extra);
}

function outputRequest(responseSize, requestSize) {
  return { response_parameters: [{ size: responseSize }], payload: { body: zeros(requestSize) } };
}

const CASES = {
  // Asserts: call OK, response non-null.
  async empty_unary(t) {
    const r = await unary(t.client, 'EmptyCall', {});
    checkStatus(r.status, grpc.status.OK, 'EmptyCall');
    check(r.resp !== null && typeof r.resp === 'object', 'EmptyCall: null response');
  },

  // Asserts: call OK, payload body 314159 zero bytes.
  async large_unary(t) {
    const r = await unary(t.client, 'UnaryCall', simpleRequest());
    checkStatus(r.status, grpc.status.OK, 'UnaryCall');
    checkPayload(r.resp.payload, 314159, 'response');
  },

  // 27182, 8, 1828, 45904 zero bytes, half-close. Asserts: OK, aggregated size 74922.
  async client_streaming(t) {
    const r = { resp: null, err: null, status: null };
    const p = new Promise((resolve) => {
      let pending = 2;
      const done = () => { if (--pending === 0) resolve(r); };
      const call = t.client.StreamingInputCall(new grpc.Metadata(), { deadline: deadline() },
                                               (err, resp) => { r.err = err; r.resp = resp; done(); });
      call.on('status', (s) => { r.status = s; done(); });
      for (const n of [27182, 8, 1828, 45904]) call.write({ payload: { body: zeros(n) } });
      call.end();
    });
    await p;
    checkStatus(r.status, grpc.status.OK, 'StreamingInputCall');
    checkEq(r.resp.aggregated_payload_size, 74922, 'aggregated_payload_size');
  },

  // Asserts: OK, exactly four responses of 31415, 9, 2653, 58979 zero bytes in order.
  async server_streaming(t) {
    const sizes = [31415, 9, 2653, 58979];
    const call = t.client.StreamingOutputCall(
      { response_parameters: sizes.map((size) => ({ size })) }, new grpc.Metadata(),
      { deadline: deadline() });
    const r = await collect(call, streamResult());
    checkStatus(r.status, grpc.status.OK, 'StreamingOutputCall');
    checkEq(r.responses.map((x) => x.payload.body.length), sizes, 'response payload sizes');
    r.responses.forEach((x, i) => checkPayload(x.payload, sizes[i], `response ${i}`));
  },

  // Each request only after the previous response; half-close after the fourth response.
  // Asserts: OK, exactly four responses, sizes in order.
  async ping_pong(t) {
    const pairs = [[31415, 27182], [9, 8], [2653, 1828], [58979, 45904]];
    const call = t.client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline() });
    const p = collect(call, streamResult(), (resp, i) => {
      checkPayload(resp.payload, pairs[i] ? pairs[i][0] : -1, `response ${i}`);
      if (i + 1 < pairs.length) call.write(outputRequest(...pairs[i + 1]));
      else if (i + 1 === pairs.length) call.end();
    });
    call.write(outputRequest(...pairs[0]));
    const r = rethrow(await p);
    checkStatus(r.status, grpc.status.OK, 'FullDuplexCall');
    checkEq(r.responses.length, 4, 'responses');
  },

  // FullDuplexCall, half-close at once. Asserts: OK, zero responses.
  async empty_stream(t) {
    const call = t.client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline() });
    const p = collect(call, streamResult());
    call.end();
    const r = await p;
    checkStatus(r.status, grpc.status.OK, 'FullDuplexCall');
    checkEq(r.responses.length, 0, 'responses');
  },

  // UnaryCall and FullDuplexCall (then half-close) with response_status {2, "test status
  // message"}. Asserts: the same code and message for both.
  async status_code_and_message(t) {
    const rs = { code: 2, message: 'test status message' };
    const r = await unary(t.client, 'UnaryCall', { response_status: rs });
    checkStatus(r.status, 2, 'UnaryCall');
    checkEq(r.status.details, rs.message, 'UnaryCall: status message');
    const call = t.client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline() });
    const p = collect(call, streamResult());
    call.write({ response_status: rs });
    call.end();
    const d = await p;
    checkStatus(d.status, 2, 'FullDuplexCall');
    checkEq(d.status.details, rs.message, 'FullDuplexCall: status message');
  },

  // UnaryCall with response_status {2, whitespace and Unicode}. Asserts: code and message
  // byte for byte.
  async special_status_message(t) {
    const r = await unary(t.client, 'UnaryCall',
                          { response_status: { code: 2, message: SPECIAL_MESSAGE } });
    checkStatus(r.status, 2, 'UnaryCall');
    checkEq(r.status.details, SPECIAL_MESSAGE, 'UnaryCall: status message');
  },

  // The two echo keys on a UnaryCall (314159 / 271828) and a FullDuplexCall (314159 /
  // 271828, then half-close). Asserts: OK; the ASCII value in the initial metadata, the
  // binary value in the trailing metadata, for both calls.
  async custom_metadata(t) {
    const md = () => {
      const m = new grpc.Metadata();
      m.set(ECHO_INITIAL_KEY, ECHO_INITIAL_VALUE);
      m.set(ECHO_TRAILING_KEY, ECHO_TRAILING_VALUE);
      return m;
    };
    const checkMd = (r, what) => {
      check(r.initial, `${what}: no initial metadata`);
      checkEq(r.initial.get(ECHO_INITIAL_KEY), [ECHO_INITIAL_VALUE],
              `${what}: initial metadata ${ECHO_INITIAL_KEY}`);
      const tr = r.status.metadata.get(ECHO_TRAILING_KEY).map((b) => Buffer.from(b).toString('hex'));
      checkEq(tr, [ECHO_TRAILING_VALUE.toString('hex')],
              `${what}: trailing metadata ${ECHO_TRAILING_KEY} (hex)`);
    };
    const r = await unary(t.client, 'UnaryCall', simpleRequest(), { metadata: md() });
    checkStatus(r.status, grpc.status.OK, 'UnaryCall');
    checkPayload(r.resp.payload, 314159, 'UnaryCall response');
    checkMd(r, 'UnaryCall');

    const call = t.client.FullDuplexCall(md(), { deadline: deadline() });
    const p = collect(call, streamResult());
    call.write(outputRequest(314159, 271828));
    call.end();
    const d = await p;
    checkStatus(d.status, grpc.status.OK, 'FullDuplexCall');
    checkEq(d.responses.map((x) => x.payload.body.length), [314159], 'FullDuplexCall sizes');
    checkMd(d, 'FullDuplexCall');
  },

  // Asserts: UNIMPLEMENTED (12).
  async unimplemented_method(t) {
    const r = await unary(t.client, 'UnimplementedCall', {});
    checkStatus(r.status, grpc.status.UNIMPLEMENTED, 'TestService/UnimplementedCall');
  },

  // Asserts: UNIMPLEMENTED (12).
  async unimplemented_service(t) {
    const r = await unary(t.other, 'UnimplementedCall', {});
    checkStatus(r.status, grpc.status.UNIMPLEMENTED, 'UnimplementedService/UnimplementedCall');
  },

  // FullDuplexCall with a 1 ms deadline and one 27182-byte request, no half-close.
  // Asserts: DEADLINE_EXCEEDED.
  async timeout_on_sleeping_server(t) {
    const call = t.client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline(1) });
    const p = collect(call, streamResult());
    call.write({ payload: { body: zeros(27182) } });
    const r = await p;
    checkStatus(r.status, grpc.status.DEADLINE_EXCEEDED, 'FullDuplexCall');
  },

  // StreamingInputCall, cancelled at once. Asserts: CANCELLED.
  async cancel_after_begin(t) {
    const r = { err: null, status: null };
    await new Promise((resolve) => {
      let pending = 2;
      const done = () => { if (--pending === 0) resolve(); };
      const call = t.client.StreamingInputCall(new grpc.Metadata(), { deadline: deadline() },
                                               (err) => { r.err = err; done(); });
      call.on('status', (s) => { r.status = s; done(); });
      call.cancel();
    });
    checkStatus(r.status, grpc.status.CANCELLED, 'StreamingInputCall');
  },

  // FullDuplexCall {31415, 27182 bytes}; cancel after the first response. Asserts: CANCELLED.
  async cancel_after_first_response(t) {
    const call = t.client.FullDuplexCall(new grpc.Metadata(), { deadline: deadline() });
    const p = collect(call, streamResult(), (resp, i) => {
      if (i === 0) {
        checkPayload(resp.payload, 31415, 'first response');
        call.cancel();
      }
    });
    call.write(outputRequest(31415, 27182));
    const r = rethrow(await p);
    checkStatus(r.status, grpc.status.CANCELLED, 'FullDuplexCall');
    checkEq(r.responses.length, 1, 'responses before the cancel');
  },
};

// --- main -----------------------------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CaseFailure(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`interop.js: ${e.message}`);
    console.error(`cases: all, ${Object.keys(CASES).join(', ')}`);
    process.exit(2);
  }
  const names = args.test_case === 'all' ? Object.keys(CASES) : [args.test_case];
  for (const n of names) {
    if (!(n in CASES)) {
      console.error(`interop.js: unknown case ${n}; known: all, ${Object.keys(CASES).join(', ')}`);
      process.exit(2);
    }
  }
  const def = protoLoader.loadSync(path.join(args.proto_dir, 'grpc_testing.proto'), {
    keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [args.proto_dir],
  });
  const pkg = grpc.loadPackageDefinition(def).grpc.testing;
  const address = `${args.server_host}:${args.server_port}`;
  const options = { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 };
  const creds = () => (args.ca_file ? grpc.credentials.createSsl(fs.readFileSync(args.ca_file))
                                    : grpc.credentials.createInsecure());

  let passed = 0;
  let failed = 0;
  for (const name of names) {
    const t = {
      client: new pkg.TestService(address, creds(), options),
      other: new pkg.UnimplementedService(address, creds(), options),
    };
    const t0 = Date.now();
    try {
      await withTimeout(CASES[name](t), CASE_TIMEOUT_MS, name);
      console.log(`ok    ${name} (${((Date.now() - t0) / 1000).toFixed(2)}s)`);
      passed++;
    } catch (e) {
      const msg = e instanceof CaseFailure ? e.message : (e && e.stack) || String(e);
      console.log(`FAIL  ${name}: ${msg}`);
      failed++;
    } finally {
      t.client.close();
      t.other.close();
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
