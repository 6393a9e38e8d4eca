/* workers/call.c: one stream as a gRPC call: routing, the message pump between the receive
 * deframer and the handler, the send queue behind the nghttp2 data provider, and the
 * implementation of core/call.h. Handlers run only from rs_stream_run(), outside nghttp2.
 * Internal functions are rs_stream_*; rs_call_* are the handler API of core/call.h. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "core/log.h"
#include "proto/compress.h"
#include "workers/internal.h"

#define MAKE_NV(n, v, vl)                                                                 \
    {                                                                                     \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NO_COPY_NAME \
    }

struct rs_call *rs_stream_new(struct rs_conn *c, int32_t stream_id)
{
    const struct rs_config *cfg = &c->w->srv->cfg;
    struct rs_call *call = calloc(1, sizeof(*call));

    if (call == NULL)
        return NULL;
    call->conn = c;
    call->stream_id = stream_id;
    call->state = RS_STREAM_RECV_HEADERS;
    if (rs_budget_charge(&c->w->budget, &c->acct, sizeof(*call)) < 0) {
        free(call);
        return NULL;
    }
    call->born_ns = rs_mono_ns();
    rs_metric_add(&c->w->metrics.streams_opened, 1);
    call->charged = sizeof(*call);
    rs_deframer_init(&call->rx, cfg->max_msg);
    rs_chunkq_init(&call->txq, cfg->stream_buffer, &c->w->pool);
    rs_chunkq_set_budget(&call->txq, &c->w->budget, &c->acct);
    if (c->w->small.block_size != 0)
        rs_chunkq_set_small(&call->txq, &c->w->small);
    if (c->w->tiny.block_size != 0)
        rs_chunkq_set_tiny(&call->txq, &c->w->tiny);
    rs_list_init(&call->ready_link);
    rs_list_insert_tail(&c->calls, &call->link);
    return call;
}

/* Legal predecessors of each state, as bit masks of enum rs_stream_state. */
#define ST(x) (1u << (x))
static const unsigned legal_from[] = {
    [RS_STREAM_RECV_HEADERS] = 0,
    [RS_STREAM_OPEN] = ST(RS_STREAM_RECV_HEADERS),
    [RS_STREAM_FINISHED] = ST(RS_STREAM_OPEN),
    [RS_STREAM_TRAILERS_SENT] = ST(RS_STREAM_OPEN) | ST(RS_STREAM_FINISHED),
    [RS_STREAM_CLOSED] = ST(RS_STREAM_RECV_HEADERS) | ST(RS_STREAM_OPEN) | ST(RS_STREAM_FINISHED) |
                         ST(RS_STREAM_TRAILERS_SENT),
    [RS_STREAM_DONE] = ST(RS_STREAM_CLOSED),
};
#undef ST

void rs_stream_set_state(struct rs_call *call, enum rs_stream_state next)
{
    bool legal = (unsigned)next < sizeof(legal_from) / sizeof(legal_from[0]) &&
                 (legal_from[next] & (1u << call->state)) != 0;

    if (!legal) /* our bug: loud in release builds too, fatal in debug ones */
        rs_log_bug("stream %d: illegal state change %d -> %d", call->stream_id, (int)call->state,
                   (int)next);
    assert(legal);
    call->state = next;
}

void rs_stream_close(struct rs_call *call)
{
    if (call->state >= RS_STREAM_CLOSED)
        return;
    /* Only a status that went out in trailers reached the client; otherwise it saw a reset. */
    if (call->state != RS_STREAM_TRAILERS_SENT)
        call->status = RS_GRPC_CANCELLED;
    rs_stream_set_state(call, RS_STREAM_CLOSED);
    rs_stream_mark_ready(call);
}

/* The status is final (rs_call_finish ran, or the core ended the call). */
static bool finished(const struct rs_call *call)
{
    return call->state >= RS_STREAM_FINISHED;
}

/* The stream left the session: nothing may be submitted for it any more. */
static bool closed(const struct rs_call *call)
{
    return call->state >= RS_STREAM_CLOSED;
}

char *rs_call_strdup(struct rs_call *call, const uint8_t *p, size_t n)
{
    char *s;

    if (n < sizeof(call->str_inline) - call->str_used) {
        s = call->str_inline + call->str_used;
        call->str_used += n + 1;
    } else {
        s = malloc(n + 1);
        if (s == NULL)
            return NULL;
    }
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

void rs_call_strfree(struct rs_call *call, char *s)
{
    uintptr_t at = (uintptr_t)s, lo = (uintptr_t)call->str_inline;

    if (at - lo >= sizeof(call->str_inline)) /* also when below: the difference wraps */
        free(s);
}

static void free_meta(struct rs_meta *m, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(m[i].name);
        free(m[i].value);
    }
    free(m);
}

#define RS_ERRLOG_PER_S 20u /* server-error warn lines per worker per second */

/* Statuses that mean the server failed the call (not the client's doing): logged at warn. */
static bool server_error(int status)
{
    return status == RS_GRPC_INTERNAL || status == RS_GRPC_DATA_LOSS ||
           status == RS_GRPC_RESOURCE_EXHAUSTED;
}

/* At most RS_ERRLOG_PER_S server-error lines per worker per second; true if this one may go
 * out. The ones left out are counted into the next line that does. */
static bool errlog_admit(struct rs_worker *w)
{
    uint64_t now_s = rs_now_ms() / 1000;

    if (now_s != w->errlog_s) {
        w->errlog_s = now_s;
        w->errlog_n = 0;
    }
    if (w->errlog_n >= RS_ERRLOG_PER_S) {
        w->errlog_dropped++;
        return false;
    }
    w->errlog_n++;
    return true;
}

/* The peer's "ip:port", looked up once per connection (only the access log needs it). */
static const char *conn_peer(struct rs_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN];

    if (c->peer[0] != '\0')
        return c->peer;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(c->peer, sizeof(c->peer), "-");
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)&ss;

        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", host, ntohs(s6->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)&ss;

        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(c->peer, sizeof(c->peer), "%s:%u", host, ntohs(s4->sin_port));
    } else {
        snprintf(c->peer, sizeof(c->peer), "-");
    }
    return c->peer;
}

bool rs_call_access_logged(const struct rs_call *call)
{
    return call->conn->w->srv->cfg.access_log;
}

void rs_call_set_log_name(struct rs_call *call, const char *name, size_t len)
{
    if (!call->conn->w->srv->cfg.access_log || call->log_name != NULL)
        return;
    call->log_name = strndup(name, len); /* NULL when out of memory: the line says "-" */
}

/* A gRPC call ended: counted for /metrics; one access-log line with --access-log; logged at
 * warn when the server failed it (INTERNAL, DATA_LOSS, RESOURCE_EXHAUSTED; rate-limited), at
 * info when it failed otherwise, at debug always. */
static void call_ended(struct rs_call *call)
{
    struct rs_worker *w = call->conn->w;
    bool set = (call->flags & RS_CALL_F_STATUS) != 0;
    int status = set ? (int)call->status : RS_GRPC_CANCELLED;
    enum rs_log_level level = status == RS_GRPC_OK ? RS_LOG_DEBUG : RS_LOG_INFO;

    rs_metrics_call(w, call, status);
    if (w->srv->cfg.access_log)
        rs_log_access("%s %s name=%s %s in=%llu out=%llu %.3fms%s%s%s", conn_peer(call->conn),
                      call->path != NULL ? call->path : "-",
                      call->log_name != NULL ? call->log_name : "-", rs_grpc_status_name(status),
                      (unsigned long long)call->bytes_in, (unsigned long long)call->bytes_out,
                      (double)(rs_mono_ns() - call->born_ns) / 1e6,
                      set && call->status_msg != NULL ? " \"" : "",
                      set && call->status_msg != NULL ? call->status_msg : "",
                      set && call->status_msg != NULL ? "\"" : "");
    if (set && server_error(status) && rs_log_enabled(RS_LOG_WARN)) {
        if (!errlog_admit(w))
            return;
        if (w->errlog_dropped > 0) {
            rs_log_warn("worker %u: %u more server-error lines were left out (at most %u a "
                        "second)",
                        w->id, w->errlog_dropped, RS_ERRLOG_PER_S);
            w->errlog_dropped = 0;
        }
        level = RS_LOG_WARN;
    }
    if (!rs_log_enabled(level))
        return;
    rs_log(level, "worker %u conn %u: call %s: %s%s%s%s (in %llu bytes, out %llu bytes, %.3f ms)",
           w->id, call->conn->slot, call->path != NULL ? call->path : "-",
           rs_grpc_status_name(status), set && call->status_msg != NULL ? " \"" : "",
           set ? (call->status_msg != NULL ? call->status_msg : "")
               : " (the stream closed first: client cancel or connection lost)",
           set && call->status_msg != NULL ? "\"" : "", (unsigned long long)call->bytes_in,
           (unsigned long long)call->bytes_out, (double)(rs_mono_ns() - call->born_ns) / 1e6);
}

void rs_stream_free(struct rs_call *call)
{
    struct rs_conn *c = call->conn;
    size_t i;

    assert(rs_stream_reapable(call));
    if (call->route == RS_ROUTE_GRPC)
        call_ended(call);
    rs_metric_add(&c->w->metrics.streams_closed, 1);
    rs_list_unlink(&call->link);
    rs_list_unlink(&call->ready_link);
    rs_deframer_free(&call->rx);
    rs_chunkq_free(&call->txq);
    free(call->inflated);
    call->inflated = NULL;
    call->inflated_len = 0;
    rs_stream_rx_account(call); /* releases: nothing is buffered any more */
    rs_budget_release(&c->w->budget, &c->acct, call->charged + call->bufs_charged);
    for (i = 0; i < call->nmeta; i++) {
        rs_call_strfree(call, call->meta[i].name);
        rs_call_strfree(call, call->meta[i].value);
    }
    if (call->meta != call->meta_inline)
        free(call->meta);
    free_meta(call->resp_meta, call->nresp_meta);
    rs_call_strfree(call, call->path);
    rs_call_strfree(call, call->method_name);
    rs_call_strfree(call, call->content_type);
    rs_call_strfree(call, call->grpc_encoding);
    free(call->status_msg);
    if (call->state_mem != call->state_inline)
        free(call->state_mem);
    free(call->http_owned);
    free(call->log_name);
    free(call);
    if (c->flags & RS_CONN_F_CLOSING)
        rs_worker_mark_pending(c->w, c);
}

bool rs_stream_reapable(const struct rs_call *call)
{
    return call->state == RS_STREAM_DONE && call->refs == 0 && call->tx_framed == 0;
}

bool rs_stream_maybe_reap(struct rs_call *call)
{
    if (!rs_stream_reapable(call))
        return false;
    rs_worker_mark_pending(call->conn->w, call->conn); /* its rs_conn_run() reaps it */
    return true;
}

void rs_stream_mark_ready(struct rs_call *call)
{
    if (!rs_list_linked(&call->ready_link))
        rs_list_insert_tail(&call->conn->ready, &call->ready_link);
    rs_worker_mark_pending(call->conn->w, call->conn);
}

static nghttp2_session *h2_of(const struct rs_call *call)
{
    return call->conn->h2;
}

/* ---- plain HTTP answers (GET /, /healthz, protocol refusals) ---------------------------- */

static ssize_t http_body_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                              uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct rs_call *call = source->ptr;
    size_t n = call->http_len - call->http_off;

    if (n > length)
        n = length;
    memcpy(buf, call->http_body + call->http_off, n);
    call->http_off += n;
    if (call->http_off == call->http_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Submits the plain HTTP answer the route chose: OPEN -> TRAILERS_SENT. */
static void http_submit(struct rs_call *call)
{
    nghttp2_nv nva[3];
    size_t n = 0;
    nghttp2_data_provider prd;
    bool head = call->method_name != NULL && strcmp(call->method_name, "HEAD") == 0;

    nva[n++] = (nghttp2_nv)MAKE_NV(":status", call->http_status, strlen(call->http_status));
    if (call->http_owned != NULL) /* the one generated answer: /metrics */
        nva[n++] =
                (nghttp2_nv)MAKE_NV("content-type", "text/plain; version=0.0.4; charset=utf-8", 40);
    else
        nva[n++] = (nghttp2_nv)MAKE_NV("content-type", "text/plain; charset=utf-8", 25);
    if (call->http_allow != NULL)
        nva[n++] = (nghttp2_nv)MAKE_NV("allow", call->http_allow, strlen(call->http_allow));
    prd.source.ptr = call;
    prd.read_callback = http_body_read;
    rs_stream_set_state(call, RS_STREAM_TRAILERS_SENT);
    if (nghttp2_submit_response(h2_of(call), call->stream_id, nva, n,
                                head || call->http_len == 0 ? NULL : &prd) != 0)
        nghttp2_submit_rst_stream(h2_of(call), NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_INTERNAL_ERROR);
    rs_worker_mark_pending(call->conn->w, call->conn);
}

/* Chooses a plain HTTP answer. It goes once the request has ended (END_STREAM), as nghttpd and
 * h2o answer: until then every protocol error the client makes on the stream still finds it
 * open and gets its RST_STREAM or GOAWAY. CONNECT never ends its request (it asks for a
 * tunnel), so its refusal goes at once. */
static void http_answer(struct rs_call *call, const char *status, const char *body,
                        const char *allow)
{
    call->route = RS_ROUTE_HTTP;
    call->http_status = status;
    call->http_allow = allow;
    call->http_body = body;
    call->http_len = strlen(body);
    if ((call->flags & RS_CALL_F_REMOTE_END) ||
        (call->method_name != NULL && strcmp(call->method_name, "CONNECT") == 0))
        http_submit(call);
}

/* ---- routing -------------------------------------------------------------------------- */

/* grpc-timeout expired: the client is told DEADLINE_EXCEEDED (trailers, then RST_STREAM
 * CANCEL), the handler through on_done. */
#define RS_DEADLINE_GRACE_NS (200 * 1000000ull)

/* The grace after a deadline is over and the stream still stands: the client is not reading
 * what is queued ahead of the trailers, so reset it. */
static void on_deadline_grace(struct rs_call *call, void *arg, int res)
{
    if (res != 0 || closed(call))
        return;
    nghttp2_submit_rst_stream(h2_of(call), NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    rs_worker_mark_pending(call->conn->w, call->conn);
}

static void on_deadline(struct rs_call *call, void *arg, int res)
{
    if (res != 0 || closed(call))
        return;
    if (call->flags & RS_CALL_F_COMMIT) {
        /* The handler is making its work visible: its own status will say whether it did. */
        call->flags |= RS_CALL_F_DEADLINE_OWED;
        return;
    }
    call->flags |= RS_CALL_F_DEADLINE;
    if (call->state == RS_STREAM_FINISHED) {
        /* The trailers are not out yet: they report the deadline instead. */
        call->status = RS_GRPC_DEADLINE_EXCEEDED;
        free(call->status_msg);
        call->status_msg = strdup("deadline exceeded");
    } else if (!finished(call))
        rs_call_finish(call, RS_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    /* With nothing queued the trailers go now and RST_STREAM(CANCEL) follows them
     * (on_frame_send). Queued data goes first, so a reading client still gets the status in
     * the trailers, not a bare reset; one that does not read is reset after a short grace. */
    if (rs_chunkq_used(&call->txq) > 0 &&
        rs_call_timer(call, RS_DEADLINE_GRACE_NS, on_deadline_grace, NULL) < 0)
        on_deadline_grace(call, NULL, 0);
}

static const struct rs_method *find_method(const struct rs_server *srv, const char *path,
                                           const struct rs_service **svc_out)
{
    size_t i, j;

    for (i = 0; i < srv->nservices; i++) {
        const struct rs_service *svc = srv->services[i];

        for (j = 0; j < svc->nmethods; j++) {
            if (strcmp(svc->methods[j].path, path) == 0) {
                *svc_out = svc;
                return &svc->methods[j];
            }
        }
    }
    return NULL;
}

/* gRPC paths look like /package.Service/Method. Any string, also "" (no :path). */
static bool grpc_shaped(const char *path)
{
    const char *slash;

    if (path[0] != '/')
        return false;
    slash = strchr(path + 1, '/');
    return slash != NULL && slash > path + 1 && slash[1] != '\0' && strchr(slash + 1, '/') == NULL;
}

static bool grpc_content_type(const char *ct)
{
    size_t n = strlen("application/grpc");

    return ct != NULL && strncmp(ct, "application/grpc", n) == 0 &&
           (ct[n] == '\0' || ct[n] == '+' || ct[n] == ';');
}

void rs_stream_route(struct rs_call *call)
{
    const struct rs_server *srv = call->conn->w->srv;
    const char *path = call->path != NULL ? call->path : "";
    const char *method = call->method_name != NULL ? call->method_name : "";
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    const struct rs_service *svc = NULL;
    const struct rs_method *m;

    rs_stream_set_state(call, RS_STREAM_OPEN);
    if (call->flags & RS_CALL_F_FAILED) {
        /* The header list passed SETTINGS_MAX_HEADER_LIST_SIZE: a gRPC client gets a status it
         * can show, anything else 431. */
        if (strcmp(method, "POST") == 0 && grpc_content_type(call->content_type)) {
            call->route = RS_ROUTE_GRPC;
            rs_call_finishf(call, RS_GRPC_RESOURCE_EXHAUSTED,
                            "request metadata larger than %u bytes (SETTINGS_MAX_HEADER_LIST_SIZE)",
                            srv->cfg.max_header_list);
        } else {
            http_answer(call, "431", "request header fields too large\n", NULL);
        }
        return;
    }
    if (strcmp(method, "CONNECT") == 0) {
        /* No tunnels here; nghttp2 lets CONNECT through without :path or :scheme. */
        http_answer(call, "405", "CONNECT is not supported\n", "GET, HEAD, POST");
        return;
    }
    if (call->path == NULL || call->method_name == NULL) {
        /* nghttp2 rejects these itself today; never route on a missing pseudo-header. */
        http_answer(call, "400", "missing :method or :path\n", NULL);
        return;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/healthz") == 0) {
        if (!get)
            http_answer(call, "405", "method not allowed\n", "GET, HEAD");
        else if (path[1] == '\0')
            http_answer(call, "200",
                        "ringstream: a streaming gRPC server (HTTP/2, io_uring). "
                        "Services speak gRPC over POST; /healthz answers ok.\n",
                        NULL);
        else
            http_answer(call, "200", "ok\n", NULL);
        return;
    }
    if (srv->cfg.metrics && strcmp(path, "/metrics") == 0) {
        size_t len;

        if (!get)
            http_answer(call, "405", "method not allowed\n", "GET, HEAD");
        else if ((call->http_owned = rs_metrics_render(srv, &len)) == NULL)
            http_answer(call, "503", "out of memory\n", NULL);
        else
            http_answer(call, "200", call->http_owned, NULL);
        return;
    }
    m = find_method(srv, path, &svc);
    if (strcmp(method, "POST") != 0) {
        if (m != NULL || grpc_shaped(path))
            http_answer(call, "405", "gRPC methods are called with POST\n", "POST");
        else
            http_answer(call, "404", "not found\n", NULL);
        return;
    }
    if (!grpc_content_type(call->content_type)) {
        /* gRPC's HTTP/2 protocol: a server SHOULD answer 415 to a foreign content-type. */
        http_answer(call, "415", "content-type must be application/grpc\n", NULL);
        return;
    }
    call->route = RS_ROUTE_GRPC;
    if (m == NULL) {
        rs_call_finishf(call, RS_GRPC_UNIMPLEMENTED, "unknown %s: %s",
                        grpc_shaped(path) ? "method" : "path", path);
        return;
    }
    call->method = m;
    call->service = svc;
    if (call->grpc_encoding != NULL && strcmp(call->grpc_encoding, "identity") != 0) {
        if (strcmp(call->grpc_encoding, "gzip") != 0) {
            call->method = NULL;
            rs_call_finishf(call, RS_GRPC_UNIMPLEMENTED,
                            "grpc-encoding %s is not supported (identity, gzip are)",
                            call->grpc_encoding);
            return;
        }
        call->req_gzip = true;
    }
    if (m->state_size > 0) {
        /* The call was calloc'ed: a small state is zeroed already and needs no malloc. */
        if (rs_stream_charge(call, m->state_size) < 0)
            call->state_mem = NULL;
        else if (m->state_size <= sizeof(call->state_inline))
            call->state_mem = call->state_inline;
        else
            call->state_mem = calloc(1, m->state_size);
        if (call->state_mem == NULL) {
            call->method = NULL;
            rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED, "server out of memory");
            return;
        }
    }
    if (call->timeout_ns > 0 &&
        rs_call_timer(call, (uint64_t)call->timeout_ns, on_deadline, NULL) < 0) {
        call->method = NULL;
        rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED, "no timer for grpc-timeout");
        return;
    }
    rs_metrics_started(call->conn->w, call);
}

/* ---- the send path -------------------------------------------------------------------- */

/* Entries of a header block built on the stack; more metadata than fits takes a malloc. */
#define RS_NVA_LOCAL 8

/* An array of |fixed| + the response metadata entries, the metadata already at the end: |local|
 * (RS_NVA_LOCAL entries, the caller's) when they fit, else owned. Release with nva_free().
 * NULL when out of memory. */
static nghttp2_nv *nva_with_meta(const struct rs_call *call, size_t fixed, nghttp2_nv *local)
{
    nghttp2_nv *nva = fixed + call->nresp_meta <= RS_NVA_LOCAL
                              ? local
                              : malloc((fixed + call->nresp_meta) * sizeof(*nva));
    size_t i;

    if (nva == NULL)
        return NULL;
    for (i = 0; i < call->nresp_meta; i++)
        nva[fixed + i] =
                (nghttp2_nv){ (uint8_t *)call->resp_meta[i].name,
                              (uint8_t *)call->resp_meta[i].value, strlen(call->resp_meta[i].name),
                              call->resp_meta[i].value_len, NGHTTP2_NV_FLAG_NONE };
    return nva;
}

static void nva_free(nghttp2_nv *nva, nghttp2_nv *local)
{
    if (nva != local)
        free(nva);
}

/* A gRPC status code as text: "0".."16" without printf. */
static void status_text(char out[4], enum rs_grpc_status status)
{
    unsigned v = (unsigned)status, i = 0;

    if (v > 99) { /* not a status gRPC defines: as it always was */
        snprintf(out, 4, "%d", (int)status);
        return;
    }
    if (v >= 10)
        out[i++] = (char)('0' + v / 10);
    out[i++] = (char)('0' + v % 10);
    out[i] = '\0';
}

/* The trailers after the messages: FINISHED -> TRAILERS_SENT. Returns 0 or an nghttp2 error. */
static int submit_trailers(struct rs_call *call)
{
    nghttp2_nv local[RS_NVA_LOCAL];
    nghttp2_nv *nva = nva_with_meta(call, 2, local), *p;
    char code[4];
    int rv;

    if (nva == NULL)
        return NGHTTP2_ERR_NOMEM;
    status_text(code, call->status);
    p = nva + (call->status_msg != NULL ? 0 : 1);
    p[0] = (nghttp2_nv)MAKE_NV("grpc-status", code, strlen(code));
    if (call->status_msg != NULL)
        p[1] = (nghttp2_nv)MAKE_NV("grpc-message", call->status_msg, strlen(call->status_msg));
    rv = nghttp2_submit_trailer(h2_of(call), call->stream_id, p,
                                (size_t)(nva + 2 - p) + call->nresp_meta);
    nva_free(nva, local);
    if (rv == 0)
        rs_stream_set_state(call, RS_STREAM_TRAILERS_SENT);
    return rv;
}

static ssize_t data_read(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct rs_call *call = source->ptr;
    /* Shutting down: nothing more of the queue goes out, the trailers go next. */
    size_t avail =
            (call->flags & RS_CALL_F_SHUTDOWN) ? 0 : rs_chunkq_used(&call->txq) - call->tx_framed;
    size_t n = avail < length ? avail : length;

    if (n > 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == avail && call->state == RS_STREAM_FINISHED) {
        /* Everything queued fits in this frame: end the body, trailers close the stream. */
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (submit_trailers(call) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->flags |= RS_CALL_F_DEFERRED;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

const nghttp2_data_provider rs_stream_data_provider = { { 0 }, data_read };

int rs_stream_frame_data(struct rs_call *call, const uint8_t *framehd, size_t length)
{
    struct rs_conn *c = call->conn;
    size_t free_iov, got = 0, k, i;

    if (c->ntxrefs == RS_CONN_TXREFS || RS_CONN_OUTBUF - c->outlen < 9 ||
        c->iovcnt + 2 > RS_CONN_IOV)
        return NGHTTP2_ERR_WOULDBLOCK;
    free_iov = (size_t)(RS_CONN_IOV - c->iovcnt - 1);
    k = length == 0 ? 0
                    : rs_chunkq_peek(&call->txq, call->tx_framed, length, &c->iov[c->iovcnt + 1],
                                     free_iov);
    for (i = 0; i < k; i++)
        got += c->iov[c->iovcnt + 1 + i].iov_len;
    if (got < length)
        return NGHTTP2_ERR_WOULDBLOCK; /* out of iovecs: the next sendmsg takes it */
    if (c->out == NULL && (c->out = rs_worker_outbuf_get(c->w)) == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    memcpy(c->out + c->outlen, framehd, 9);
    c->iov[c->iovcnt].iov_base = c->out + c->outlen;
    c->iov[c->iovcnt].iov_len = 9;
    c->outlen += 9;
    c->iovcnt += 1 + (int)k;
    if (length > 0) {
        c->txrefs[c->ntxrefs].call = call;
        c->txrefs[c->ntxrefs].len = length;
        c->ntxrefs++;
        call->tx_framed += length;
        call->bytes_out += length;
    }
    return 0;
}

static int submit_response_headers(struct rs_call *call)
{
    nghttp2_nv local[RS_NVA_LOCAL];
    nghttp2_nv *nva = nva_with_meta(call, 4, local), *p;
    nghttp2_data_provider prd = rs_stream_data_provider;
    int rv;

    if (nva == NULL)
        return NGHTTP2_ERR_NOMEM;
    p = nva + (call->accept_gzip ? 0 : 1);
    p[0] = (nghttp2_nv)MAKE_NV(":status", "200", 3);
    p[1] = (nghttp2_nv)MAKE_NV("content-type", "application/grpc", 16);
    p[2] = (nghttp2_nv)MAKE_NV("grpc-accept-encoding", "identity,gzip", 13);
    if (call->accept_gzip)
        p[3] = (nghttp2_nv)MAKE_NV("grpc-encoding", "gzip", 4);
    prd.source.ptr = call;
    rv = nghttp2_submit_response(h2_of(call), call->stream_id, p,
                                 (size_t)(nva + 4 - p) + call->nresp_meta, &prd);
    nva_free(nva, local);
    /* nghttp2 copied the headers; what is added from now on goes into the trailers */
    free_meta(call->resp_meta, call->nresp_meta);
    call->resp_meta = NULL;
    call->nresp_meta = 0;
    call->resp_meta_bytes = 0;
    if (rv == 0)
        call->flags |= RS_CALL_F_RESP_SUBMITTED;
    return rv;
}

/* A trailers-only response (an immediate status): FINISHED -> TRAILERS_SENT. */
static void submit_trailers_only(struct rs_call *call)
{
    nghttp2_nv local[RS_NVA_LOCAL];
    nghttp2_nv *nva = nva_with_meta(call, 5, local), *p;
    char code[4];
    int rv = NGHTTP2_ERR_NOMEM;

    if (nva != NULL) {
        status_text(code, call->status);
        p = nva + (call->status_msg != NULL ? 0 : 1);
        p[0] = (nghttp2_nv)MAKE_NV(":status", "200", 3);
        p[1] = (nghttp2_nv)MAKE_NV("content-type", "application/grpc", 16);
        p[2] = (nghttp2_nv)MAKE_NV("grpc-accept-encoding", "identity,gzip", 13);
        p[3] = (nghttp2_nv)MAKE_NV("grpc-status", code, strlen(code));
        if (call->status_msg != NULL)
            p[4] = (nghttp2_nv)MAKE_NV("grpc-message", call->status_msg, strlen(call->status_msg));
        rv = nghttp2_submit_response(h2_of(call), call->stream_id, p,
                                     (size_t)(nva + 5 - p) + call->nresp_meta, NULL);
        nva_free(nva, local);
    }
    call->flags |= RS_CALL_F_RESP_SUBMITTED;
    if (rv == 0) {
        rs_stream_set_state(call, RS_STREAM_TRAILERS_SENT);
    } else {
        /* No memory for the status: the client sees the stream reset instead. */
        nghttp2_submit_rst_stream(h2_of(call), NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
}

static void kick(struct rs_call *call)
{
    if ((call->flags & RS_CALL_F_DEFERRED) && !closed(call)) {
        call->flags &= ~RS_CALL_F_DEFERRED;
        nghttp2_session_resume_data(h2_of(call), call->stream_id);
    }
    rs_worker_mark_pending(call->conn->w, call->conn);
}

/* Gives the stream window back for bytes nobody will hold any more. */
static void credit(struct rs_call *call)
{
    if (call->uncredited > 0 && !closed(call)) {
        nghttp2_session_consume_stream(h2_of(call), call->stream_id, call->uncredited);
        rs_worker_mark_pending(call->conn->w, call->conn);
    }
    call->uncredited = 0;
}

/* Credits what the handler consumed, keeping back the bytes of a partly received message: they
 * sit in memory until it is whole and consumed. Only a message of more than half the window is
 * credited as it lands, since nghttp2 holds back up to half a window of credit (it sends
 * WINDOW_UPDATE at half) and such a message could otherwise never complete. */
static void credit_consumed(struct rs_call *call)
{
    size_t partial = rs_deframer_buffered(&call->rx), need = 0, keep;

    /* |buf| is NULL while nothing is buffered: no pointer is formed from it then (UB, found by
     * tests/fuzz/fuzz_conn.c under UBSan). */
    if (partial >= RS_GRPC_PREFIX_LEN) {
        const uint8_t *p = call->rx.buf + call->rx.head;

        need = RS_GRPC_PREFIX_LEN +
               ((size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | (size_t)p[4]);
    }
    /* half of the smallest window nghttp2 may hold the stream to (it shrinks with the budget) */
    keep = need <= call->conn->window_floor / 2 ? partial : 0;
    if (keep > call->uncredited)
        keep = call->uncredited;
    call->uncredited -= keep;
    credit(call);
    call->uncredited += keep;
}

int rs_call_send(struct rs_call *call, const struct iovec *iov, int iovcnt)
{
    return rs_call_send_ex(call, iov, iovcnt, 0);
}

/* The send queue could not take a block: the budget's refusals are -ENOMEM to handlers (the
 * worker's memory for this peer is spent), logged at most once a second. */
static int budget_refusal(struct rs_call *call, int ret)
{
    if (ret == -ENOBUFS || ret == -EDQUOT) {
        rs_worker_budget_note(call->conn->w, ret, "a send queue");
        ret = -ENOMEM;
    }
    return ret;
}

/* Would the blocks that |len| more bytes need pass the connection's share or the worker's
 * budget? Checked for a whole message before its first byte is queued, so a message is either
 * queued whole or refused (-ENOMEM) with nothing queued, never cut after its prefix. */
static int budget_admits(struct rs_call *call, size_t len)
{
    struct rs_worker *w = call->conn->w;
    size_t need =
            rs_chunkq_footprint_after(&call->txq, len) - rs_chunkq_footprint_after(&call->txq, 0);
    int ret;

    if (need == 0)
        return 0;
    ret = rs_budget_charge(&w->budget, &call->conn->acct, need);
    if (ret < 0)
        return budget_refusal(call, ret);
    rs_budget_release(&w->budget, &call->conn->acct, need);
    return 0;
}

/* Appends the 5-byte prefix of a |total|-byte message and the bytes of |iov|. Returns 0, or
 * -ENOMEM: with nothing queued when the prefix did not fit, else with the stream reset (half a
 * message is queued and nothing can follow it). */
static int queue_prefix_and(struct rs_call *call, const struct iovec *iov, int iovcnt,
                            bool compressed, size_t total)
{
    uint8_t prefix[RS_GRPC_PREFIX_LEN];
    uint8_t small[RS_POOL_SMALL_BLOCK];
    size_t off;
    int i, ret;

    /* A small message goes in with one append, prefix and body together: all or nothing, and
     * the queue sees its whole size, so it can take a small block. */
    if (RS_GRPC_PREFIX_LEN + total <= sizeof(small)) {
        rs_grpc_prefix_write(small, compressed, (uint32_t)total);
        off = RS_GRPC_PREFIX_LEN;
        for (i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len > 0)
                memcpy(small + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        ret = rs_chunkq_append(&call->txq, small, off);
        return ret < 0 ? budget_refusal(call, ret) : 0;
    }
    rs_grpc_prefix_write(prefix, compressed, (uint32_t)total);
    ret = rs_chunkq_append(&call->txq, prefix, sizeof(prefix));
    if (ret < 0)
        return budget_refusal(call, ret);
    for (i = 0; i < iovcnt; i++) {
        ret = rs_chunkq_append(&call->txq, iov[i].iov_base, iov[i].iov_len);
        if (ret < 0) {
            ret = budget_refusal(call, ret);
            call->flags |= RS_CALL_F_FAILED;
            rs_stream_set_state(call, RS_STREAM_FINISHED);
            nghttp2_submit_rst_stream(h2_of(call), NGHTTP2_FLAG_NONE, call->stream_id,
                                      NGHTTP2_INTERNAL_ERROR);
            rs_worker_mark_pending(call->conn->w, call->conn);
            return ret;
        }
    }
    return 0;
}

/* A message is queued: send the response headers first if needed, wake the data provider. */
static int queued(struct rs_call *call)
{
    rs_metrics_msg_out(call->conn->w, call);
    if (!(call->flags & RS_CALL_F_RESP_SUBMITTED)) {
        if (submit_response_headers(call) != 0)
            return -ENOMEM;
    }
    kick(call);
    return 0;
}

int rs_call_send_ex(struct rs_call *call, const struct iovec *iov, int iovcnt, unsigned flags)
{
    struct iovec ziov;
    uint8_t *zbuf = NULL;
    size_t total = 0, zlen;
    bool compress;
    int i, ret;

    if (finished(call))
        return -ECANCELED;
    for (i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (total > call->conn->w->srv->cfg.max_msg)
        return -EMSGSIZE;
    /* Admit a message only if the blocks it needs stay within the stream's capacity; an empty
     * queue takes any one message (up to max_msg), or a message bigger than the capacity could
     * never be sent. Compression only shrinks what is admitted here. */
    if (rs_chunkq_used(&call->txq) > 0 &&
        rs_chunkq_footprint_after(&call->txq, RS_GRPC_PREFIX_LEN + total) > call->txq.cap) {
        call->flags |= RS_CALL_F_WANT_WRITABLE;
        return -EAGAIN;
    }
    /* The response headers declare gzip whenever the client takes it, before the handler has
     * said which messages it compresses; a message sent plain just has its flag clear. */
    compress = (flags & RS_CALL_SEND_COMPRESS) && call->accept_gzip;
    /* gzip costs CPU by the bytes it reads: within the connection's and the worker's
     * compression budget the message is compressed, past it it goes plain (issue 15). */
    if (compress && !rs_call_compress_budget(call, total))
        compress = false;
    if (compress) {
        ret = rs_gzip_deflate(iov, iovcnt, &zbuf, &zlen);
        if (ret < 0)
            return ret;
        ziov.iov_base = zbuf;
        ziov.iov_len = zlen;
        iov = &ziov;
        iovcnt = 1;
        total = zlen;
    }
    ret = budget_admits(call, RS_GRPC_PREFIX_LEN + total);
    if (ret == 0)
        ret = queue_prefix_and(call, iov, iovcnt, compress, total);
    free(zbuf);
    if (ret < 0)
        return ret;
    return queued(call);
}

void *rs_call_buf_get(struct rs_call *call, size_t *cap)
{
    struct rs_worker *w = call->conn->w;
    struct rs_block *b;
    int ret;

    ret = rs_budget_charge(&w->budget, &call->conn->acct, w->pool.block_size);
    if (ret < 0) {
        rs_worker_budget_note(w, ret, "a send buffer");
        return NULL;
    }
    b = rs_pool_get(&w->pool);
    if (b == NULL) {
        rs_budget_release(&w->budget, &call->conn->acct, w->pool.block_size);
        return NULL;
    }
    call->bufs_charged += w->pool.block_size;
    *cap = w->pool.block_size - RS_BUF_HEADROOM;
    return b->data + RS_BUF_HEADROOM;
}

/* A block from rs_call_buf_get leaves the handler: its charge goes with it. */
static void buf_uncharge(struct rs_call *call)
{
    struct rs_worker *w = call->conn->w;

    call->bufs_charged -= w->pool.block_size;
    rs_budget_release(&w->budget, &call->conn->acct, w->pool.block_size);
}

int rs_call_charge(struct rs_call *call, size_t n)
{
    int ret = rs_stream_charge(call, n);

    if (ret < 0) {
        rs_worker_budget_note(call->conn->w, ret, "handler memory");
        return -ENOMEM;
    }
    return 0;
}

void rs_call_uncharge(struct rs_call *call, size_t n)
{
    assert(n <= call->charged - sizeof(*call));
    call->charged -= n;
    rs_budget_release(&call->conn->w->budget, &call->conn->acct, n);
}

int rs_stream_charge(struct rs_call *call, size_t n)
{
    int ret = rs_budget_charge(&call->conn->w->budget, &call->conn->acct, n);

    if (ret == 0)
        call->charged += n;
    return ret;
}

int rs_stream_rx_account(struct rs_call *call)
{
    struct rs_worker *w = call->conn->w;
    size_t now = call->rx.cap + call->inflated_len;
    int ret;

    if (now < call->rx_charged) {
        rs_budget_release(&w->budget, &call->conn->acct, call->rx_charged - now);
    } else if (now > call->rx_charged) {
        ret = rs_budget_charge(&w->budget, &call->conn->acct, now - call->rx_charged);
        if (ret < 0) {
            rs_worker_budget_note(w, ret, "a receive buffer");
            return ret;
        }
    }
    call->rx_charged = now;
    return 0;
}

static struct rs_block *buf_block(void *buf)
{
    return rs_container_of((uint8_t *)buf - RS_BUF_HEADROOM, struct rs_block, data);
}

void rs_call_buf_put(struct rs_call *call, void *buf)
{
    if (buf == NULL)
        return;
    rs_pool_put(&call->conn->w->pool, buf_block(buf));
    buf_uncharge(call);
}

int rs_call_send_buf(struct rs_call *call, const struct iovec *hdr, int hdrcnt, void *buf,
                     size_t len)
{
    return rs_call_send_bufs(call, hdr, hdrcnt, &buf, 1, len);
}

int rs_call_send_bufs(struct rs_call *call, const struct iovec *hdr, int hdrcnt, void *const *bufs,
                      size_t nbufs, size_t len)
{
    struct rs_block *b = nbufs > 0 ? buf_block(bufs[0]) : NULL;
    size_t bs = call->conn->w->pool.block_size, cap = bs - RS_BUF_HEADROOM, total = len, hlen;
    size_t i, rest;
    uint8_t *p;
    int j, ret;

    if (finished(call))
        return -ECANCELED;
    /* Every block but the last is full, the last holds the rest (at least one byte). */
    if (nbufs == 0 || len > nbufs * cap || (nbufs > 1 && len <= (nbufs - 1) * cap))
        return -EINVAL;
    for (j = 0; j < hdrcnt; j++)
        total += hdr[j].iov_len;
    hlen = RS_GRPC_PREFIX_LEN + total - len;
    if (total > call->conn->w->srv->cfg.max_msg)
        return -EMSGSIZE;
    if (hlen <= RS_BUF_HEADROOM) {
        /* The common case: prefix and headers go into the headroom of the first block. */
        if (rs_chunkq_used(&call->txq) > 0 &&
            rs_chunkq_footprint_after(&call->txq, 0) + nbufs * bs > call->txq.cap) {
            call->flags |= RS_CALL_F_WANT_WRITABLE;
            return -EAGAIN;
        }
        p = b->data + RS_BUF_HEADROOM - hlen;
        rs_grpc_prefix_write(p, false, (uint32_t)total);
        p += RS_GRPC_PREFIX_LEN;
        for (j = 0; j < hdrcnt; j++) {
            memcpy(p, hdr[j].iov_base, hdr[j].iov_len);
            p += hdr[j].iov_len;
        }
        b->head = RS_BUF_HEADROOM - hlen;
    } else {
        if (rs_chunkq_used(&call->txq) > 0 &&
            rs_chunkq_footprint_after(&call->txq, hlen) + nbufs * bs > call->txq.cap) {
            call->flags |= RS_CALL_F_WANT_WRITABLE;
            return -EAGAIN;
        }
        ret = budget_admits(call, hlen);
        if (ret == 0)
            ret = queue_prefix_and(call, hdr, hdrcnt, false, total);
        if (ret < 0)
            return ret;
        b->head = RS_BUF_HEADROOM;
    }
    /* Each block's charge moves from the handler to the queue: the same bytes, never over. */
    for (i = 0, rest = len; i < nbufs; i++, rest -= cap) {
        b = buf_block(bufs[i]);
        if (i > 0)
            b->head = RS_BUF_HEADROOM;
        b->tail = RS_BUF_HEADROOM + (rest < cap ? rest : cap);
        buf_uncharge(call);
        ret = rs_chunkq_append_block(&call->txq, b);
        assert(ret == 0);
    }
    return queued(call);
}

bool rs_call_send_idle(const struct rs_call *call)
{
    return rs_chunkq_used(&call->txq) == 0;
}

void rs_call_want_writable(struct rs_call *call)
{
    call->flags |= RS_CALL_F_WANT_WRITABLE;
    if (rs_chunkq_used(&call->txq) == 0)
        rs_stream_mark_ready(call); /* already writable: on_writable on the next turn */
}

size_t rs_call_send_room(const struct rs_call *call)
{
    size_t n = rs_chunkq_admits(&call->txq);

    return n > RS_GRPC_PREFIX_LEN ? n - RS_GRPC_PREFIX_LEN : 0;
}

void rs_call_finish(struct rs_call *call, enum rs_grpc_status status, const char *msg)
{
    char enc[1024];
    ssize_t n;

    if (finished(call))
        return;
    call->flags &= ~(RS_CALL_F_COMMIT | RS_CALL_F_DEADLINE_OWED);
    rs_stream_set_state(call, RS_STREAM_FINISHED);
    call->status = status;
    call->flags |= RS_CALL_F_STATUS;
    if (msg != NULL && msg[0] != '\0') {
        n = rs_grpc_pct_encode(msg, strlen(msg), enc, sizeof(enc));
        if (n < 0) /* too long for a header we want to send: cut the message, keep the code */
            n = rs_grpc_pct_encode(msg, 200, enc, sizeof(enc));
        if (n >= 0)
            call->status_msg = strdup(enc);
    }
    /* Input from now on is discarded; what is buffered and not held goes now. */
    if (!(call->flags & RS_CALL_F_HELD))
        rs_deframer_free(&call->rx);
    rs_stream_rx_account(call);
    credit(call);
    if (!(call->flags & RS_CALL_F_RESP_SUBMITTED))
        submit_trailers_only(call);
    kick(call);
}

void rs_stream_shutdown(struct rs_call *call)
{
    if (call->route != RS_ROUTE_GRPC || closed(call) || call->state == RS_STREAM_TRAILERS_SENT ||
        (call->flags & RS_CALL_F_COMMIT))
        return;
    call->flags |= RS_CALL_F_SHUTDOWN;
    if (call->state == RS_STREAM_FINISHED) {
        /* The handler's status waits behind queued data that will not go out now: a
         * truncated response must not claim it. */
        call->status = RS_GRPC_UNAVAILABLE;
        free(call->status_msg);
        call->status_msg = strdup("server shutting down");
        if (!(call->flags & RS_CALL_F_RESP_SUBMITTED))
            submit_trailers_only(call);
        kick(call);
    } else {
        rs_call_finish(call, RS_GRPC_UNAVAILABLE, "server shutting down");
    }
    /* A stream stalled by flow control (a client that stopped reading) never gets its data
     * provider asked again, so the trailers would wait for a window that does not open: they
     * go now, after the DATA already framed (HEADERS are not flow-controlled). nghttp2 drops
     * the stalled DATA once the stream is closed. */
    if (call->state == RS_STREAM_FINISHED && (call->flags & RS_CALL_F_RESP_SUBMITTED) &&
        !(call->flags & RS_CALL_F_DEFERRED) &&
        (nghttp2_session_get_stream_remote_window_size(h2_of(call), call->stream_id) <= 0 ||
         nghttp2_session_get_remote_window_size(h2_of(call)) <= 0) &&
        submit_trailers(call) != 0)
        nghttp2_submit_rst_stream(h2_of(call), NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    rs_stream_mark_ready(call);
}

void rs_call_finishf(struct rs_call *call, enum rs_grpc_status status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rs_call_finish(call, status, msg);
}

void rs_stream_fail(struct rs_call *call, enum rs_grpc_status status, const char *msg)
{
    rs_conn_glitch(call->conn, "stream failed by the server");
    call->flags |= RS_CALL_F_FAILED;
    rs_call_finish(call, status, msg);
    rs_stream_mark_ready(call);
}

/* ---- the message pump ------------------------------------------------------------------ */

/* The handler is done with its message: a decompressed copy, or a view into the deframer. */
static void release_held(struct rs_call *call)
{
    call->flags &= ~RS_CALL_F_HELD;
    if (call->last_compressed) {
        free(call->inflated);
        call->inflated = NULL;
        call->inflated_len = 0;
    } else {
        rs_deframer_pop(&call->rx);
    }
    rs_stream_rx_account(call); /* only shrinks: cannot fail */
}

/* Bytes the client may still send on this stream before it needs a WINDOW_UPDATE: while the
 * handler holds a message nothing is credited, so this is all that can land meanwhile. */
static size_t window_left(const struct rs_call *call)
{
    int32_t win, used;

    if (call->flags & RS_CALL_F_REMOTE_END)
        return 0;
    win = nghttp2_session_get_stream_effective_local_window_size(h2_of(call), call->stream_id);
    used = nghttp2_session_get_stream_effective_recv_data_length(h2_of(call), call->stream_id);
    if (win < 0 || used < 0 || win <= used)
        return 0;
    return (size_t)(win - used);
}

/* The receive side of a stream could not be charged: the peer's connection holds its share
 * (or the worker its budget). */
static void budget_finish(struct rs_call *call)
{
    struct rs_worker *w = call->conn->w;

    rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED,
                   w->budget.used >= w->budget.limit - w->budget.limit / 8
                           ? "server memory budget exhausted"
                           : "connection over its memory share");
    rs_stream_rx_account(call);
}

static void pump_messages(struct rs_call *call)
{
    const struct rs_config *cfg = &call->conn->w->srv->cfg;
    struct rs_grpc_msg m;
    int r;

    while (!(call->flags & RS_CALL_F_HELD) && !finished(call)) {
        r = rs_deframer_next(&call->rx, window_left(call), &m);
        if (r == 0)
            break;
        if (r == -EMSGSIZE) {
            rs_call_finishf(call, RS_GRPC_RESOURCE_EXHAUSTED,
                            "received message larger than max (%zu vs. %zu)", m.len, cfg->max_msg);
            return;
        }
        if (r < 0) {
            rs_call_finish(call, r == -ENOMEM ? RS_GRPC_RESOURCE_EXHAUSTED : RS_GRPC_INTERNAL,
                           r == -ENOMEM ? "server out of memory" : "bad message prefix flag");
            return;
        }
        call->bytes_in += RS_GRPC_PREFIX_LEN + m.len;
        rs_metrics_msg_in(call->conn->w, call);
        /* Making room for what may land while the handler holds the message can grow the
         * buffer: it is charged like any other receive memory. */
        if (rs_stream_rx_account(call) < 0) {
            rs_deframer_pop(&call->rx);
            budget_finish(call);
            return;
        }
        call->last_compressed = m.compressed;
        if (m.compressed) {
            size_t len;
            int ret;

            if (!call->req_gzip) {
                rs_deframer_pop(&call->rx);
                rs_call_finish(call, RS_GRPC_INTERNAL, "compressed message without grpc-encoding");
                return;
            }
            /* Inflation stops at the maximum size: a bomb is never inflated in full. */
            ret = rs_gzip_inflate(m.data, m.len, cfg->max_msg, &call->inflated, &len);
            rs_deframer_pop(&call->rx);
            if (ret < 0) {
                if (ret == -EMSGSIZE)
                    rs_call_finishf(call, RS_GRPC_RESOURCE_EXHAUSTED,
                                    "decompressed message larger than max (%zu)", cfg->max_msg);
                else
                    rs_call_finish(
                            call, ret == -ENOMEM ? RS_GRPC_RESOURCE_EXHAUSTED : RS_GRPC_INTERNAL,
                            ret == -ENOMEM ? "server out of memory" : "corrupt gzip message");
                return;
            }
            call->inflated_len = len;
            if (rs_stream_rx_account(call) < 0) {
                free(call->inflated);
                call->inflated = NULL;
                call->inflated_len = 0;
                budget_finish(call);
                return;
            }
            call->flags |= RS_CALL_F_HELD | RS_CALL_F_IN_CALLBACK;
            call->method->on_message(
                    call, call->inflated != NULL ? call->inflated : (const uint8_t *)"", len);
            call->flags &= ~RS_CALL_F_IN_CALLBACK;
            continue;
        }
        call->flags |= RS_CALL_F_HELD | RS_CALL_F_IN_CALLBACK;
        call->method->on_message(call, m.data, m.len);
        call->flags &= ~RS_CALL_F_IN_CALLBACK;
    }
}

/* Delivers what the handler is owed while the stream stands. */
static void run_handler(struct rs_call *call)
{
    if (!(call->flags & RS_CALL_F_STARTED)) {
        call->flags |= RS_CALL_F_STARTED;
        if (rs_call_peer_identity(call) != NULL)
            rs_log_debug("conn %u: call %s stream %d from %s", call->conn->slot, call->path,
                         call->stream_id, rs_call_peer_identity(call));
        if (call->method->on_start != NULL)
            call->method->on_start(call);
    }
    pump_messages(call);
    if (!(call->flags & RS_CALL_F_HELD))
        credit_consumed(call);
    if ((call->flags & RS_CALL_F_REMOTE_END) &&
        !(call->flags & (RS_CALL_F_HELD | RS_CALL_F_HALF_CLOSED)) && !finished(call)) {
        if (rs_deframer_buffered(&call->rx) > 0) {
            rs_call_finish(call, RS_GRPC_INTERNAL, "stream ended inside a message (truncated)");
        } else {
            call->flags |= RS_CALL_F_HALF_CLOSED;
            if (call->method->on_half_close != NULL)
                call->method->on_half_close(call);
        }
    }
    if ((call->flags & RS_CALL_F_DRAIN) && !(call->flags & RS_CALL_F_DRAINED)) {
        call->flags |= RS_CALL_F_DRAINED;
        if (call->method->on_drain != NULL && !finished(call))
            call->method->on_drain(call);
    }
    /* Low-water mark: wake the handler once half the queue is free (or all of it). */
    if ((call->flags & RS_CALL_F_WANT_WRITABLE) &&
        (rs_chunkq_used(&call->txq) == 0 || rs_chunkq_admits(&call->txq) >= call->txq.cap / 2) &&
        !finished(call)) {
        call->flags &= ~RS_CALL_F_WANT_WRITABLE;
        if (call->method->on_writable != NULL)
            call->method->on_writable(call);
    }
}

void rs_stream_run(struct rs_call *call)
{
    enum rs_grpc_status st;

    if (call->state == RS_STREAM_OPEN && call->route == RS_ROUTE_HTTP &&
        (call->flags & RS_CALL_F_REMOTE_END))
        http_submit(call); /* the request ended: its plain answer is due */
    if (call->method != NULL && call->state >= RS_STREAM_OPEN && !closed(call))
        run_handler(call);
    if (call->state != RS_STREAM_CLOSED)
        return;
    /* The stream is gone: CLOSED -> DONE, on_done once. The reap frees the call later. */
    st = call->status;
    if (call->flags & RS_CALL_F_DEADLINE)
        st = RS_GRPC_DEADLINE_EXCEEDED;
    rs_stream_set_state(call, RS_STREAM_DONE);
    if (call->flags & RS_CALL_F_HELD)
        release_held(call);
    if (call->ntimers > 0)
        rs_worker_cancel_timers(call->conn->w, call);
    if (call->method != NULL && call->method->on_done != NULL && (call->flags & RS_CALL_F_STARTED))
        call->method->on_done(call, st);
    rs_stream_maybe_reap(call);
}

/* ---- the rest of core/call.h ---------------------------------------------------------- */

void rs_call_consume(struct rs_call *call)
{
    if (!(call->flags & RS_CALL_F_HELD))
        return;
    release_held(call);
    if (finished(call))
        rs_deframer_free(&call->rx);
    rs_stream_rx_account(call);
    if (!(call->flags & RS_CALL_F_IN_CALLBACK))
        rs_stream_mark_ready(call);
}

bool rs_call_msg_was_compressed(const struct rs_call *call)
{
    return call->last_compressed;
}

bool rs_call_server_draining(const struct rs_call *call)
{
    return (call->conn->w->flags & RS_WORKER_F_DRAINING) != 0;
}

int rs_call_commit_begin(struct rs_call *call)
{
    if (finished(call) || (call->flags & (RS_CALL_F_DEADLINE | RS_CALL_F_FAILED)))
        return -ECANCELED;
    call->flags |= RS_CALL_F_COMMIT;
    return 0;
}

bool rs_call_committing(const struct rs_call *call)
{
    return (call->flags & RS_CALL_F_COMMIT) != 0;
}

bool rs_call_is_done(const struct rs_call *call)
{
    return call->state == RS_STREAM_DONE;
}

void *rs_call_state(struct rs_call *call)
{
    return call->state_mem;
}

void *rs_call_service_ctx(const struct rs_call *call)
{
    return call->service != NULL ? call->service->ctx : NULL;
}

const char *rs_call_path(const struct rs_call *call)
{
    return call->path;
}

const char *rs_call_peer_identity(const struct rs_call *call)
{
    return call->conn->tls != NULL ? rs_tls_peer(call->conn->tls) : NULL;
}

size_t rs_call_max_msg(const struct rs_call *call)
{
    return call->conn->w->srv->cfg.max_msg;
}

size_t rs_call_metadata_count(const struct rs_call *call)
{
    return call->nmeta;
}

void rs_call_metadata_at(const struct rs_call *call, size_t i, const char **name,
                         const char **value, size_t *value_len)
{
    *name = call->meta[i].name;
    *value = call->meta[i].value;
    *value_len = call->meta[i].value_len;
}

const char *rs_call_metadata(const struct rs_call *call, const char *name, size_t *value_len)
{
    size_t i;

    for (i = 0; i < call->nmeta; i++) {
        if (strcmp(call->meta[i].name, name) == 0) {
            if (value_len != NULL)
                *value_len = call->meta[i].value_len;
            return call->meta[i].value;
        }
    }
    return NULL;
}

static bool token_name(const char *name)
{
    const char *p;

    if (name[0] == '\0' || name[0] == ':')
        return false;
    for (p = name; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
              *p == '.'))
            return false;
    return true;
}

/* Bytes of response metadata one header block may carry: what the client said it takes
 * (SETTINGS_MAX_HEADER_LIST_SIZE; nghttp2 answers UINT32_MAX when it said nothing), at most
 * RS_CALL_META_BYTES, less room for the fields the server adds itself. */
static size_t meta_budget(const struct rs_call *call)
{
    size_t max =
            nghttp2_session_get_remote_settings(h2_of(call), NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE);

    if (max > RS_CALL_META_BYTES)
        max = RS_CALL_META_BYTES;
    return max > RS_CALL_META_RESERVED ? max - RS_CALL_META_RESERVED : 0;
}

int rs_call_add_metadata(struct rs_call *call, const char *name, const char *value, size_t len)
{
    struct rs_meta *m;
    size_t cost;

    if (call->state >= RS_STREAM_TRAILERS_SENT)
        return -EALREADY;
    if (!token_name(name) || strcmp(name, "content-type") == 0 || strcmp(name, "te") == 0 ||
        strcmp(name, "grpc-status") == 0 || strcmp(name, "grpc-message") == 0)
        return -EINVAL;
    /* RFC 9113 counts 32 bytes of overhead per field, as SETTINGS_MAX_HEADER_LIST_SIZE does. */
    cost = strlen(name) + len + 32;
    if (len > RS_CALL_META_BYTES || call->resp_meta_bytes + cost > meta_budget(call))
        return -E2BIG;
    m = realloc(call->resp_meta, (call->nresp_meta + 1) * sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    call->resp_meta = m;
    m = &m[call->nresp_meta];
    m->name = strdup(name);
    m->value = malloc(len + 1);
    if (m->name == NULL || m->value == NULL) {
        free(m->name);
        free(m->value);
        return -ENOMEM;
    }
    memcpy(m->value, value, len);
    m->value[len] = '\0';
    m->value_len = len;
    call->nresp_meta++;
    call->resp_meta_bytes += cost;
    return 0;
}
