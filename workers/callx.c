/* workers/callx.c: core/call.h accessors that look at the stream's flow control and buffer
 * sizes (issue 15). Kept apart from call.c, which owns the call's state machine. */
#include <nghttp2/nghttp2.h>
#include "core/chunkq.h"
#include "workers/internal.h"

size_t rs_call_send_window(const struct rs_call *call)
{
    nghttp2_session *h2 = call->conn->h2;
    int32_t sw, cw;

    if (h2 == NULL || (call->flags & RS_CALL_F_CLOSED))
        return 0;
    sw = nghttp2_session_get_stream_remote_window_size(h2, call->stream_id);
    cw = nghttp2_session_get_remote_window_size(h2);
    if (sw <= 0 || cw <= 0)
        return 0;
    return (size_t)(sw < cw ? sw : cw);
}

size_t rs_call_send_unframed(const struct rs_call *call)
{
    size_t used = rs_chunkq_used(&call->txq);

    return used > call->tx_framed ? used - call->tx_framed : 0;
}

size_t rs_call_stream_buffer(const struct rs_call *call)
{
    return call->txq.cap;
}
