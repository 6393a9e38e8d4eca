/* workers/metrics.c: per-worker counters and their Prometheus text exposition (GET /metrics).
 *
 * Each worker writes only its own struct rs_worker_metrics (rs_metric_add: no lock, no shared
 * cache line on the hot path). The worker that receives GET /metrics reads every worker's
 * counters with relaxed atomic loads and sums nothing: each series carries a worker label, so
 * Prometheus' sum() gives the totals. The budget, pool and timer figures are plain fields of
 * the other workers' structures, also read with relaxed atomic loads (aligned machine words:
 * never torn, at most a moment old). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/log.h"
#include "proto/grpc.h"
#include "workers/internal.h"

uint64_t rs_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Upper bounds of grpc_server_handling_seconds' finite buckets, in ns and as printed. */
static const uint64_t bucket_ns[RS_METRICS_BUCKETS - 1] = {
    5000000,   10000000,   25000000,    50000000,    100000000,    250000000,
    500000000, 1000000000, 2500000000u, 5000000000u, 10000000000u,
};
static const char *const bucket_le[RS_METRICS_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
};
static const char *const type_names[] = { "unary", "client_stream", "server_stream",
                                          "bidi_stream" };

int rs_metrics_init(struct rs_worker *w)
{
    size_t rows = w->srv->nmethods + 1;
    size_t csize = (rows * RS_METRICS_CODES * sizeof(uint64_t) + 63) & ~(size_t)63;
    size_t msize = (rows * sizeof(struct rs_method_metrics) + 63) & ~(size_t)63;
    size_t ssize = (w->srv->nstats * sizeof(uint64_t) + 63) & ~(size_t)63;

    /* Whole cache lines of their own: no other worker's data shares one. */
    w->metrics.calls = aligned_alloc(64, csize);
    w->metrics.methods = aligned_alloc(64, msize);
    w->metrics.stats = ssize > 0 ? aligned_alloc(64, ssize) : NULL;
    if (w->metrics.calls == NULL || w->metrics.methods == NULL ||
        (ssize > 0 && w->metrics.stats == NULL)) {
        rs_metrics_fini(w);
        return -ENOMEM;
    }
    memset(w->metrics.calls, 0, csize);
    memset(w->metrics.methods, 0, msize);
    if (ssize > 0)
        memset(w->metrics.stats, 0, ssize);
    return 0;
}

void rs_metrics_fini(struct rs_worker *w)
{
    free(w->metrics.calls);
    w->metrics.calls = NULL;
    free(w->metrics.methods);
    w->metrics.methods = NULL;
    free(w->metrics.stats);
    w->metrics.stats = NULL;
}

/* The index of |svc| among the server's services, or nservices. */
static size_t service_index(const struct rs_server *s, const struct rs_service *svc)
{
    size_t i;

    for (i = 0; i < s->nservices; i++)
        if (s->services[i] == svc)
            break;
    return i;
}

void rs_call_stat_add(struct rs_call *call, size_t i, uint64_t n)
{
    struct rs_worker *w = call->conn->w;
    const struct rs_server *s = w->srv;
    size_t k = service_index(s, call->service);

    /* a bad index is the service's bug: count nothing rather than another's counter */
    if (k == s->nservices || i >= call->service->nstats || w->metrics.stats == NULL) {
        rs_log_bug("worker %u: counter %zu of service %s out of range", w->id, i,
                   call->service != NULL ? call->service->name : "-");
        return;
    }
    rs_metric_add(&w->metrics.stats[s->stat_base[k] + i], n);
}

/* The row of |svc|'s method |m| in the call table; nmethods (the "unknown" row) otherwise. */
static size_t method_row(const struct rs_server *s, const struct rs_service *svc,
                         const struct rs_method *m)
{
    size_t i;

    if (s->method_base == NULL || svc == NULL || m == NULL)
        return s->nmethods;
    for (i = 0; i < s->nservices; i++)
        if (s->services[i] == svc && m >= svc->methods && m < svc->methods + svc->nmethods)
            return s->method_base[i] + (size_t)(m - svc->methods);
    return s->nmethods;
}

void rs_metrics_sample(struct rs_worker *w)
{
    uint64_t stalled = 0, queued = 0;
    struct rs_list *l;
    unsigned i;

    for (i = 1; i < w->nconns; i++) {
        struct rs_conn *c = w->conns[i];

        if (c == NULL || (c->flags & RS_CONN_F_CLOSING))
            continue;
        for (l = c->calls.next; l != &c->calls; l = l->next) {
            const struct rs_call *call = rs_container_of(l, struct rs_call, link);
            size_t used = rs_chunkq_used(&call->txq);

            queued += used;
            if (used > 0 && rs_call_send_window(call) == 0)
                stalled++;
        }
    }
    __atomic_store_n(&w->metrics.streams_stalled, stalled, __ATOMIC_RELAXED);
    __atomic_store_n(&w->metrics.queued_bytes, queued, __ATOMIC_RELAXED);
}

void rs_metrics_started(struct rs_worker *w, struct rs_call *call)
{
    size_t row;

    if (!w->srv->cfg.method_metrics)
        return;
    row = method_row(w->srv, call->service, call->method);
    call->metrics_row = row + 1;
    rs_metric_add(&w->metrics.methods[row].started, 1);
}

void rs_metrics_call(struct rs_worker *w, const struct rs_call *call, int status)
{
    size_t row = method_row(w->srv, call->service, call->method), b = 0;
    struct rs_method_metrics *mm;
    uint64_t ns;

    if (w->metrics.calls == NULL || status < 0 || status >= RS_METRICS_CODES)
        return;
    /* handled_total is always counted: STATUS= reports its sum */
    rs_metric_add(&w->metrics.calls[row * RS_METRICS_CODES + (size_t)status], 1);
    if (!w->srv->cfg.method_metrics)
        return;
    ns = rs_mono_ns() - call->born_ns;
    mm = &w->metrics.methods[row];
    while (b < RS_METRICS_BUCKETS - 1 && ns > bucket_ns[b])
        b++;
    rs_metric_add(&mm->buckets[b], 1);
    rs_metric_add(&mm->sum_ns, ns);
}

static uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static size_t ldz(const size_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One series per worker of the value |get| reads. */
static void per_worker(FILE *f, const struct rs_server *s, const char *name, const char *type,
                       const char *help, uint64_t (*get)(const struct rs_worker *w))
{
    unsigned i;

    family(f, name, type, help);
    for (i = 0; i < s->cfg.workers; i++)
        fprintf(f, "%s{worker=\"%u\"} %llu\n", name, i, (unsigned long long)get(&s->workers[i]));
}

static uint64_t get_accepted(const struct rs_worker *w)
{
    return ld(&w->metrics.conns_accepted);
}
static uint64_t get_open(const struct rs_worker *w)
{
    uint64_t closed = ld(&w->metrics.conns_closed), acc = ld(&w->metrics.conns_accepted);

    return acc > closed ? acc - closed : 0;
}
static uint64_t get_refused(const struct rs_worker *w)
{
    return ld(&w->metrics.conns_refused);
}
static uint64_t get_streams(const struct rs_worker *w)
{
    uint64_t closed = ld(&w->metrics.streams_closed), opened = ld(&w->metrics.streams_opened);

    return opened > closed ? opened - closed : 0;
}
static uint64_t get_bytes_in(const struct rs_worker *w)
{
    return ld(&w->metrics.bytes_in);
}
static uint64_t get_bytes_out(const struct rs_worker *w)
{
    return ld(&w->metrics.bytes_out);
}
static uint64_t get_budget_used(const struct rs_worker *w)
{
    return ldz(&w->budget.used);
}
static uint64_t get_budget_limit(const struct rs_worker *w)
{
    return ldz(&w->budget.limit);
}
static uint64_t get_budget_peak(const struct rs_worker *w)
{
    return ldz(&w->budget.peak);
}
static uint64_t get_pool_blocks(const struct rs_worker *w)
{
    size_t live = ldz(&w->pool.nlive), cached = ldz(&w->pool.ncached);

    return live > cached ? live - cached : 0;
}
static uint64_t get_pool_bytes(const struct rs_worker *w)
{
    size_t slive = ldz(&w->small.nlive), scached = ldz(&w->small.ncached);
    size_t tlive = ldz(&w->tiny.nlive), tcached = ldz(&w->tiny.ncached);

    /* block sizes are fixed at init */
    return get_pool_blocks(w) * w->pool.block_size +
           (slive > scached ? slive - scached : 0) * w->small.block_size +
           (tlive > tcached ? tlive - tcached : 0) * w->tiny.block_size;
}
static uint64_t get_timers(const struct rs_worker *w)
{
    return ldz(&w->timers.n);
}

/* The service, method and type labels of call-table row |row| ("unknown" past the methods). */
static void row_labels(const struct rs_server *s, size_t row, const char **svc, const char **meth,
                       const char **type)
{
    size_t k;

    *svc = *meth = *type = "unknown";
    for (k = 0; row < s->nmethods && k < s->nservices; k++) {
        const struct rs_service *sv = s->services[k];

        if (row >= s->method_base[k] && row < s->method_base[k] + sv->nmethods) {
            const struct rs_method *m = &sv->methods[row - s->method_base[k]];
            const char *slash = strrchr(m->path, '/');

            *svc = sv->name;
            *meth = slash != NULL ? slash + 1 : m->path;
            if ((unsigned)m->type < sizeof(type_names) / sizeof(type_names[0]))
                *type = type_names[m->type];
            return;
        }
    }
}

/* One series per worker and method of a per-method counter; methods never called are left
 * out (absent series are 0 to Prometheus; keeps the answer short). */
static void render_method_counter(FILE *f, const struct rs_server *s, const char *name,
                                  const char *help, size_t field)
{
    const char *svc, *meth, *type;
    size_t row;
    unsigned i;

    family(f, name, "counter", help);
    for (i = 0; i < s->cfg.workers; i++) {
        const struct rs_method_metrics *mm = s->workers[i].metrics.methods;

        for (row = 0; mm != NULL && row <= s->nmethods; row++) {
            uint64_t v = ld((const uint64_t *)((const char *)&mm[row] + field));

            if (v == 0)
                continue;
            row_labels(s, row, &svc, &meth, &type);
            fprintf(f,
                    "%s{worker=\"%u\",grpc_type=\"%s\",grpc_service=\"%s\","
                    "grpc_method=\"%s\"} %llu\n",
                    name, i, type, svc, meth, (unsigned long long)v);
        }
    }
}

static void render_histogram(FILE *f, const struct rs_server *s)
{
    static const char name[] = "grpc_server_handling_seconds";
    const char *svc, *meth, *type;
    size_t row, b;
    unsigned i;

    family(f, name, "histogram",
           "Time from a call's request headers to its status, by method (go-grpc-prometheus' "
           "name and buckets).");
    for (i = 0; i < s->cfg.workers; i++) {
        const struct rs_method_metrics *mm = s->workers[i].metrics.methods;

        for (row = 0; mm != NULL && row <= s->nmethods; row++) {
            uint64_t v[RS_METRICS_BUCKETS], cum = 0, sum;

            for (b = 0; b < RS_METRICS_BUCKETS; b++)
                v[b] = ld(&mm[row].buckets[b]);
            sum = ld(&mm[row].sum_ns);
            for (b = 0; b < RS_METRICS_BUCKETS; b++)
                cum += v[b];
            if (cum == 0)
                continue;
            row_labels(s, row, &svc, &meth, &type);
            cum = 0;
            for (b = 0; b < RS_METRICS_BUCKETS; b++) {
                cum += v[b];
                fprintf(f,
                        "%s_bucket{worker=\"%u\",grpc_type=\"%s\",grpc_service=\"%s\","
                        "grpc_method=\"%s\",le=\"%s\"} %llu\n",
                        name, i, type, svc, meth, bucket_le[b], (unsigned long long)cum);
            }
            fprintf(f,
                    "%s_sum{worker=\"%u\",grpc_type=\"%s\",grpc_service=\"%s\","
                    "grpc_method=\"%s\"} %.9f\n",
                    name, i, type, svc, meth, (double)sum / 1e9);
            fprintf(f,
                    "%s_count{worker=\"%u\",grpc_type=\"%s\",grpc_service=\"%s\","
                    "grpc_method=\"%s\"} %llu\n",
                    name, i, type, svc, meth, (unsigned long long)cum);
        }
    }
}

static uint64_t get_glitch(const struct rs_worker *w)
{
    return ld(&w->metrics.glitch_goaways);
}
static uint64_t get_stalled(const struct rs_worker *w)
{
    return ld(&w->metrics.streams_stalled);
}
static uint64_t get_queued(const struct rs_worker *w)
{
    return ld(&w->metrics.queued_bytes);
}

static void render_closed(FILE *f, const struct rs_server *s)
{
    static const char *const reasons[RS_CLOSE_COUNT] = { "other",     "peer",          "error",
                                                         "handshake", "goaway",        "glitch",
                                                         "drain",     "tls_handshake", "tls" };
    unsigned i, r;

    family(f, "ringstream_connections_closed_total", "counter",
           "Connections closed, by reason: peer (closed or reset by the client), error (socket, "
           "HTTP/2, memory share), handshake (no preface in time), goaway (idle or header "
           "timeout, protocol error), glitch (ENHANCE_YOUR_CALM), drain (drain time over), "
           "tls_handshake (TLS handshake failed: not TLS, no h2 in ALPN, client certificate "
           "missing or untrusted), tls (TLS failure after the handshake: bad record, "
           "renegotiation).");
    for (i = 0; i < s->cfg.workers; i++)
        for (r = 0; r < RS_CLOSE_COUNT; r++)
            fprintf(f, "ringstream_connections_closed_total{worker=\"%u\",reason=\"%s\"} %llu\n", i,
                    reasons[r], (unsigned long long)ld(&s->workers[i].metrics.closed_by[r]));
}

static void render_calls(FILE *f, const struct rs_server *s)
{
    static const char *const reasons[RS_BUDGET_R_COUNT] = { "worker", "share", "stream", "accept" };
    const char *svc, *meth, *type;
    size_t row, code;
    unsigned i, r;

    family(f, "ringstream_budget_refusals_total", "counter",
           "Charges and admissions the worker's memory budget refused, by reason.");
    for (i = 0; i < s->cfg.workers; i++)
        for (r = 0; r < RS_BUDGET_R_COUNT; r++)
            fprintf(f, "ringstream_budget_refusals_total{worker=\"%u\",reason=\"%s\"} %llu\n", i,
                    reasons[r], (unsigned long long)ld(&s->workers[i].budget.refused[r]));
    render_method_counter(f, s, "grpc_server_started_total",
                          "gRPC calls started on the server (go-grpc-prometheus' name).",
                          offsetof(struct rs_method_metrics, started));
    family(f, "grpc_server_handled_total", "counter",
           "gRPC calls finished, by method and status code (go-grpc-prometheus' name).");
    for (i = 0; i < s->cfg.workers; i++) {
        const uint64_t *calls = s->workers[i].metrics.calls;

        if (calls == NULL)
            continue;
        for (row = 0; row <= s->nmethods; row++) {
            row_labels(s, row, &svc, &meth, &type);
            for (code = 0; code < RS_METRICS_CODES; code++) {
                uint64_t v = ld(&calls[row * RS_METRICS_CODES + code]);

                if (v == 0)
                    continue; /* absent series are 0 to Prometheus; keeps the answer short */
                fprintf(f,
                        "grpc_server_handled_total{worker=\"%u\",grpc_type=\"%s\","
                        "grpc_service=\"%s\",grpc_method=\"%s\",grpc_code=\"%s\"} %llu\n",
                        i, type, svc, meth, rs_grpc_status_name((int)code), (unsigned long long)v);
            }
        }
    }
    render_method_counter(f, s, "grpc_server_msg_received_total",
                          "Request messages received, by method (go-grpc-prometheus' name).",
                          offsetof(struct rs_method_metrics, msg_in));
    render_method_counter(f, s, "grpc_server_msg_sent_total",
                          "Response messages sent, by method (go-grpc-prometheus' name).",
                          offsetof(struct rs_method_metrics, msg_out));
    render_histogram(f, s);
}

/* Each service's own series (struct rs_service.render_stats). */
static void render_services(FILE *f, const struct rs_server *s)
{
    const uint64_t **stats, **calls;
    struct rs_stats_view v = { .nworkers = s->cfg.workers };
    size_t k;
    unsigned i;

    stats = calloc(s->cfg.workers, sizeof(*stats));
    calls = calloc(s->cfg.workers, sizeof(*calls));
    for (k = 0; stats != NULL && calls != NULL && k < s->nservices; k++) {
        const struct rs_service *svc = s->services[k];
        bool ready = true;

        if (svc->render_stats == NULL)
            continue;
        for (i = 0; i < s->cfg.workers; i++) {
            const struct rs_worker_metrics *m = &s->workers[i].metrics;

            if (m->calls == NULL || (svc->nstats > 0 && m->stats == NULL)) {
                ready = false; /* a worker that failed its set-up */
                break;
            }
            calls[i] = m->calls + s->method_base[k] * RS_METRICS_CODES;
            stats[i] = svc->nstats > 0 ? m->stats + s->stat_base[k] : NULL;
        }
        if (!ready)
            continue;
        v.stats = stats;
        v.calls = calls;
        v.ctx = svc->ctx;
        svc->render_stats(f, &v);
    }
    free(stats);
    free(calls);
}

void rs_server_stats(const struct rs_server *s, uint64_t stall_ms, struct rs_server_stats *out)
{
    uint64_t now = rs_now_ms();
    size_t row;
    unsigned i;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < s->cfg.workers; i++) {
        const struct rs_worker *w = &s->workers[i];
        uint64_t tick = ld(&w->metrics.tick_ms);

        out->conns_open += get_open(w);
        out->streams_open += get_streams(w);
        out->bytes_in += get_bytes_in(w);
        out->bytes_out += get_bytes_out(w);
        for (row = 0; w->metrics.calls != NULL && row < (s->nmethods + 1) * RS_METRICS_CODES; row++)
            out->calls += ld(&w->metrics.calls[row]);
        if (tick == 0 || now - tick > stall_ms)
            out->workers_stalled++;
    }
}

char *rs_metrics_render(const struct rs_server *s, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);

    if (f == NULL)
        return NULL;
    per_worker(f, s, "ringstream_connections_open", "gauge", "Connections open.", get_open);
    per_worker(f, s, "ringstream_connections_accepted_total", "counter", "Connections accepted.",
               get_accepted);
    per_worker(f, s, "ringstream_connections_refused_total", "counter",
               "Connections closed at accept: connection limit, memory budget or draining.",
               get_refused);
    render_closed(f, s);
    per_worker(f, s, "ringstream_glitch_goaways_total", "counter",
               "Connections sent GOAWAY ENHANCE_YOUR_CALM: the glitch budget ran out.", get_glitch);
    per_worker(f, s, "ringstream_streams_open", "gauge", "HTTP/2 streams open.", get_streams);
    per_worker(f, s, "ringstream_streams_stalled", "gauge",
               "Streams with data queued and no flow-control window to send it (sampled each "
               "second).",
               get_stalled);
    per_worker(f, s, "ringstream_queued_bytes", "gauge",
               "Bytes in the streams' send queues (sampled each second).", get_queued);
    per_worker(f, s, "ringstream_received_bytes_total", "counter", "TCP payload bytes received.",
               get_bytes_in);
    per_worker(f, s, "ringstream_sent_bytes_total", "counter", "TCP payload bytes sent.",
               get_bytes_out);
    per_worker(f, s, "ringstream_budget_used_bytes", "gauge",
               "Bytes peers make the worker hold (core/budget.h).", get_budget_used);
    per_worker(f, s, "ringstream_budget_limit_bytes", "gauge", "The worker's memory budget.",
               get_budget_limit);
    per_worker(f, s, "ringstream_budget_peak_bytes", "gauge", "Highest budget use seen.",
               get_budget_peak);
    per_worker(f, s, "ringstream_pool_blocks_in_use", "gauge",
               "Payload blocks of the worker's pool in use (not cached).", get_pool_blocks);
    per_worker(f, s, "ringstream_pool_bytes_in_use", "gauge",
               "Bytes of the worker's pool blocks in use (blocks in use x block size).",
               get_pool_bytes);
    per_worker(f, s, "ringstream_timers", "gauge", "Call timers pending.", get_timers);
    render_calls(f, s);
    render_services(f, s);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
