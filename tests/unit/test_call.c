/* tests/unit/test_call.c: a stream's response metadata through a real nghttp2 session pair,
 * without sockets: a client session talks to the server session of a hand-built connection,
 * bytes pumped between them in memory. Issue 16 finding 7: more than 16 entries must all
 * arrive, and rs_call_add_metadata() bounds them by the client's SETTINGS_MAX_HEADER_LIST_SIZE.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/runner.h"
#include "workers/internal.h"

#define BUFCAP (1u << 20)

struct pipe_buf {
    uint8_t *data; /* owned, BUFCAP bytes */
    size_t len;
};

/* What the client saw on stream 1. */
struct seen {
    unsigned meta_headers;  /* x-m-* fields in the response HEADERS */
    unsigned meta_trailers; /* x-m-* fields in the trailers */
    bool status_ok;         /* grpc-status: 0 arrived */
    bool reset;             /* RST_STREAM arrived */
};

static struct rs_server srv;
static struct rs_worker w;
static struct rs_conn conn;
static nghttp2_session *client;
static struct pipe_buf to_server, to_client;
static struct seen seen;
static struct rs_call *call;

static ssize_t buf_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                        void *user_data)
{
    struct pipe_buf *b = user_data;

    if (len > BUFCAP - b->len)
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return (ssize_t)len;
}

/* The server's DATA frames: the 9-byte header, then the bytes from the stream's send queue. */
static int server_send_data(nghttp2_session *h2, nghttp2_frame *frame, const uint8_t *framehd,
                            size_t length, nghttp2_data_source *source, void *user_data)
{
    struct rs_call *c = source->ptr;
    struct iovec iov[16];
    size_t k, i;

    if (9 + length > BUFCAP - to_client.len)
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(to_client.data + to_client.len, framehd, 9);
    to_client.len += 9;
    k = length == 0 ? 0 : rs_chunkq_peek(&c->txq, 0, length, iov, 16);
    for (i = 0; i < k; i++) {
        memcpy(to_client.data + to_client.len, iov[i].iov_base, iov[i].iov_len);
        to_client.len += iov[i].iov_len;
    }
    rs_chunkq_consume(&c->txq, length);
    return 0;
}

static int client_on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                            size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                            void *user_data)
{
    if (frame->hd.stream_id != 1)
        return 0;
    if (namelen > 4 && memcmp(name, "x-m-", 4) == 0) {
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
            seen.meta_headers++;
        else
            seen.meta_trailers++;
    }
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0 && valuelen == 1 && value[0] == '0')
        seen.status_ok = true;
    return 0;
}

static int client_on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type == NGHTTP2_RST_STREAM && frame->hd.stream_id == 1)
        seen.reset = true;
    return 0;
}

/* Moves bytes both ways until neither side has anything to say (bounded). */
static void pump(void)
{
    int round;

    for (round = 0; round < 64; round++) {
        CU_ASSERT_EQUAL_FATAL(nghttp2_session_send(client), 0);
        if (to_server.len > 0) {
            CU_ASSERT_EQUAL_FATAL(nghttp2_session_mem_recv(conn.h2, to_server.data, to_server.len),
                                  (ssize_t)to_server.len);
            to_server.len = 0;
        }
        CU_ASSERT_EQUAL_FATAL(nghttp2_session_send(conn.h2), 0);
        if (to_client.len == 0)
            return;
        CU_ASSERT_EQUAL_FATAL(nghttp2_session_mem_recv(client, to_client.data, to_client.len),
                              (ssize_t)to_client.len);
        to_client.len = 0;
    }
    CU_FAIL("the sessions kept talking for 64 rounds");
}

/* A connection and a client with |max_header_list| in its SETTINGS (0: not sent), and a
 * gRPC request on stream 1 whose server-side call is |call|, routed as far as OPEN. */
static void start(uint32_t max_header_list)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_settings_entry iv = { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list };
    const nghttp2_nv req[] = {
        { (uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0 },
        { (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0 },
        { (uint8_t *)":path", (uint8_t *)"/t.S/M", 5, 6, 0 },
        { (uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0 },
        { (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0 },
    };

    memset(&seen, 0, sizeof(seen));
    rs_config_defaults(&srv.cfg);
    w.srv = &srv;
    rs_list_init(&w.pending);
    CU_ASSERT_EQUAL_FATAL(rs_pool_init(&w.pool, RS_POOL_BLOCK, 64, 4), 0);
    CU_ASSERT_EQUAL_FATAL(rs_budget_init(&w.budget, (size_t)64 << 20, (size_t)16 << 20), 0);
    conn.w = &w;
    rs_list_init(&conn.calls);
    rs_list_init(&conn.ready);
    rs_list_init(&conn.pending_link);
    to_server.data = malloc(BUFCAP);
    to_client.data = malloc(BUFCAP);
    CU_ASSERT_FATAL(to_server.data != NULL && to_client.data != NULL);

    CU_ASSERT_EQUAL_FATAL(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, buf_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, server_send_data);
    CU_ASSERT_EQUAL_FATAL(nghttp2_session_server_new(&conn.h2, cbs, &to_client), 0);
    nghttp2_session_callbacks_del(cbs);
    CU_ASSERT_EQUAL_FATAL(nghttp2_submit_settings(conn.h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);

    CU_ASSERT_EQUAL_FATAL(nghttp2_session_callbacks_new(&cbs), 0);
    nghttp2_session_callbacks_set_send_callback(cbs, buf_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, client_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, client_on_frame_recv);
    CU_ASSERT_EQUAL_FATAL(nghttp2_session_client_new(&client, cbs, &to_server), 0);
    nghttp2_session_callbacks_del(cbs);
    CU_ASSERT_EQUAL_FATAL(
            nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, &iv, max_header_list > 0), 0);
    CU_ASSERT_EQUAL_FATAL(nghttp2_submit_request(client, NULL, req, 5, NULL, NULL), 1);
    pump();

    call = rs_stream_new(&conn, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(call);
    rs_stream_set_state(call, RS_STREAM_OPEN);
    call->route = RS_ROUTE_GRPC;
}

static void stop(void)
{
    struct rs_list *l, *next;

    for (l = conn.calls.next; l != &conn.calls; l = next) {
        struct rs_call *c = rs_container_of(l, struct rs_call, link);

        next = l->next;
        rs_stream_close(c);
        rs_stream_run(c); /* CLOSED -> DONE */
        CU_ASSERT_TRUE(rs_stream_reapable(c));
        rs_stream_free(c);
    }
    nghttp2_session_del(client);
    nghttp2_session_del(conn.h2);
    rs_pool_fini(&w.pool);
    free(to_server.data);
    free(to_client.data);
    memset(&conn, 0, sizeof(conn));
    memset(&w, 0, sizeof(w));
    client = NULL;
    call = NULL;
}

static int add_entries(unsigned from, unsigned n, size_t value_len)
{
    char name[32], value[256];
    unsigned i;
    int ret;

    memset(value, 'v', value_len);
    for (i = from; i < from + n; i++) {
        snprintf(name, sizeof(name), "x-m-%03u", i);
        ret = rs_call_add_metadata(call, name, value, value_len);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static void trailers_only_carry_40_entries(void)
{
    start(0);
    CU_ASSERT_EQUAL(add_entries(0, 40, 8), 0);
    rs_call_finish(call, RS_GRPC_OK, NULL);
    CU_ASSERT_EQUAL(call->state, RS_STREAM_TRAILERS_SENT);
    pump();
    CU_ASSERT_EQUAL(seen.meta_headers, 40);
    CU_ASSERT_TRUE(seen.status_ok);
    CU_ASSERT_FALSE(seen.reset);
    stop();
}

static void headers_and_trailers_carry_every_entry(void)
{
    struct iovec msg = { (void *)"hello", 5 };

    start(0);
    CU_ASSERT_EQUAL(add_entries(0, 40, 8), 0);
    CU_ASSERT_EQUAL(rs_call_send(call, &msg, 1), 0);
    pump();
    CU_ASSERT_EQUAL(seen.meta_headers, 40);
    CU_ASSERT_EQUAL(add_entries(100, 30, 8), 0);
    rs_call_finish(call, RS_GRPC_OK, NULL);
    nghttp2_session_resume_data(conn.h2, 1);
    pump();
    CU_ASSERT_EQUAL(call->state, RS_STREAM_TRAILERS_SENT);
    CU_ASSERT_EQUAL(seen.meta_trailers, 30);
    CU_ASSERT_TRUE(seen.status_ok);
    CU_ASSERT_FALSE(seen.reset);
    stop();
}

/* Entries of 8 + 100 + 32 = 140 bytes against 4096 - 1536 bytes: 18 fit, the 19th is E2BIG,
 * and what was accepted still arrives. */
static void bounded_by_client_max_header_list(void)
{
    unsigned i;
    int ret = 0;

    start(4096);
    for (i = 0; i < 100 && ret == 0; i++)
        ret = add_entries(i, 1, 100);
    CU_ASSERT_EQUAL(ret, -E2BIG);
    CU_ASSERT_EQUAL(i - 1, (4096 - RS_CALL_META_RESERVED) / 140);
    rs_call_finish(call, RS_GRPC_OK, NULL);
    pump();
    CU_ASSERT_EQUAL(seen.meta_headers, i - 1);
    CU_ASSERT_TRUE(seen.status_ok);
    stop();
}

/* Without a client setting the bound is RS_CALL_META_BYTES: an endless adder stops. */
static void bounded_without_client_setting(void)
{
    unsigned i;
    int ret = 0;

    start(0);
    for (i = 0; i < 10000 && ret == 0; i++)
        ret = add_entries(i, 1, 200);
    CU_ASSERT_EQUAL(ret, -E2BIG);
    CU_ASSERT(i < 10000);
    CU_ASSERT((i - 1) * (8 + 200 + 32) <= RS_CALL_META_BYTES);
    stop();
}

static void metadata_after_trailers_is_refused(void)
{
    start(0);
    rs_call_finish(call, RS_GRPC_OK, NULL);
    CU_ASSERT_EQUAL(add_entries(0, 1, 8), -EALREADY);
    pump();
    stop();
}

/* ---- the stream state machine ------------------------------------------------------- */

static unsigned starts, dones;
static enum rs_grpc_status done_status;

static void count_start(struct rs_call *c)
{
    starts++;
}

static void count_done(struct rs_call *c, enum rs_grpc_status st)
{
    dones++;
    done_status = st;
}

static const struct rs_method counting = { .path = "/t.S/M",
                                           .on_start = count_start,
                                           .on_done = count_done };

static void start_counting(void)
{
    start(0);
    starts = dones = 0;
    done_status = RS_GRPC_UNKNOWN;
    call->method = &counting;
    rs_stream_run(call); /* on_start */
    CU_ASSERT_EQUAL(starts, 1);
}

static void finished_call_reports_its_status_once(void)
{
    start_counting();
    rs_call_finish(call, RS_GRPC_NOT_FOUND, "gone");
    CU_ASSERT_EQUAL(call->state, RS_STREAM_TRAILERS_SENT);
    rs_call_finish(call, RS_GRPC_OK, NULL); /* ignored: the status is final */
    pump();
    rs_stream_close(call);
    CU_ASSERT_EQUAL(call->state, RS_STREAM_CLOSED);
    CU_ASSERT_FALSE(rs_call_is_done(call));
    rs_stream_run(call);
    rs_stream_run(call);
    CU_ASSERT_TRUE(rs_call_is_done(call));
    CU_ASSERT_EQUAL(dones, 1);
    CU_ASSERT_EQUAL(done_status, RS_GRPC_NOT_FOUND);
    CU_ASSERT_EQUAL(starts, 1);
    stop();
}

static void reset_before_trailers_is_cancelled(void)
{
    struct iovec msg = { (void *)"x", 1 };

    start_counting();
    CU_ASSERT_EQUAL(rs_call_send(call, &msg, 1), 0);
    rs_call_finish(call, RS_GRPC_OK, NULL);
    CU_ASSERT_EQUAL(call->state, RS_STREAM_FINISHED); /* the message goes before the trailers */
    rs_stream_close(call);                            /* the client reset the stream */
    rs_stream_run(call);
    CU_ASSERT_EQUAL(dones, 1);
    CU_ASSERT_EQUAL(done_status, RS_GRPC_CANCELLED);
    CU_ASSERT_EQUAL(rs_call_send(call, &msg, 1), -ECANCELED);
    CU_ASSERT_EQUAL(rs_call_commit_begin(call), -ECANCELED);
    CU_ASSERT_EQUAL(rs_call_add_metadata(call, "x-a", "b", 1), -EALREADY);
    stop();
}

static void done_call_is_reaped_only_when_nothing_holds_it(void)
{
    start_counting();
    rs_stream_close(call);
    call->refs = 1; /* an I/O request still in flight */
    rs_stream_run(call);
    CU_ASSERT_TRUE(rs_call_is_done(call));
    CU_ASSERT_FALSE(rs_stream_reapable(call));
    CU_ASSERT_FALSE(rs_stream_maybe_reap(call));
    call->refs = 0;
    call->tx_framed = 5; /* bytes referenced by a sendmsg in flight */
    CU_ASSERT_FALSE(rs_stream_reapable(call));
    call->tx_framed = 0;
    CU_ASSERT_TRUE(rs_stream_maybe_reap(call));
    CU_ASSERT_TRUE(rs_list_linked(&conn.pending_link)); /* its rs_conn_run() will reap it */
    CU_ASSERT_EQUAL(dones, 1);
    stop();
}

int main(void)
{
    CU_TestInfo tests[] = {
        { "trailers-only response carries 40 metadata entries", trailers_only_carry_40_entries },
        { "response headers and trailers carry every entry",
          headers_and_trailers_carry_every_entry },
        { "metadata bounded by the client's MAX_HEADER_LIST_SIZE",
          bounded_by_client_max_header_list },
        { "metadata bounded without a client setting", bounded_without_client_setting },
        { "metadata after the trailers is refused", metadata_after_trailers_is_refused },
        { "a finished call reports its status once", finished_call_reports_its_status_once },
        { "a reset before the trailers is CANCELLED", reset_before_trailers_is_cancelled },
        { "a done call is reaped only when nothing holds it",
          done_call_is_reaped_only_when_nothing_holds_it },
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        { "call", NULL, NULL, NULL, NULL, tests },
        CU_SUITE_INFO_NULL,
    };

    return rs_test_run(suites);
}
