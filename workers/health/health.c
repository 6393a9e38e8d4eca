/* workers/health/health.c: grpc.health.v1.Health (proto/health.proto), see health.h.
 *
 * The request's service name is a nanopb callback (proto/health.options) that records a view
 * of the received message, so a name of any length, embedded NULs included, is compared
 * exactly against the registry. The registry is a small array searched linearly: it holds the
 * handful of services one daemon serves, and it never changes once the server runs.
 *
 * Both methods keep at most one status waiting for room in the send queue; a newer status
 * replaces it (a watcher wants the latest, not the history). |finished| in a state means we
 * called rs_call_finish(). */
#include "workers/health/health.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <pb_decode.h>
#include <pb_encode.h>
#include "health.pb.h"
#include "core/log.h"
#include "proto/pbview.h"

#define STATUS_NONE grpc_health_v1_HealthCheckResponse_ServingStatus_UNKNOWN
#define SERVING     grpc_health_v1_HealthCheckResponse_ServingStatus_SERVING
#define NOT_SERVING grpc_health_v1_HealthCheckResponse_ServingStatus_NOT_SERVING
#define UNKNOWN_SVC grpc_health_v1_HealthCheckResponse_ServingStatus_SERVICE_UNKNOWN
#define NAME_SHOWN  200 /* bytes of an unknown name quoted back in an error */

struct health_name {
    char *s; /* owned, NUL-terminated */
    size_t len;
};

struct rs_health {
    struct rs_service svc;     /* ctx = this registry */
    struct health_name *names; /* owned; read-only once the server runs */
    size_t n;
};

static bool known(const struct rs_health *h, const struct rs_pb_view *name)
{
    size_t i;

    if (name->len == 0)
        return true; /* the server as a whole */
    for (i = 0; i < h->n; i++)
        if (h->names[i].len == name->len && memcmp(h->names[i].s, name->p, name->len) == 0)
            return true;
    return false;
}

/* --- both methods ---------------------------------------------------------------------- */

struct hcall {
    struct rs_pb_view name;                               /* valid during on_message only */
    grpc_health_v1_HealthCheckResponse_ServingStatus due; /* to send; STATUS_NONE: nothing */
    bool finish_after;                                    /* finish OK once |due| is sent */
    bool got;                                             /* the request arrived */
    bool finished;
};

static void finish(struct rs_call *call, struct hcall *hc, enum rs_grpc_status status,
                   const char *msg)
{
    hc->finished = true;
    rs_call_finish(call, status, msg);
}

static int send_status(struct rs_call *call, grpc_health_v1_HealthCheckResponse_ServingStatus st)
{
    grpc_health_v1_HealthCheckResponse resp = grpc_health_v1_HealthCheckResponse_init_zero;
    uint8_t buf[grpc_health_v1_HealthCheckResponse_size];
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof(buf));
    struct iovec iov = { .iov_base = buf };

    resp.status = st;
    if (!pb_encode(&s, grpc_health_v1_HealthCheckResponse_fields, &resp)) {
        rs_log_bug("health: encoding HealthCheckResponse: %s", PB_GET_ERROR(&s));
        return -EPROTO;
    }
    iov.iov_len = s.bytes_written;
    return rs_call_send(call, &iov, 1);
}

/* Sends the due status, then finishes if asked to; or waits for on_writable. */
static void flush(struct rs_call *call, struct hcall *hc)
{
    if (hc->finished)
        return;
    if (hc->due != STATUS_NONE) {
        int ret = send_status(call, hc->due);

        if (ret == -EAGAIN)
            return;
        hc->due = STATUS_NONE;
        if (ret == -ECANCELED) {
            hc->finished = true;
            return;
        }
        if (ret < 0) {
            finish(call, hc, ret == -ENOMEM ? RS_GRPC_RESOURCE_EXHAUSTED : RS_GRPC_INTERNAL,
                   "cannot send the health status");
            return;
        }
    }
    if (hc->finish_after)
        finish(call, hc, RS_GRPC_OK, NULL);
}

/* Takes the one request. Returns false when the call is over or the request unusable. */
static bool take_request(struct rs_call *call, struct hcall *hc, const uint8_t *msg, size_t len)
{
    grpc_health_v1_HealthCheckRequest req = grpc_health_v1_HealthCheckRequest_init_zero;
    pb_istream_t s = pb_istream_from_buffer(msg, len);

    if (hc->finished)
        return false;
    if (hc->got) {
        finish(call, hc, RS_GRPC_INVALID_ARGUMENT, "one HealthCheckRequest per call");
        return false;
    }
    hc->got = true;
    hc->name = (struct rs_pb_view){ .len = 0 };
    rs_pb_view_bind(&req.service, &hc->name);
    if (!pb_decode(&s, grpc_health_v1_HealthCheckRequest_fields, &req)) {
        rs_call_finishf(call, RS_GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest: %s",
                        PB_GET_ERROR(&s));
        hc->finished = true;
        return false;
    }
    /* A string sent with a scalar wire type leaves a view into nanopb's stack (pbview.h). */
    if (!rs_pb_views_inside(grpc_health_v1_HealthCheckRequest_fields, &req, msg, len)) {
        rs_call_finish(call, RS_GRPC_INVALID_ARGUMENT,
                       "malformed HealthCheckRequest: a string field with a scalar wire type");
        hc->finished = true;
        return false;
    }
    return true;
}

static void on_start_nothing(struct rs_call *call)
{
}

static void on_half_close(struct rs_call *call)
{
    struct hcall *hc = rs_call_state(call);

    if (!hc->got && !hc->finished)
        finish(call, hc, RS_GRPC_INVALID_ARGUMENT, "missing HealthCheckRequest");
}

static void on_writable(struct rs_call *call)
{
    flush(call, rs_call_state(call));
}

/* --- Check ----------------------------------------------------------------------------- */

static void check_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct hcall *hc = rs_call_state(call);

    if (take_request(call, hc, msg, len)) {
        if (!known(rs_call_service_ctx(call), &hc->name)) {
            int shown = hc->name.len > NAME_SHOWN ? NAME_SHOWN : (int)hc->name.len;

            rs_call_finishf(call, RS_GRPC_NOT_FOUND, "unknown service \"%.*s\"", shown,
                            (const char *)hc->name.p);
            hc->finished = true;
        } else {
            hc->due = rs_call_server_draining(call) ? NOT_SERVING : SERVING;
            hc->finish_after = true;
            flush(call, hc);
        }
    }
    rs_call_consume(call);
}

/* --- Watch ----------------------------------------------------------------------------- */

static void watch_on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct hcall *hc = rs_call_state(call);

    if (take_request(call, hc, msg, len)) {
        bool draining = rs_call_server_draining(call);

        if (!known(rs_call_service_ctx(call), &hc->name))
            hc->due = UNKNOWN_SVC;
        else
            hc->due = draining ? NOT_SERVING : SERVING;
        hc->finish_after = draining; /* on_drain may have come before the request */
        flush(call, hc);
    }
    rs_call_consume(call);
}

static void watch_on_drain(struct rs_call *call)
{
    struct hcall *hc = rs_call_state(call);

    if (hc->finished || !hc->got)
        return; /* a request still to come sees rs_call_server_draining() */
    hc->due = NOT_SERVING;
    hc->finish_after = true;
    flush(call, hc);
}

/* --- the registry and the service ------------------------------------------------------ */

static const struct rs_method health_methods[] = {
    {
            .path = "/grpc.health.v1.Health/Check",
            .state_size = sizeof(struct hcall),
            .on_start = on_start_nothing,
            .on_message = check_on_message,
            .on_half_close = on_half_close,
            .on_writable = on_writable,
    },
    {
            .path = "/grpc.health.v1.Health/Watch",
            .type = RS_METHOD_SERVER_STREAM,
            .state_size = sizeof(struct hcall),
            .on_start = on_start_nothing,
            .on_message = watch_on_message,
            .on_half_close = on_half_close,
            .on_writable = on_writable,
            .on_drain = watch_on_drain,
    },
};

struct rs_health *rs_health_new(void)
{
    struct rs_health *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->svc.name = "grpc.health.v1.Health";
    h->svc.methods = health_methods;
    h->svc.nmethods = sizeof(health_methods) / sizeof(health_methods[0]);
    h->svc.ctx = h;
    return h;
}

int rs_health_add(struct rs_health *h, const char *service_name)
{
    struct rs_pb_view v = { 0 };
    struct health_name *names;
    char *s;

    if (h == NULL || service_name == NULL)
        return -EINVAL;
    v.p = (const uint8_t *)service_name;
    v.len = strlen(service_name);
    if (v.len == 0 || known(h, &v))
        return 0;
    s = strdup(service_name);
    if (s == NULL)
        return -ENOMEM;
    names = realloc(h->names, (h->n + 1) * sizeof(*names));
    if (names == NULL) {
        free(s);
        return -ENOMEM;
    }
    h->names = names;
    h->names[h->n].s = s;
    h->names[h->n].len = v.len;
    h->n++;
    return 0;
}

const struct rs_service *rs_health_service(struct rs_health *h)
{
    return &h->svc;
}

void rs_health_destroy(struct rs_health *h)
{
    size_t i;

    if (h == NULL)
        return;
    for (i = 0; i < h->n; i++)
        free(h->names[i].s);
    free(h->names);
    free(h);
}
