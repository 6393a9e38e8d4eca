/* workers/worker.c: the server object, worker threads and their completion loop. */
#include <arpa/inet.h>
#include <netdb.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>
#include "core/log.h"
#include "workers/internal.h"

#define RS_IOREQ_INITIAL         256u  /* slots at start: 10 KiB; io_grow() doubles on demand */
#define RS_IOREQ_FLOOR           4096u /* the table's bound is never lower than this */
#define RS_IOREQ_PER_CONN        64u   /* the table's bound: this many per allowed connection */
#define RS_IOREQ_LIMIT           (1u << 22)
#define RS_ACCEPT_BACKOFF_MIN_MS 100u
#define RS_ACCEPT_BACKOFF_MAX_MS 1000u /* also the interval between two refusal log lines */

void rs_config_defaults(struct rs_config *cfg)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&cfg->listen[0].addr;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    memset(cfg, 0, sizeof(*cfg));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(50051);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cfg->listen[0].addrlen = sizeof(*sin);
    cfg->nlisten = 1;
    cfg->workers = ncpu > 0 ? (unsigned)ncpu : 1;
    cfg->max_msg = 4u << 20;
    cfg->stream_buffer = 1u << 20;
    cfg->max_streams = 100;
    cfg->max_header_list = 16u << 10;
    cfg->max_conns = 4096;
    cfg->pool_bytes = (size_t)1 << 30;
    cfg->idle_ms = 300000;
    cfg->handshake_ms = 10000;
    cfg->tls_ticket_hours = 24;
    cfg->glitch_budget = 1000;
    cfg->drain_ms = 30000;
    cfg->method_metrics = true;
    cfg->metrics = true;
    cfg->listen_fd = -1;
}

static int listen_socket(const struct rs_listen *l, char *err, size_t errlen)
{
    int fd, one = 1;

    fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        snprintf(err, errlen, "setsockopt: %s", strerror(errno));
        goto err_close;
    }
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0) {
        char host[NI_MAXHOST], serv[NI_MAXSERV];
        int e = errno;

        /* several --listen addresses: say which one */
        if (getnameinfo((const struct sockaddr *)&l->addr, l->addrlen, host, sizeof(host), serv,
                        sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
            snprintf(host, sizeof(host), "?");
        snprintf(err, errlen, "cannot bind the listen address %s port %s: %s", host, serv,
                 strerror(e));
        goto err_close;
    }
    if (listen(fd, 1024) < 0) {
        snprintf(err, errlen, "listen: %s", strerror(errno));
        goto err_close;
    }
    return fd;
err_close:
    close(fd);
    return -1;
}

/* Refuses an address another process already serves. Every worker's socket sets SO_REUSEPORT
 * so that the kernel spreads connections over them, but the kernel lets any socket of the same
 * user that also sets it join that group: a second ringstreamd would silently take part of the
 * traffic. A probe bound WITHOUT SO_REUSEPORT conflicts with every socket already bound to the
 * address (a reuseport group, a plain listener, or a wildcard one covering it), while
 * SO_REUSEADDR keeps it from tripping over TIME_WAIT connections of an earlier run. The probe
 * is closed before our own sockets bind, so a second ringstreamd started later fails its own
 * probe against them. Two started in the same instant can both pass (a window of
 * microseconds); the data directory's lock (main.c) still keeps them from sharing a store. */
static int listen_probe(const struct rs_listen *l, char *err, size_t errlen)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    int fd, one = 1, ret = 0;

    if (getnameinfo((const struct sockaddr *)&l->addr, l->addrlen, host, sizeof(host), serv,
                    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(host, sizeof(host), "?");
        snprintf(serv, sizeof(serv), "?");
    }
    fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
        snprintf(err, errlen, "setsockopt: %s", strerror(errno));
        ret = -1;
    } else if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0) {
        if (errno == EADDRINUSE)
            snprintf(err, errlen,
                     "address already in use by another process (%s port %s; another "
                     "ringstreamd?); one server per address",
                     host, serv);
        else
            snprintf(err, errlen, "cannot bind the listen address %s port %s: %s", host, serv,
                     strerror(errno));
        ret = -1;
    }
    close(fd);
    return ret;
}

/* Fills the memory budget a configuration left at 0 (core/budget.h): physical memory / 8 over
 * the workers, and an eighth of that per connection (at least what one stream of a maximum
 * message and a full queue needs, when the budget allows it). */
static void budget_resolve(struct rs_config *cfg)
{
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
    size_t floor_share = 2 * cfg->max_msg + 2 * cfg->stream_buffer;

    if (cfg->worker_budget == 0)
        cfg->worker_budget = rs_budget_default(mem / 2, cfg->workers); /* mem/2/4 = mem/8 */
    if (cfg->conn_share == 0) {
        cfg->conn_share = cfg->worker_budget / 8;
        if (cfg->conn_share < floor_share)
            cfg->conn_share = floor_share < cfg->worker_budget ? floor_share : cfg->worker_budget;
    }
}

struct rs_server *rs_server_new(const struct rs_config *cfg, char *err, size_t errlen)
{
    struct rs_server *s;
    unsigned i, j;

    if (cfg->workers == 0 || cfg->max_msg == 0 || cfg->stream_buffer == 0) {
        snprintf(err, errlen, "invalid configuration");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto err_nomem;
    s->cfg = *cfg;
    budget_resolve(&s->cfg);
    if (s->cfg.conn_share > s->cfg.worker_budget) {
        snprintf(err, errlen, "--conn-share (%zu) is larger than --worker-budget (%zu)",
                 s->cfg.conn_share, s->cfg.worker_budget);
        free(s);
        return NULL;
    }
    rs_log_info("memory budget: %zu MiB per worker (%u workers), %zu MiB per connection",
                s->cfg.worker_budget >> 20, s->cfg.workers, s->cfg.conn_share >> 20);
    s->workers = calloc(cfg->workers, sizeof(*s->workers));
    if (s->workers == NULL)
        goto err_free;
    pthread_mutex_init(&s->tls_lock, NULL);
    for (i = 0; i < cfg->workers; i++) {
        for (j = 0; j < RS_LISTEN_MAX; j++)
            s->workers[i].listen_fds[j] = -1;
        s->workers[i].wake_fd = -1;
    }
    for (j = 0; cfg->listen_fd < 0 && j < cfg->nlisten && j < RS_LISTEN_MAX; j++)
        if (listen_probe(&cfg->listen[j], err, errlen) < 0)
            goto err_destroy;
    if (cfg->tls_cert != NULL || cfg->tls_key != NULL) {
        if (cfg->tls_cert == NULL || cfg->tls_key == NULL) {
            snprintf(err, errlen, "--tls-cert and --tls-key go together");
            goto err_destroy;
        }
        s->tls_keys = rs_tls_keys_new(
                (cfg->tls_ticket_hours > 0 ? cfg->tls_ticket_hours : 24) * 3600u, err, errlen);
        if (s->tls_keys == NULL)
            goto err_destroy;
        s->tls = rs_tls_ctx_new(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, s->tls_keys, err,
                                errlen);
        if (s->tls == NULL)
            goto err_destroy;
    } else if (cfg->tls_client_ca != NULL) {
        snprintf(err, errlen, "--tls-client-ca needs --tls-cert and --tls-key");
        goto err_destroy;
    }
    for (i = 0; i < cfg->workers; i++) {
        struct rs_worker *w = &s->workers[i];

        w->srv = s;
        w->id = i;
        /* A passed socket (socket activation): one socket shared by every worker, each
         * accepting on its own duplicate (one-shot accepts, see arm_accept). nlisten 0: no
         * listening socket; the caller feeds connections itself (unit tests). */
        if (cfg->listen_fd >= 0) {
            w->listen_fds[0] = fcntl(cfg->listen_fd, F_DUPFD_CLOEXEC, 3);
            if (w->listen_fds[0] < 0) {
                snprintf(err, errlen, "dup of the passed socket: %s", strerror(errno));
                goto err_destroy;
            }
        }
        for (j = 0; cfg->listen_fd < 0 && j < cfg->nlisten && j < RS_LISTEN_MAX; j++) {
            w->listen_fds[j] = listen_socket(&cfg->listen[j], err, errlen);
            if (w->listen_fds[j] < 0)
                goto err_destroy;
        }
        w->wake_fd = eventfd(0, EFD_CLOEXEC);
        if (w->wake_fd < 0) {
            snprintf(err, errlen, "eventfd: %s", strerror(errno));
            goto err_destroy;
        }
    }
    return s;
err_destroy:
    rs_server_destroy(s);
    return NULL;
err_free:
    free(s);
err_nomem:
    snprintf(err, errlen, "out of memory");
    return NULL;
}

int rs_server_add_service(struct rs_server *s, const struct rs_service *svc)
{
    const struct rs_service **n;

    if (s->started)
        return -EBUSY;
    n = realloc(s->services, (s->nservices + 1) * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    n[s->nservices++] = svc;
    s->services = n;
    return 0;
}

/* ---- per-worker state ------------------------------------------------------------------ */

/* Every ring submission of the worker's own (accept, wake-up, tick, drain timer and the
 * cancels) may fail when the submission queue stays full. A failure is never dropped: it sets an
 * RS_WORKER_F_OWE_* bit, and rs_worker_rearm() retries what is owed at the end of every loop
 * turn, right before the next wait submits it. */
/* One multishot accept per listening socket; the gen field of its user_data names it. Arms
 * those not armed; RS_WORKER_F_ACCEPTING says that at least one is. */
static void arm_accept(struct rs_worker *w)
{
    unsigned i;

    w->flags &= ~RS_WORKER_F_OWE_ACCEPT;
    if (w->flags & (RS_WORKER_F_DRAINING | RS_WORKER_F_ACCEPT_WAIT))
        return;
    /* A socket shared by every worker (socket activation) gets one-shot accepts: a multishot
     * accept keeps its place at the head of the socket's wait queue and its worker took every
     * connection (33 of 33 in a measurement); one re-armed per connection goes to the tail,
     * so the workers take turns. Each worker's own SO_REUSEPORT sockets keep the multishot. */
    for (i = 0; i < RS_LISTEN_MAX; i++) {
        uint64_t ud = rs_ud_make(RS_OP_ACCEPT, i, 0);

        if (w->listen_fds[i] < 0 || (w->accepting & (1u << i)))
            continue;
        if ((w->srv->cfg.listen_fd >= 0
                     ? rs_ring_accept(&w->ring, w->listen_fds[i], ud)
                     : rs_ring_accept_multishot(&w->ring, w->listen_fds[i], ud)) == 0)
            w->accepting |= 1u << i;
        else
            w->flags |= RS_WORKER_F_OWE_ACCEPT;
    }
    if (w->accepting != 0)
        w->flags |= RS_WORKER_F_ACCEPTING;
}

/* Cancels every armed accept; returns -errno when a cancel could not be submitted. */
static int cancel_accepts(struct rs_worker *w)
{
    unsigned i;
    int ret = 0;

    for (i = 0; i < RS_LISTEN_MAX; i++)
        if ((w->accepting & (1u << i)) && rs_ring_cancel(&w->ring, rs_ud_make(RS_OP_ACCEPT, i, 0),
                                                         rs_ud_make(RS_OP_CANCEL, 0, 0)) < 0)
            ret = -EBUSY;
    return ret;
}

static void arm_tick(struct rs_worker *w)
{
    w->tick_ts.tv_sec = 1;
    w->tick_ts.tv_nsec = 0;
    w->flags &= ~RS_WORKER_F_OWE_TICK;
    if (rs_ring_timeout(&w->ring, &w->tick_ts, rs_ud_make(RS_OP_TICK, 0, 0)) < 0)
        w->flags |= RS_WORKER_F_OWE_TICK;
}

static void timers_run(struct rs_worker *w);

static void on_tick(struct rs_worker *w)
{
    uint64_t now = rs_now_ms();
    unsigned i;

    __atomic_store_n(&w->metrics.tick_ms, now, __ATOMIC_RELAXED); /* for the watchdog */
    if (w->timer_armed_ns == 0 && rs_timerheap_count(&w->timers) > 0)
        timers_run(w); /* arming failed earlier (ring full): catch up */

    for (i = 1; i < w->nconns; i++)
        if (w->conns[i] != NULL)
            rs_conn_tick(w->conns[i], now);
    rs_metrics_sample(w);
    arm_tick(w);
}

static void arm_wake(struct rs_worker *w)
{
    w->flags &= ~RS_WORKER_F_OWE_WAKE;
    if (w->wake_fd < 0)
        return;
    if (rs_ring_read(&w->ring, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0,
                     rs_ud_make(RS_OP_WAKE, 0, 0)) < 0)
        w->flags |= RS_WORKER_F_OWE_WAKE;
}

static void arm_drain_timer(struct rs_worker *w)
{
    w->drain_ts.tv_sec = w->srv->cfg.drain_ms / 1000;
    w->drain_ts.tv_nsec = (long long)(w->srv->cfg.drain_ms % 1000) * 1000000;
    w->flags &= ~RS_WORKER_F_OWE_DRAIN_TIMER;
    if (rs_ring_timeout(&w->ring, &w->drain_ts, rs_ud_make(RS_OP_TIMER, 0, 0)) < 0)
        w->flags |= RS_WORKER_F_OWE_DRAIN_TIMER;
}

static void cancel_accept(struct rs_worker *w)
{
    w->flags &= ~RS_WORKER_F_OWE_ACCEPT_CANCEL;
    if (!(w->flags & RS_WORKER_F_ACCEPTING))
        return;
    if (cancel_accepts(w) < 0)
        w->flags |= RS_WORKER_F_OWE_ACCEPT_CANCEL;
}

static void timers_arm(struct rs_worker *w);

void rs_worker_rearm(struct rs_worker *w)
{
    if (w->flags & RS_WORKER_F_OWE_WAKE)
        arm_wake(w);
    if (w->flags & RS_WORKER_F_OWE_TICK)
        arm_tick(w);
    if (w->flags & RS_WORKER_F_OWE_ACCEPT)
        arm_accept(w);
    if (w->flags & RS_WORKER_F_OWE_ACCEPT_CANCEL)
        cancel_accept(w);
    if (w->flags & RS_WORKER_F_OWE_DRAIN_TIMER)
        arm_drain_timer(w);
    /* the call timers' one ring timeout, when arming it failed (timers_arm) */
    if (w->timer_armed_ns == 0 && rs_timerheap_peek(&w->timers) != NULL)
        timers_arm(w);
}

/* Zeroed memory for the per-slot arrays (--max-conns + 1 entries each): mapped, so only the
 * pages of slots in use become resident. calloc would have written all of it (a thread's
 * arena clears what it reuses): 124 KiB a worker at --max-conns 9900, before any connection.
 * Slots are handed out round-robin, so a server that has cycled through them all holds every
 * page again; a fresh one, or one that never had many connections, does not. NULL when out of
 * memory. */
static void *slots_alloc(size_t n, size_t size)
{
    void *p = mmap(NULL, n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

static void slots_free(void *p, size_t n, size_t size)
{
    if (p != NULL)
        munmap(p, n * size);
}

int rs_worker_init(struct rs_worker *w, char *err, size_t errlen)
{
    const struct rs_config *cfg = &w->srv->cfg;
    unsigned i;
    int ret;

    ret = rs_ring_init(&w->ring, 256, err, errlen);
    if (ret < 0)
        return ret;
    ret = rs_ring_bufs_init(&w->ring, 1, RS_RECV_BUFS, RS_RECV_BUFSIZE);
    if (ret < 0) {
        snprintf(err, errlen, "io_uring provided buffers: %s", strerror(-ret));
        return ret;
    }
    rs_pool_init(&w->pool, RS_POOL_BLOCK, cfg->pool_bytes / RS_POOL_BLOCK + 1, 64);
    rs_pool_init(&w->small, RS_POOL_SMALL_BLOCK, cfg->pool_bytes / 1024 + 1, RS_POOL_SMALL_CACHED);
    rs_pool_init(&w->tiny, RS_POOL_TINY_BLOCK, cfg->pool_bytes / 256 + 1, RS_POOL_TINY_CACHED);
    ret = rs_budget_init(&w->budget, cfg->worker_budget, cfg->conn_share);
    if (ret < 0) {
        snprintf(err, errlen, "invalid memory budget (%zu, share %zu)", cfg->worker_budget,
                 cfg->conn_share);
        return ret;
    }
    w->nconns = cfg->max_conns + 1;
    w->conns = slots_alloc(w->nconns, sizeof(*w->conns));
    w->conn_gen = slots_alloc(w->nconns, sizeof(*w->conn_gen));
    /* The I/O table starts small (4,096 slots were 160 KiB a worker, every page written by
     * the free list below, for the file operations only Bulk calls issue) and grows on
     * demand (io_grow) up to 64 slots per allowed connection: slots are held only while a file
     * operation is in flight (timers live in the timer heap), so a bound in proportion to
     * --max-conns is reached only when every connection keeps that many operations in flight at
     * once. */
    w->nioreqs = RS_IOREQ_INITIAL;
    w->nioreqs_max = cfg->max_conns > RS_IOREQ_FLOOR / RS_IOREQ_PER_CONN
                             ? cfg->max_conns * RS_IOREQ_PER_CONN
                             : RS_IOREQ_FLOOR;
    if (w->nioreqs_max > RS_IOREQ_LIMIT)
        w->nioreqs_max = RS_IOREQ_LIMIT;
    w->ioreqs = calloc(w->nioreqs, sizeof(*w->ioreqs));
    rs_timerheap_init(&w->timers);
    w->zconn = slots_alloc(w->nconns, sizeof(*w->zconn));
    w->outslab = mmap(NULL, (size_t)RS_OUTBUF_CACHED * RS_CONN_OUTBUF, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (w->outslab == MAP_FAILED)
        w->outslab = NULL;
    if (w->conns == NULL || w->conn_gen == NULL || w->ioreqs == NULL || w->zconn == NULL ||
        w->outslab == NULL || rs_metrics_init(w) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* slot 0 is never used: a zero slot in user_data names the worker itself */
    for (i = 1; i < w->nioreqs; i++)
        w->ioreqs[i].next_free = i + 1 < w->nioreqs ? i + 1 : 0;
    w->io_free = 1;
    w->free_hint = 1;
    rs_list_init(&w->pending);
    __atomic_store_n(&w->metrics.tick_ms, rs_now_ms(), __ATOMIC_RELAXED);
    arm_accept(w);
    arm_wake(w);
    arm_tick(w);
    return 0;
}

uint8_t *rs_worker_outbuf_get(struct rs_worker *w)
{
    uint8_t *buf = w->outbuf_free;

    if (buf != NULL) {
        memcpy(&w->outbuf_free, buf, sizeof(void *));
        return buf;
    }
    if (w->outslab != NULL && w->outslab_used < RS_OUTBUF_CACHED)
        return w->outslab + (size_t)w->outslab_used++ * RS_CONN_OUTBUF;
    return malloc(RS_CONN_OUTBUF);
}

void rs_worker_outbuf_put(struct rs_worker *w, uint8_t *buf)
{
    if (buf == NULL)
        return;
    if (w->outslab == NULL || buf < w->outslab ||
        buf >= w->outslab + (size_t)RS_OUTBUF_CACHED * RS_CONN_OUTBUF) {
        free(buf);
        return;
    }
    /* Most recently used on top: its first page is the likeliest to be resident and cached. */
    memcpy(buf, &w->outbuf_free, sizeof(void *));
    w->outbuf_free = buf;
}

static void outbufs_free_all(struct rs_worker *w)
{
    if (w->outslab != NULL)
        munmap(w->outslab, (size_t)RS_OUTBUF_CACHED * RS_CONN_OUTBUF);
    w->outslab = NULL;
    w->outslab_used = 0;
    w->outbuf_free = NULL;
}

static void timers_free_all(struct rs_worker *w);

void rs_worker_fini(struct rs_worker *w)
{
    timers_free_all(w);
    outbufs_free_all(w);
    /* A started server's counters outlive the worker's thread: another worker (or the
     * metrics-listen thread) may be rendering them while this one has stopped, so
     * rs_server_destroy() frees them once every thread is joined. */
    if (w->srv == NULL || !w->srv->started)
        rs_metrics_fini(w);
    slots_free(w->zconn, w->nconns, sizeof(*w->zconn));
    w->zconn = NULL;
    slots_free(w->conns, w->nconns, sizeof(*w->conns));
    w->conns = NULL;
    slots_free(w->conn_gen, w->nconns, sizeof(*w->conn_gen));
    w->conn_gen = NULL;
    free(w->ioreqs);
    w->ioreqs = NULL;
    rs_ring_fini(&w->ring);
    if (w->pool.block_size != 0)
        rs_pool_fini(&w->pool);
    w->pool.block_size = 0;
    if (w->small.block_size != 0)
        rs_pool_fini(&w->small);
    w->small.block_size = 0;
    if (w->tiny.block_size != 0)
        rs_pool_fini(&w->tiny);
    w->tiny.block_size = 0;
}

void rs_worker_mark_pending(struct rs_worker *w, struct rs_conn *c)
{
    if (!rs_list_linked(&c->pending_link))
        rs_list_insert_tail(&w->pending, &c->pending_link);
}

static uint32_t conn_slot_alloc(struct rs_worker *w)
{
    unsigned i, s;

    for (i = 0; i < w->nconns - 1; i++) {
        s = w->free_hint + i;
        if (s >= w->nconns)
            s -= w->nconns - 1;
        if (w->conns[s] == NULL) {
            w->free_hint = s + 1 < w->nconns ? s + 1 : 1;
            return s;
        }
    }
    return 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Out of descriptors (EMFILE/ENFILE): the pending connection stays in the listen backlog, and
 * accepting again at once would only fail again, in a loop. Stop accepting, retry after a
 * delay that doubles up to RS_ACCEPT_BACKOFF_MAX_MS, and log once per interval with a count;
 * existing connections keep being served meanwhile. */
static void accept_backoff(struct rs_worker *w, int err)
{
    uint64_t now = mono_ns() / 1000000u;
    unsigned ms;

    w->accept_refused++;
    if (w->flags & RS_WORKER_F_ACCEPT_WAIT)
        return;
    ms = w->accept_backoff_ms == 0 ? RS_ACCEPT_BACKOFF_MIN_MS : w->accept_backoff_ms * 2;
    if (ms > RS_ACCEPT_BACKOFF_MAX_MS)
        ms = RS_ACCEPT_BACKOFF_MAX_MS;
    w->accept_backoff_ms = ms;
    if (w->accept_logged_ms == 0 || now - w->accept_logged_ms >= RS_ACCEPT_BACKOFF_MAX_MS) {
        rs_log_warn("worker %u: accept: %s (%u failures since the last report); pausing "
                    "accept for %u ms, existing connections are still served",
                    w->id, strerror(-err), w->accept_refused, ms);
        w->accept_refused = 0;
        w->accept_logged_ms = now;
    }
    if (w->flags & RS_WORKER_F_ACCEPTING)
        cancel_accepts(w);
    w->accept_ts.tv_sec = ms / 1000;
    w->accept_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    if (rs_ring_timeout(&w->ring, &w->accept_ts, rs_ud_make(RS_OP_BACKOFF, 0, 0)) < 0) {
        rs_log_error("worker %u: cannot arm the accept backoff; accepting again now", w->id);
        arm_accept(w);
        return;
    }
    w->flags |= RS_WORKER_F_ACCEPT_WAIT;
}

void rs_worker_budget_note(struct rs_worker *w, int err, const char *what)
{
    uint64_t now = rs_now_ms();

    if (w->budget_logged_ms != 0 && now - w->budget_logged_ms < 1000)
        return;
    w->budget_logged_ms = now;
    rs_log_warn("worker %u: refused %s: %s (worker %zu of %zu bytes in use, peak %zu; refusals: "
                "worker %llu, connection share %llu, streams %llu, accepts %llu)",
                w->id, what,
                err == -EDQUOT ? "the connection is at its memory share"
                               : "the worker's memory budget is spent",
                w->budget.used, w->budget.limit, w->budget.peak,
                (unsigned long long)w->budget.refused[RS_BUDGET_R_WORKER],
                (unsigned long long)w->budget.refused[RS_BUDGET_R_SHARE],
                (unsigned long long)w->budget.refused[RS_BUDGET_R_STREAM],
                (unsigned long long)w->budget.refused[RS_BUDGET_R_ACCEPT]);
}

static void on_accept_retry(struct rs_worker *w)
{
    w->flags &= ~RS_WORKER_F_ACCEPT_WAIT;
    if (!(w->flags & RS_WORKER_F_ACCEPTING))
        arm_accept(w);
}

/* The TLS context a connection accepted on listener |idx| uses, with a reference the caller
 * drops; NULL for cleartext. */
static struct rs_tls_ctx *listener_tls(struct rs_worker *w, unsigned idx)
{
    struct rs_server *s = w->srv;
    struct rs_tls_ctx *ctx = NULL;

    if (idx < s->cfg.nlisten && s->cfg.listen[idx].h2c)
        return NULL;
    pthread_mutex_lock(&s->tls_lock);
    if (s->tls != NULL) {
        ctx = s->tls;
        rs_tls_ctx_ref(ctx);
    }
    pthread_mutex_unlock(&s->tls_lock);
    return ctx;
}

static void on_accept(struct rs_worker *w, const struct rs_ring_cqe *cqe)
{
    struct rs_tls_ctx *tls;
    struct rs_conn *c;
    uint32_t slot;
    unsigned idx = rs_ud_gen(cqe->user_data);
    int fd = cqe->res, one = 1;

    if (!(cqe->flags & RS_RING_F_MORE)) {
        if (idx < RS_LISTEN_MAX)
            w->accepting &= ~(1u << idx);
        if (w->accepting == 0)
            w->flags &= ~RS_WORKER_F_ACCEPTING;
        if (fd != -EMFILE && fd != -ENFILE)
            arm_accept(w);
    }
    if (fd < 0) {
        if (fd == -EMFILE || fd == -ENFILE)
            accept_backoff(w, fd);
        else if (fd != -ECANCELED)
            rs_log_warn("worker %u: accept: %s", w->id, strerror(-fd));
        return;
    }
    if (w->accept_backoff_ms != 0) {
        rs_log_info("worker %u: accepting again (%u accept failures since the last report)", w->id,
                    w->accept_refused);
        w->accept_backoff_ms = 0;
        w->accept_refused = 0;
        w->accept_logged_ms = 0;
    }
    if (w->flags & RS_WORKER_F_DRAINING) {
        rs_metric_add(&w->metrics.conns_refused, 1);
        close(fd);
        return;
    }
    /* The last step of degradation: near the memory budget no connection is accepted; the
     * accept pauses (backing off) so the kernel's backlog holds the rest. */
    if (!rs_budget_admit_conn(&w->budget)) {
        rs_metric_add(&w->metrics.conns_refused, 1);
        close(fd);
        rs_worker_budget_note(w, -ENOBUFS, "new connections (accept paused)");
        accept_backoff(w, -ENOBUFS);
        return;
    }
    slot = conn_slot_alloc(w);
    if (slot == 0) {
        rs_log_warn("worker %u: connection limit (%u) reached, refusing", w->id, w->nconns - 1);
        rs_metric_add(&w->metrics.conns_refused, 1);
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    w->conn_gen[slot] = (w->conn_gen[slot] + 1) & 0xffffffu;
    tls = listener_tls(w, idx);
    c = rs_conn_new(w, fd, slot, w->conn_gen[slot], tls);
    rs_tls_ctx_unref(tls);
    if (c == NULL) {
        rs_log_warn("worker %u: out of memory for a new connection", w->id);
        close(fd);
        return;
    }
    w->conns[slot] = c;
    rs_metric_add(&w->metrics.conns_accepted, 1);
    rs_worker_mark_pending(w, c);
}

/* What one ring operation needs; which fields count depends on its RS_IO_* kind. Every pointer
 * is borrowed until the completion. */
struct io_args {
    int fd;            /* the file, or the directory |path| is relative to */
    int fd2;           /* linkat, renameat: the directory |path2| is relative to */
    const char *path;  /* openat, statx, linkat, renameat, unlinkat; an xattr's name */
    const char *path2; /* linkat, renameat: the new name */
    void *buf;         /* data, an xattr's value, or a struct statx */
    size_t len;
    uint64_t off;  /* file offset; a timer's delay in ns */
    int flags;     /* of the syscall of the same name */
    unsigned mode; /* openat: the new file's mode; statx: the mask */
};

/* Doubles the I/O table up to nioreqs_max. Returns 0 or -ENOMEM (at the bound, or no memory). */
static int io_grow(struct rs_worker *w)
{
    unsigned n = w->nioreqs * 2, i;
    struct rs_ioreq *v;

    if (n > w->nioreqs_max)
        n = w->nioreqs_max;
    if (n <= w->nioreqs)
        return -ENOMEM;
    v = realloc(w->ioreqs, n * sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    memset(v + w->nioreqs, 0, (n - w->nioreqs) * sizeof(*v));
    for (i = w->nioreqs; i < n; i++)
        v[i].next_free = i + 1 < n ? i + 1 : w->io_free;
    w->io_free = w->nioreqs;
    w->ioreqs = v;
    w->nioreqs = n;
    return 0;
}

static int queue_op(struct rs_worker *w, struct rs_call *call, int kind, const struct io_args *a,
                    rs_call_io_cb cb, void *arg)
{
    struct rs_ioreq *r;
    unsigned slot;
    uint64_t ud;
    int ret;

    if (w->io_free == 0 && io_grow(w) < 0)
        return -ENOMEM;
    slot = w->io_free;
    r = &w->ioreqs[slot];
    r->gen = (r->gen + 1) & 0xffffffu;
    ud = rs_ud_make(RS_OP_IO, r->gen, slot);
    switch (kind) {
    case RS_IO_READ:
        ret = rs_ring_read(&w->ring, a->fd, a->buf, a->len, a->off, ud);
        break;
    case RS_IO_READV:
        ret = rs_ring_readv(&w->ring, a->fd, a->buf, (unsigned)a->len, a->off, ud);
        break;
    case RS_IO_WRITE:
        ret = rs_ring_write(&w->ring, a->fd, a->buf, a->len, a->off, ud);
        break;
    case RS_IO_FSYNC:
        ret = rs_ring_fsync(&w->ring, a->fd, ud);
        break;
    case RS_IO_OPENAT:
        ret = rs_ring_openat(&w->ring, a->fd, a->path, a->flags, (mode_t)a->mode, ud);
        break;
    case RS_IO_STATX:
        ret = rs_ring_statx(&w->ring, a->fd, a->path, a->flags, a->mode, a->buf, ud);
        break;
    case RS_IO_LINKAT:
        ret = rs_ring_linkat(&w->ring, a->fd, a->path, a->fd2, a->path2, a->flags, ud);
        break;
    case RS_IO_RENAMEAT:
        ret = rs_ring_renameat(&w->ring, a->fd, a->path, a->fd2, a->path2, (unsigned)a->flags, ud);
        break;
    case RS_IO_UNLINKAT:
        ret = rs_ring_unlinkat(&w->ring, a->fd, a->path, a->flags, ud);
        break;
    case RS_IO_FGETXATTR:
        ret = rs_ring_fgetxattr(&w->ring, a->fd, a->path, a->buf, a->len, ud);
        break;
    case RS_IO_FSETXATTR:
        ret = rs_ring_fsetxattr(&w->ring, a->fd, a->path, a->buf, a->len, a->flags, ud);
        break;
    case RS_IO_CLOSE:
        ret = rs_ring_close(&w->ring, a->fd, ud);
        break;
    default:
        return -EINVAL;
    }
    if (ret < 0)
        return -ENOMEM;
    w->io_free = r->next_free;
    r->kind = kind;
    r->call = call;
    r->cb = cb;
    r->arg = arg;
    call->refs++;
    return 0;
}

int rs_worker_queue_io(struct rs_worker *w, struct rs_call *call, int kind, int fd, void *buf,
                       size_t len, uint64_t off, rs_call_io_cb cb, void *arg)
{
    struct io_args a = { .fd = fd, .buf = buf, .len = len, .off = off };

    return queue_op(w, call, kind, &a, cb, arg);
}

static void on_io(struct rs_worker *w, const struct rs_ring_cqe *cqe)
{
    uint32_t slot = rs_ud_slot(cqe->user_data);
    struct rs_ioreq *r;
    struct rs_call *call;

    if (slot == 0 || slot >= w->nioreqs || w->ioreqs[slot].call == NULL ||
        w->ioreqs[slot].gen != rs_ud_gen(cqe->user_data)) {
        rs_log_bug("worker %u: stale I/O completion %#llx", w->id,
                   (unsigned long long)cqe->user_data);
        return;
    }
    r = &w->ioreqs[slot];
    call = r->call;
    r->call = NULL;
    r->next_free = w->io_free;
    w->io_free = slot;
    call->refs--;
    if (r->cb != NULL)
        r->cb(call, r->arg, cqe->res);
    if (!rs_stream_maybe_reap(call))
        rs_stream_mark_ready(call);
}

static void start_drain(struct rs_worker *w)
{
    unsigned i;

    if (w->flags & RS_WORKER_F_DRAINING)
        return;
    w->flags |= RS_WORKER_F_DRAINING;
    w->flags &= ~RS_WORKER_F_OWE_ACCEPT;
    cancel_accept(w);
    for (i = 1; i < w->nconns; i++)
        if (w->conns[i] != NULL)
            rs_conn_drain(w->conns[i]);
    arm_drain_timer(w);
}

/* The drain timer expired. First time (--drain-ms ran out): every call still running ends with
 * UNAVAILABLE "server shutting down" in its trailers (RST_STREAM follows when the client has
 * not finished its request), and RS_DRAIN_GRACE_MS lets that go out. Second time: whatever
 * is left is closed. */
#define RS_DRAIN_GRACE_MS 250u

static void on_drain_timer(struct rs_worker *w)
{
    struct rs_list *l;
    unsigned i, n = 0;

    if (w->flags & RS_WORKER_F_DRAIN_GRACE) {
        for (i = 1; i < w->nconns; i++)
            if (w->conns[i] != NULL) {
                rs_conn_note_close(w->conns[i], RS_CLOSE_DRAIN);
                rs_conn_close(w->conns[i]);
            }
        return;
    }
    w->flags |= RS_WORKER_F_DRAIN_GRACE;
    for (i = 1; i < w->nconns; i++) {
        struct rs_conn *c = w->conns[i];

        if (c == NULL || (c->flags & RS_CONN_F_CLOSING))
            continue;
        for (l = c->calls.next; l != &c->calls; l = l->next) {
            rs_stream_shutdown(rs_container_of(l, struct rs_call, link));
            n++;
        }
        rs_worker_mark_pending(w, c);
    }
    if (n > 0)
        rs_log_info("worker %u: drain time over: ending %u calls with UNAVAILABLE", w->id, n);
    w->drain_ts.tv_sec = 0;
    w->drain_ts.tv_nsec = (long long)RS_DRAIN_GRACE_MS * 1000000;
    if (rs_ring_timeout(&w->ring, &w->drain_ts, rs_ud_make(RS_OP_TIMER, 0, 0)) < 0)
        for (i = 1; i < w->nconns; i++) /* no timer: close now rather than never */
            if (w->conns[i] != NULL) {
                rs_conn_note_close(w->conns[i], RS_CLOSE_DRAIN);
                rs_conn_close(w->conns[i]);
            }
}

static struct rs_conn *conn_of(struct rs_worker *w, uint64_t ud)
{
    uint32_t slot = rs_ud_slot(ud);

    if (slot == 0 || slot >= w->nconns || w->conns[slot] == NULL ||
        w->conns[slot]->gen != rs_ud_gen(ud))
        return NULL;
    return w->conns[slot];
}

static void on_timers(struct rs_worker *w, const struct rs_ring_cqe *cqe);

void rs_worker_handle_cqe(struct rs_worker *w, const struct rs_ring_cqe *cqe)
{
    struct rs_conn *c;

    switch ((enum rs_op)rs_ud_op(cqe->user_data)) {
    case RS_OP_ACCEPT:
        on_accept(w, cqe);
        break;
    case RS_OP_RECV:
        c = conn_of(w, cqe->user_data);
        if (c == NULL) {
            rs_log_bug("worker %u: stale recv completion", w->id);
            if (cqe->flags & RS_RING_F_BUFFER)
                rs_ring_buf_recycle(&w->ring, cqe->bid);
            break;
        }
        rs_conn_on_recv(c, cqe);
        break;
    case RS_OP_SEND:
        c = conn_of(w, cqe->user_data);
        if (c == NULL) {
            rs_log_bug("worker %u: stale send completion", w->id);
            break;
        }
        rs_conn_on_send(c, cqe);
        break;
    case RS_OP_IO:
        on_io(w, cqe);
        break;
    case RS_OP_WAKE:
        start_drain(w);
        break;
    case RS_OP_TIMER:
        if (cqe->res == -ETIME)
            on_drain_timer(w);
        break;
    case RS_OP_CANCEL:
        break;
    case RS_OP_TICK:
        on_tick(w);
        break;
    case RS_OP_TIMERS:
        on_timers(w, cqe);
        break;
    case RS_OP_BACKOFF:
        on_accept_retry(w);
        break;
    }
}

static void on_cqe(void *ctx, const struct rs_ring_cqe *cqe)
{
    rs_worker_handle_cqe(ctx, cqe);
}

void rs_worker_run_pending(struct rs_worker *w)
{
    struct rs_conn *c;

    while (!rs_list_empty(&w->pending)) {
        c = rs_container_of(w->pending.next, struct rs_conn, pending_link);
        rs_list_unlink(&c->pending_link);
        rs_conn_run(c);
        if (rs_conn_maybe_free(c)) {
            rs_metric_add(&w->metrics.conns_closed, 1);
            continue;
        }
    }
}

bool rs_worker_idle(const struct rs_worker *w)
{
    unsigned i;

    for (i = 1; i < w->nconns; i++)
        if (w->conns[i] != NULL)
            return false;
    return true;
}

int rs_worker_turn(struct rs_worker *w)
{
    int ret = rs_ring_wait(&w->ring, on_cqe, w);

    if (ret < 0)
        return ret;
    rs_worker_run_pending(w);
    /* Last, so what was owed is queued for the next wait to submit. A retry fails again only
     * if io_uring_submit() itself could not empty the queue (ring.c submits before giving up
     * on an SQE); then completions are pending (-EBUSY: CQ overflow) and the wait returns at
     * once, or the armed tick ends it within a second. A tick that stays owed with nothing in
     * flight would need rs_ring_wait() with a timeout (uring/, not changed here). */
    rs_worker_rearm(w);
    return ret;
}

static void *worker_main(void *arg)
{
    struct rs_worker *w = arg;
    int ret;

    /* The ring must be created by the thread that uses it (SINGLE_ISSUER binds the creator). */
    w->setup_ret = rs_worker_init(w, w->setup_err, sizeof(w->setup_err));
    pthread_barrier_wait(&w->srv->barrier);
    pthread_barrier_wait(&w->srv->barrier); /* main has decided: all go, or all give up */
    if (w->srv->setup_failed) {
        rs_worker_fini(w);
        return NULL;
    }
    for (;;) {
        ret = rs_worker_turn(w);
        if (ret < 0) {
            rs_log_error("worker %u: io_uring wait: %s", w->id, strerror(-ret));
            break;
        }
        if ((w->flags & RS_WORKER_F_DRAINING) && rs_worker_idle(w))
            break;
    }
    rs_worker_fini(w);
    __atomic_add_fetch(&w->srv->nexited, 1, __ATOMIC_RELEASE);
    return NULL;
}

int rs_server_layout(struct rs_server *s)
{
    size_t i;

    /* Rows of the metrics' call table: every method of every service, then "unknown". The
     * services' own counters follow each other the same way. */
    s->method_base = calloc(s->nservices + 1, sizeof(*s->method_base));
    s->stat_base = calloc(s->nservices + 1, sizeof(*s->stat_base));
    if (s->method_base == NULL || s->stat_base == NULL)
        return -ENOMEM; /* both freed by rs_server_destroy() */
    s->nmethods = s->nstats = 0;
    for (i = 0; i < s->nservices; i++) {
        s->method_base[i] = s->nmethods;
        s->nmethods += s->services[i]->nmethods;
        s->stat_base[i] = s->nstats;
        s->nstats += s->services[i]->nstats;
    }
    return 0;
}

int rs_server_start(struct rs_server *s, char *err, size_t errlen)
{
    sigset_t all, old;
    unsigned i;
    int ret;

    if (rs_server_layout(s) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    ret = pthread_barrier_init(&s->barrier, NULL, s->cfg.workers + 1);
    if (ret != 0) {
        snprintf(err, errlen, "pthread_barrier_init: %s", strerror(ret));
        return -ret;
    }
    /* Workers never take signals: the main thread waits for them. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (i = 0; i < s->cfg.workers; i++) {
        ret = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
        if (ret != 0) {
            /* Threads already started wait at the barrier; the caller exits the process. */
            snprintf(err, errlen, "pthread_create: %s", strerror(ret));
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            return -ret;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    s->started = true;
    pthread_barrier_wait(&s->barrier); /* every worker has set up, or failed to */
    ret = 0;
    for (i = 0; i < s->cfg.workers; i++) {
        if (s->workers[i].setup_ret < 0) {
            snprintf(err, errlen, "worker %u: %s", i, s->workers[i].setup_err);
            ret = s->workers[i].setup_ret;
            s->setup_failed = true;
            break;
        }
    }
    pthread_barrier_wait(&s->barrier);
    return ret;
}

void rs_server_stop(struct rs_server *s)
{
    uint64_t one = 1;
    unsigned i;

    for (i = 0; i < s->cfg.workers; i++) {
        ssize_t n = write(s->workers[i].wake_fd, &one, sizeof(one));
        (void)n;
    }
}

bool rs_server_stopped(const struct rs_server *s)
{
    return !s->started || __atomic_load_n(&s->nexited, __ATOMIC_ACQUIRE) == s->cfg.workers;
}

void rs_server_destroy(struct rs_server *s)
{
    unsigned i, j;

    if (s == NULL)
        return;
    for (i = 0; i < s->cfg.workers; i++) {
        struct rs_worker *w = &s->workers[i];

        if (s->started) {
            pthread_join(w->thread, NULL); /* the thread tore its ring down itself */
            rs_metrics_fini(w);
        } else {
            rs_worker_fini(w);
        }
        for (j = 0; j < RS_LISTEN_MAX; j++)
            if (w->listen_fds[j] >= 0)
                close(w->listen_fds[j]);
        if (w->wake_fd >= 0)
            close(w->wake_fd);
    }
    free(s->workers);
    free(s->services);
    free(s->method_base);
    free(s->stat_base);
    rs_tls_ctx_unref(s->tls);
    rs_tls_keys_unref(s->tls_keys); /* contexts still held by connections hold their own */
    pthread_mutex_destroy(&s->tls_lock);
    free(s);
}

int rs_server_reload_tls(struct rs_server *s, char *err, size_t errlen)
{
    struct rs_tls_ctx *ctx, *old;

    if (s->tls == NULL)
        return 0;
    /* The same ticket keys: tickets issued before the reload stay valid. */
    ctx = rs_tls_ctx_new(s->cfg.tls_cert, s->cfg.tls_key, s->cfg.tls_client_ca, s->tls_keys, err,
                         errlen);
    if (ctx == NULL)
        return -EINVAL;
    pthread_mutex_lock(&s->tls_lock);
    old = s->tls;
    s->tls = ctx;
    pthread_mutex_unlock(&s->tls_lock);
    rs_tls_ctx_unref(old); /* established connections hold their own references */
    return 0;
}

int rs_call_pread(struct rs_call *call, int fd, void *buf, size_t len, uint64_t off,
                  rs_call_io_cb cb, void *arg)
{
    return rs_worker_queue_io(call->conn->w, call, RS_IO_READ, fd, buf, len, off, cb, arg);
}

int rs_call_preadv(struct rs_call *call, int fd, const struct iovec *iov, unsigned iovcnt,
                   uint64_t off, rs_call_io_cb cb, void *arg)
{
    return rs_worker_queue_io(call->conn->w, call, RS_IO_READV, fd, (void *)iov, iovcnt, off, cb,
                              arg);
}

int rs_call_pwrite(struct rs_call *call, int fd, const void *buf, size_t len, uint64_t off,
                   rs_call_io_cb cb, void *arg)
{
    return rs_worker_queue_io(call->conn->w, call, RS_IO_WRITE, fd, (void *)buf, len, off, cb, arg);
}

int rs_call_fsync(struct rs_call *call, int fd, rs_call_io_cb cb, void *arg)
{
    return rs_worker_queue_io(call->conn->w, call, RS_IO_FSYNC, fd, NULL, 0, 0, cb, arg);
}

int rs_call_openat(struct rs_call *call, int dirfd, const char *path, int flags, unsigned mode,
                   rs_call_io_cb cb, void *arg)
{
    struct io_args a = { .fd = dirfd, .path = path, .flags = flags, .mode = mode };

    return queue_op(call->conn->w, call, RS_IO_OPENAT, &a, cb, arg);
}

int rs_call_statx(struct rs_call *call, int dirfd, const char *path, int flags, unsigned mask,
                  struct statx *stx, rs_call_io_cb cb, void *arg)
{
    struct io_args a = { .fd = dirfd, .path = path, .flags = flags, .mode = mask, .buf = stx };

    return queue_op(call->conn->w, call, RS_IO_STATX, &a, cb, arg);
}

int rs_call_linkat(struct rs_call *call, int olddirfd, const char *oldpath, int newdirfd,
                   const char *newpath, int flags, rs_call_io_cb cb, void *arg)
{
    struct io_args a = {
        .fd = olddirfd, .path = oldpath, .fd2 = newdirfd, .path2 = newpath, .flags = flags
    };

    return queue_op(call->conn->w, call, RS_IO_LINKAT, &a, cb, arg);
}

int rs_call_renameat(struct rs_call *call, int olddirfd, const char *oldpath, int newdirfd,
                     const char *newpath, unsigned flags, rs_call_io_cb cb, void *arg)
{
    struct io_args a = {
        .fd = olddirfd, .path = oldpath, .fd2 = newdirfd, .path2 = newpath, .flags = (int)flags
    };

    return queue_op(call->conn->w, call, RS_IO_RENAMEAT, &a, cb, arg);
}

int rs_call_unlinkat(struct rs_call *call, int dirfd, const char *path, int flags, rs_call_io_cb cb,
                     void *arg)
{
    struct io_args a = { .fd = dirfd, .path = path, .flags = flags };

    return queue_op(call->conn->w, call, RS_IO_UNLINKAT, &a, cb, arg);
}

int rs_call_fgetxattr(struct rs_call *call, int fd, const char *name, void *value, size_t len,
                      rs_call_io_cb cb, void *arg)
{
    struct io_args a = { .fd = fd, .path = name, .buf = value, .len = len };

    return queue_op(call->conn->w, call, RS_IO_FGETXATTR, &a, cb, arg);
}

int rs_call_fsetxattr(struct rs_call *call, int fd, const char *name, const void *value, size_t len,
                      int flags, rs_call_io_cb cb, void *arg)
{
    struct io_args a = { .fd = fd, .path = name, .buf = (void *)value, .len = len, .flags = flags };

    return queue_op(call->conn->w, call, RS_IO_FSETXATTR, &a, cb, arg);
}

int rs_call_close(struct rs_call *call, int fd, rs_call_io_cb cb, void *arg)
{
    struct io_args a = { .fd = fd };

    return queue_op(call->conn->w, call, RS_IO_CLOSE, &a, cb, arg);
}

/* ---- call timers ------------------------------------------------------------------------ */

/* One rs_call_timer(): allocated per timer and charged to its call (a reference and
 * call->ntimers) until its callback has run. */
struct call_timer {
    struct rs_timer t;    /* in w->timers while pending */
    struct rs_list link;  /* in call->timers */
    struct rs_call *call; /* holds a reference until the callback ran */
    rs_call_io_cb cb;
    void *arg;
    int res; /* what cb gets: 0, or -ECANCELED once cancelled */
};

/* Arms the worker's one ring timeout for the earliest expiry unless one is already armed for
 * that time or earlier (an early wake-up just re-arms). A later one is cancelled first. */
static void timers_arm(struct rs_worker *w)
{
    struct rs_timer *first = rs_timerheap_peek(&w->timers);
    uint64_t now, delay, want;

    if (first == NULL)
        return;
    want = first->expiry != 0 ? first->expiry : 1; /* never 0 while armed: 0 means "none" */
    if (w->timer_armed_ns != 0 && w->timer_armed_ns <= want)
        return;
    if (w->timer_armed_ns != 0)
        rs_ring_cancel(&w->ring, rs_ud_make(RS_OP_TIMERS, w->timer_gen, 0),
                       rs_ud_make(RS_OP_CANCEL, 0, 0));
    w->timer_gen = (w->timer_gen + 1) & 0xffffffu;
    now = mono_ns();
    delay = first->expiry > now ? first->expiry - now : 0;
    w->timer_ts.tv_sec = (long long)(delay / 1000000000u);
    w->timer_ts.tv_nsec = (long long)(delay % 1000000000u);
    if (rs_ring_timeout(&w->ring, &w->timer_ts, rs_ud_make(RS_OP_TIMERS, w->timer_gen, 0)) < 0) {
        /* the once-a-second tick tries again (timers_check) */
        rs_log_error("worker %u: cannot arm the timer heap's timeout", w->id);
        w->timer_armed_ns = 0;
        return;
    }
    w->timer_armed_ns = want;
}

static void timer_fire(struct rs_worker *w, struct call_timer *ct)
{
    struct rs_call *call = ct->call;
    rs_call_io_cb cb = ct->cb;
    void *arg = ct->arg;
    int res = ct->res;

    (void)w;
    rs_list_unlink(&ct->link);
    free(ct);
    call->refs--;
    call->ntimers--;
    cb(call, arg, res);
    if (!rs_stream_maybe_reap(call))
        rs_stream_mark_ready(call);
}

/* Runs the callbacks of every timer due now. Bounded by the heap's size on entry, so a
 * callback that adds a zero-delay timer runs it on the next round, not in a loop. */
static void timers_run(struct rs_worker *w)
{
    size_t left = rs_timerheap_count(&w->timers);
    uint64_t now = mono_ns();
    struct rs_timer *t;

    while (left-- > 0 && (t = rs_timerheap_pop_expired(&w->timers, now)) != NULL)
        timer_fire(w, rs_container_of(t, struct call_timer, t));
    timers_arm(w);
}

static void on_timers(struct rs_worker *w, const struct rs_ring_cqe *cqe)
{
    if (rs_ud_gen(cqe->user_data) != w->timer_gen || w->timer_armed_ns == 0)
        return; /* one we cancelled to arm an earlier one */
    w->timer_armed_ns = 0;
    timers_run(w);
}

/* Frees what is left at teardown, without callbacks: no call outlives its worker. */
static void timers_free_all(struct rs_worker *w)
{
    struct rs_timer *t;

    while ((t = rs_timerheap_pop_expired(&w->timers, UINT64_MAX)) != NULL) {
        struct call_timer *ct = rs_container_of(t, struct call_timer, t);

        rs_list_unlink(&ct->link);
        free(ct);
    }
    rs_timerheap_free(&w->timers);
    w->timer_armed_ns = 0;
}

int rs_call_timer(struct rs_call *call, uint64_t ns, rs_call_io_cb cb, void *arg)
{
    struct rs_worker *w = call->conn->w;
    struct call_timer *ct;
    uint64_t now = mono_ns();

    if (rs_call_is_done(call))
        return -ECANCELED;
    ct = malloc(sizeof(*ct));
    if (ct == NULL)
        return -ENOMEM;
    rs_timer_init(&ct->t);
    ct->call = call;
    ct->cb = cb;
    ct->arg = arg;
    ct->res = 0;
    if (rs_timerheap_add(&w->timers, &ct->t, ns > UINT64_MAX - now ? UINT64_MAX : now + ns) < 0) {
        free(ct);
        return -ENOMEM;
    }
    if (call->timers.next == NULL)
        rs_list_init(&call->timers); /* the call was calloc'ed: first timer */
    rs_list_insert_tail(&call->timers, &ct->link);
    call->refs++;
    call->ntimers++;
    timers_arm(w);
    return 0;
}

/* Makes every pending timer of |call| due now with -ECANCELED: the callbacks run from the
 * next timer completion (never from inside this function), which keeps the contract of
 * rs_call_timer() (exactly once, soon after the call ends). Touches only this call's timers. */
void rs_worker_cancel_timers(struct rs_worker *w, struct rs_call *call)
{
    struct rs_list *e;

    if (call->timers.next == NULL)
        return;
    for (e = call->timers.next; e != &call->timers; e = e->next) {
        struct call_timer *ct = rs_container_of(e, struct call_timer, link);

        if (ct->res != 0)
            continue;
        ct->res = -ECANCELED;
        rs_timerheap_remove(&w->timers, &ct->t);
        /* cannot fail: the array never shrinks, so what was just removed fits again */
        (void)rs_timerheap_add(&w->timers, &ct->t, 0);
    }
    timers_arm(w);
}
