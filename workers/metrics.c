/* workers/metrics.c: per-worker counters and their Prometheus text exposition (GET /metrics).
 *
 * Each worker writes only its own struct rs_worker_metrics (rs_metric_add: no lock, no shared
 * cache line on the hot path). The worker that receives GET /metrics reads every worker's
 * counters with relaxed atomic loads and sums nothing: each series carries a worker label, so
 * Prometheus' sum() gives the totals. The budget, pool and timer figures are plain fields of
 * the other workers' structures, also read with relaxed atomic loads (aligned machine words:
 * never torn, at most a moment old). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "proto/grpc.h"
#include "workers/internal.h"

uint64_t rs_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int rs_metrics_init(struct rs_worker *w)
{
    w->metrics.calls = calloc((w->srv->nmethods + 1) * RS_METRICS_CODES, sizeof(uint64_t));
    return w->metrics.calls != NULL ? 0 : -ENOMEM;
}

void rs_metrics_fini(struct rs_worker *w)
{
    free(w->metrics.calls);
    w->metrics.calls = NULL;
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

void rs_metrics_call(struct rs_worker *w, const struct rs_call *call, int status)
{
    size_t row = method_row(w->srv, call->service, call->method);

    if (w->metrics.calls == NULL || status < 0 || status >= RS_METRICS_CODES)
        return;
    rs_metric_add(&w->metrics.calls[row * RS_METRICS_CODES + (size_t)status], 1);
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
static uint64_t get_timers(const struct rs_worker *w)
{
    return ldz(&w->timers.n);
}

static void render_calls(FILE *f, const struct rs_server *s)
{
    static const char *const reasons[RS_BUDGET_R_COUNT] = { "worker", "share", "stream", "accept" };
    size_t row, k, code;
    unsigned i, r;

    family(f, "ringstream_budget_refusals_total", "counter",
           "Charges and admissions the worker's memory budget refused, by reason.");
    for (i = 0; i < s->cfg.workers; i++)
        for (r = 0; r < RS_BUDGET_R_COUNT; r++)
            fprintf(f, "ringstream_budget_refusals_total{worker=\"%u\",reason=\"%s\"} %llu\n", i,
                    reasons[r], (unsigned long long)ld(&s->workers[i].budget.refused[r]));
    family(f, "grpc_server_handled_total", "counter",
           "gRPC calls finished, by method and status code (go-grpc-prometheus' name).");
    for (i = 0; i < s->cfg.workers; i++) {
        const uint64_t *calls = s->workers[i].metrics.calls;

        if (calls == NULL)
            continue;
        for (row = 0; row <= s->nmethods; row++) {
            const char *svc = "unknown", *meth = "unknown";

            for (k = 0; row < s->nmethods && k < s->nservices; k++) {
                const struct rs_service *sv = s->services[k];

                if (row >= s->method_base[k] && row < s->method_base[k] + sv->nmethods) {
                    const char *p = sv->methods[row - s->method_base[k]].path;
                    const char *slash = strrchr(p, '/');

                    svc = sv->name;
                    meth = slash != NULL ? slash + 1 : p;
                    break;
                }
            }
            for (code = 0; code < RS_METRICS_CODES; code++) {
                uint64_t v = ld(&calls[row * RS_METRICS_CODES + code]);

                if (v == 0)
                    continue; /* absent series are 0 to Prometheus; keeps the answer short */
                fprintf(f,
                        "grpc_server_handled_total{worker=\"%u\",grpc_service=\"%s\","
                        "grpc_method=\"%s\",grpc_code=\"%s\"} %llu\n",
                        i, svc, meth, rs_grpc_status_name((int)code), (unsigned long long)v);
            }
        }
    }
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
    per_worker(f, s, "ringstream_streams_open", "gauge", "HTTP/2 streams open.", get_streams);
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
    per_worker(f, s, "ringstream_timers", "gauge", "Call timers pending.", get_timers);
    render_calls(f, s);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
