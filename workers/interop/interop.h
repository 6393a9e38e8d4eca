/* workers/interop/interop.h: grpc.testing.TestService (proto/grpc_testing.proto), the service
 * the public gRPC interop clients (grpc/grpc doc/interop-test-descriptions.md) test a server
 * against: empty_unary, large_unary, client/server compressed unary and streaming,
 * client_streaming, server_streaming, ping_pong, empty_stream, custom_metadata,
 * status_code_and_message, special_status_message, unimplemented_method, cancel_after_begin,
 * cancel_after_first_response, timeout_on_sleeping_server.
 *
 * Every response payload is |size| zero bytes of type COMPRESSABLE. Metadata echo: a request
 * header x-grpc-test-echo-initial comes back as a response header, x-grpc-test-echo-trailing-bin
 * as a trailer. A request's response_status (code != 0 for the duplex calls) ends the call with
 * that status once the responses the same request asked for are sent. UnimplementedCall answers
 * UNIMPLEMENTED; grpc.testing.UnimplementedService is deliberately not served at all.
 *
 * The service holds no state of its own: register it on any number of servers. */
#ifndef RS_WORKERS_INTEROP_INTEROP_H
#define RS_WORKERS_INTEROP_INTEROP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "core/call.h"

/* Bytes of HalfDuplexCall requests one call may buffer until the client half-closes: the
 * stream buffer (--stream-buffer, rs_call_stream_buffer()), and never more than this; each
 * kept request is charged its size plus its bookkeeping, so many empty requests count too.
 * Past it the call fails with RESOURCE_EXHAUSTED. */
#define RS_INTEROP_HALF_DUPLEX_MAX (16u * 1024 * 1024)

/* The service to register; static, valid for the process's life. */
const struct rs_service *rs_interop_service(void);

/* --- wire helpers, exposed for tests/unit/test_interop_codec.c ---------------------------- */

/* Field headers in front of a payload body: payload tag, 5-byte varint, body tag, 5-byte
 * varint (a body is at most INT32_MAX bytes). */
#define RS_INTEROP_PAYLOAD_HEAD_MAX 12

/* Writes the bytes that come before a |size|-byte body in a SimpleResponse or a
 * StreamingOutputCallResponse (both are { Payload payload = 1 } with Payload { bytes body = 2 };
 * type COMPRESSABLE is the default and so not written). The message is these bytes followed by
 * the body. Returns the number of bytes written (2 for an empty body: an empty payload). */
size_t rs_interop_payload_head(uint8_t out[RS_INTEROP_PAYLOAD_HEAD_MAX], uint32_t size);

/* One StreamingOutputCallRequest.response_parameters entry. */
struct rs_interop_params {
    int32_t size;        /* body bytes of the response; negative in a hostile request */
    int32_t interval_us; /* wait before sending it */
    bool compressed;     /* compressed.value */
};

/* Reads the next response_parameters entry (field 2) of the serialized
 * StreamingOutputCallRequest |msg| at or after byte *pos; start with *pos = 0. Other fields are
 * skipped. Returns
 *   1         an entry: *p filled and *pos moved past it;
 *   0         no entry left; *pos = len;
 *   -EBADMSG  malformed from *pos on (truncated, wrong wire type, bad entry); *pos unchanged. */
int rs_interop_next_params(const uint8_t *msg, size_t len, size_t *pos,
                           struct rs_interop_params *p);

#endif /* RS_WORKERS_INTEROP_INTEROP_H */
