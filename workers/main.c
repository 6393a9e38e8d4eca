/* workers/main.c: ringstreamd, the daemon: flags, the data directory, signals. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef RS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif
#include "core/fault.h"
#include "core/log.h"
#include "core/tlsinfo.h"
#include "uring/ring.h"
#include "workers/bulk/bulk.h"
#include "workers/health/health.h"
#include "workers/interop/interop.h"
#include "workers/server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: ringstreamd --data-dir DIR [options]\n"
            "\n"
            "A streaming gRPC server (HTTP/2 over TLS, or cleartext with prior knowledge) on io_uring.\n"
            "\n"
            "  --listen HOST:PORT     address to serve on; [::1]:PORT for IPv6\n"
            "                         (default 127.0.0.1:50051); may be repeated. With\n"
            "                         --tls-cert every address serves TLS, except those\n"
            "                         written h2c://HOST:PORT (cleartext)\n"
            "  --tls-cert FILE        PEM certificate chain: serve TLS 1.3/1.2, ALPN h2\n"
            "  --tls-key FILE         PEM private key of --tls-cert\n"
            "  --tls-client-ca FILE   require client certificates issued by these PEM CAs\n"
            "                         (SIGHUP rereads the three files)\n"
            "  --data-dir DIR         where the bulk store keeps objects; created if missing\n"
            "                         (required; needs O_TMPFILE and user xattrs, e.g. ext4, xfs)\n"
            "  --workers N            worker threads, one io_uring ring each\n"
            "                         (default: online CPUs)\n"
            "  --max-msg BYTES        largest gRPC message received or sent; larger ones fail\n"
            "                         with RESOURCE_EXHAUSTED (default 4194304)\n"
            "  --stream-buffer BYTES  per-stream receive window and send queue (default 1048576)\n"
            "  --max-streams N        concurrent streams per connection, advertised in SETTINGS\n"
            "                         (default 100)\n"
            "  --max-header-list BYTES  SETTINGS_MAX_HEADER_LIST_SIZE (default 16384)\n"
            "  --max-conns N          connections per worker (default 4096)\n"
            "  --idle-timeout-ms MS   close a connection without streams after MS of silence\n"
            "                         (GOAWAY first; default 300000)\n"
            "  --handshake-timeout-ms MS  close a connection that sent no HTTP/2 frame\n"
            "                         within MS (default 10000)\n"
            "  --header-timeout-ms MS  a request's header block (HEADERS + CONTINUATION), or any\n"
            "                         frame trickling in, must complete within MS; else GOAWAY\n"
            "                         and close (default 10000)\n"
            "  --glitch-budget N      suspicious frames (resets, empty DATA, invalid frames,\n"
            "                         streams the server had to fail) a connection may send\n"
            "                         per 10 s before GOAWAY ENHANCE_YOUR_CALM (default 1000);\n"
            "                         also nghttp2's rapid-reset limit (burst N, N/10 a second)\n"
            "  --send-zc-threshold BYTES  send with IORING_OP_SENDMSG_ZC when a flush carries\n"
            "                         at least BYTES of DATA payload; 0 = never (default 0;\n"
            "                         it cannot win on loopback, see perf/RESULTS.md)\n"
            "  --worker-budget BYTES  memory each worker may hold for its peers (receive buffers,\n"
            "                         send queues, handler memory); near it new streams get\n"
            "                         REFUSED_STREAM, then no connection is accepted\n"
            "                         (default: physical memory / 8 / workers, 64m..4g)\n"
            "  --conn-share BYTES     most one connection may hold of it (default budget / 8)\n"
            "  --drain-ms MS          on SIGTERM, time in-flight calls get to finish\n"
            "                         (default 5000)\n"
            "  --log-level LEVEL      error, warn, info or debug (default info)\n"
            "  --help                 this text\n"
            "\n"
            "Suffixes k, m, g (powers of 1024) are accepted on BYTES.\n");
}

static int parse_size(const char *s, size_t min, size_t max, size_t *out)
{
    unsigned long long v;
    char *end;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-')
        return -EINVAL;
    switch (*end) {
    case 'k':
    case 'K':
        v <<= 10;
        end++;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        end++;
        break;
    case 'g':
    case 'G':
        v <<= 30;
        end++;
        break;
    default:
        break;
    }
    if (*end != '\0' || v < min || v > max)
        return -EINVAL;
    *out = (size_t)v;
    return 0;
}

/* Appends the address to cfg->listen[]; h2c://HOST:PORT marks it cleartext. */
static int parse_listen(const char *arg, struct rs_config *cfg)
{
    char host[256];
    const char *colon, *port;
    struct addrinfo hints, *res;
    struct rs_listen *l;
    bool h2c = false;
    size_t hl;
    int rv;

    if (cfg->nlisten >= RS_LISTEN_MAX)
        return -E2BIG;
    if (strncmp(arg, "h2c://", 6) == 0) {
        h2c = true;
        arg += 6;
    }
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');

        if (close == NULL || close[1] != ':')
            return -EINVAL;
        hl = (size_t)(close - arg - 1);
        if (hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, arg + 1, hl);
        port = close + 2;
    } else {
        colon = strrchr(arg, ':');
        if (colon == NULL)
            return -EINVAL;
        hl = (size_t)(colon - arg);
        if (hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, arg, hl);
        port = colon + 1;
    }
    host[hl] = '\0';
    if (port[0] == '\0' || strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535)
        return -EINVAL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    rv = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
    if (rv != 0)
        return -EINVAL;
    l = &cfg->listen[cfg->nlisten++];
    memcpy(&l->addr, res->ai_addr, res->ai_addrlen);
    l->addrlen = res->ai_addrlen;
    l->h2c = h2c;
    freeaddrinfo(res);
    return 0;
}

static int parse_level(const char *s, enum rs_log_level *out)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    unsigned i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum rs_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

static void describe_one(const struct rs_listen *l, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    const struct sockaddr *sa = (const struct sockaddr *)&l->addr;

    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;

        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const void *)sa;

        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
    }
}

/* "127.0.0.1:50051 (TLS), 127.0.0.1:50052 (h2c)" */
static void describe_addr(const struct rs_config *cfg, char *buf, size_t len)
{
    size_t off = 0;
    unsigned i;

    buf[0] = '\0';
    for (i = 0; i < cfg->nlisten && off < len; i++) {
        char one[INET6_ADDRSTRLEN + 16];
        int n;

        describe_one(&cfg->listen[i], one, sizeof(one));
        n = snprintf(buf + off, len - off, "%s%s (%s)", i > 0 ? ", " : "", one,
                     cfg->tls_cert != NULL && !cfg->listen[i].h2c ? "TLS" : "h2c");
        off += n > 0 ? (size_t)n : 0;
    }
}

/* SIGHUP: new connections get the reread certificate, key and client CA; a bad file keeps
 * the old ones, with one line saying why. */
static void reload_tls(struct rs_server *srv, const struct rs_config *cfg)
{
    char err[512];

    if (cfg->tls_cert == NULL) {
        rs_log_info("SIGHUP: no TLS configured, nothing to reload");
        return;
    }
    if (rs_server_reload_tls(srv, err, sizeof(err)) < 0)
        rs_log_error("SIGHUP: TLS reload failed, keeping the previous certificate: %s", err);
    else
        rs_log_info("SIGHUP: TLS certificate, key and client CA reloaded");
}

/* Descriptors the process needs besides connections: stdio, the data directory, each worker's
 * listening socket, eventfd and ring, and a little headroom. Files calls hold open (a Get's
 * object, a Put's O_TMPFILE) come out of what the hard limit gives beyond that: the soft
 * limit is raised all the way. A file open that fails with EMFILE fails that one call, and
 * an accept that fails with it pauses accepting (workers/worker.c). */
#define RS_FD_MARGIN            32u
#define RS_FD_MARGIN_PER_WORKER 8u

/* Raises RLIMIT_NOFILE's soft limit to the hard one when --max-conns x workers (plus the
 * margin) needs more than the soft limit. A hard limit below the need is a configuration
 * error: refusing to start with one line naming the fix is better than a server that runs
 * out of descriptors (EMFILE) under load it was told to take. Returns 0 or -1 (|err| set). */
static int raise_fd_limit(const struct rs_config *cfg, char *err, size_t errlen)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)cfg->max_conns * cfg->workers + RS_FD_MARGIN +
                  (rlim_t)RS_FD_MARGIN_PER_WORKER * cfg->workers;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        snprintf(err, errlen, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        rlim_t other = need - (rlim_t)cfg->max_conns * cfg->workers;
        unsigned long long fit = rl.rlim_max > other ? (rl.rlim_max - other) / cfg->workers : 0;

        snprintf(err, errlen,
                 "--max-conns %u x %u workers needs %llu file descriptors but the hard limit "
                 "is %llu: raise it (LimitNOFILE=%llu in the systemd unit, or ulimit -n %llu) "
                 "or lower --max-conns to %llu",
                 cfg->max_conns, cfg->workers, (unsigned long long)need,
                 (unsigned long long)rl.rlim_max, (unsigned long long)need,
                 (unsigned long long)need, fit);
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
        /* All of the hard limit: what is left after connections serves open files. */
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            snprintf(err, errlen, "setrlimit(RLIMIT_NOFILE, %llu): %s",
                     (unsigned long long)rl.rlim_cur, strerror(errno));
            return -1;
        }
    }
    rs_log_info("file descriptors: limit %llu, %llu needed for --max-conns %u x %u workers",
                (unsigned long long)rl.rlim_cur, (unsigned long long)need, cfg->max_conns,
                cfg->workers);
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_DATA,
        OPT_WORKERS,
        OPT_MAX_MSG,
        OPT_STREAM_BUF,
        OPT_MAX_STREAMS,
        OPT_MAX_HDR,
        OPT_MAX_CONNS,
        OPT_DRAIN,
        OPT_IDLE,
        OPT_HANDSHAKE,
        OPT_HDR_TIMEOUT,
        OPT_GLITCH,
        OPT_SEND_ZC,
        OPT_BUDGET,
        OPT_SHARE,
        OPT_LOG,
        OPT_TLS_CERT,
        OPT_TLS_KEY,
        OPT_TLS_CLIENT_CA,
        OPT_HELP,
    };
    static const struct option opts[] = {
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "data-dir", required_argument, NULL, OPT_DATA },
        { "workers", required_argument, NULL, OPT_WORKERS },
        { "max-msg", required_argument, NULL, OPT_MAX_MSG },
        { "stream-buffer", required_argument, NULL, OPT_STREAM_BUF },
        { "max-streams", required_argument, NULL, OPT_MAX_STREAMS },
        { "max-header-list", required_argument, NULL, OPT_MAX_HDR },
        { "max-conns", required_argument, NULL, OPT_MAX_CONNS },
        { "drain-ms", required_argument, NULL, OPT_DRAIN },
        { "idle-timeout-ms", required_argument, NULL, OPT_IDLE },
        { "handshake-timeout-ms", required_argument, NULL, OPT_HANDSHAKE },
        { "header-timeout-ms", required_argument, NULL, OPT_HDR_TIMEOUT },
        { "glitch-budget", required_argument, NULL, OPT_GLITCH },
        { "send-zc-threshold", required_argument, NULL, OPT_SEND_ZC },
        { "worker-budget", required_argument, NULL, OPT_BUDGET },
        { "conn-share", required_argument, NULL, OPT_SHARE },
        { "log-level", required_argument, NULL, OPT_LOG },
        { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
        { "tls-key", required_argument, NULL, OPT_TLS_KEY },
        { "tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    struct rs_config cfg;
    const char *data_dir = NULL;
    enum rs_log_level level = RS_LOG_INFO;
    struct rs_server *srv;
    struct rs_bulk *bulk = NULL;
    struct rs_health *health = NULL;
    char err[512], addr[RS_LISTEN_MAX * 64];
    bool listen_default = true;
    sigset_t sigs;
    size_t v = 0;
    int opt, sig, ret;

    rs_config_defaults(&cfg);
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        ret = 0;
        switch (opt) {
        case OPT_LISTEN:
            if (listen_default)
                cfg.nlisten = 0; /* the first --listen replaces the default */
            listen_default = false;
            ret = parse_listen(optarg, &cfg);
            break;
        case OPT_DATA:
            data_dir = optarg;
            break;
        case OPT_WORKERS:
            ret = parse_size(optarg, 1, 1024, &v);
            cfg.workers = (unsigned)v;
            break;
        case OPT_MAX_MSG:
            ret = parse_size(optarg, 64, (size_t)1 << 30, &cfg.max_msg);
            break;
        case OPT_STREAM_BUF:
            ret = parse_size(optarg, 16384, 0x7fffffff, &cfg.stream_buffer);
            break;
        case OPT_MAX_STREAMS:
            ret = parse_size(optarg, 1, 1u << 20, &v);
            cfg.max_streams = (uint32_t)v;
            break;
        case OPT_MAX_HDR:
            ret = parse_size(optarg, 1024, 1u << 24, &v);
            cfg.max_header_list = (uint32_t)v;
            break;
        case OPT_MAX_CONNS:
            ret = parse_size(optarg, 1, 1u << 20, &v);
            cfg.max_conns = (unsigned)v;
            break;
        case OPT_DRAIN:
            ret = parse_size(optarg, 0, 3600000, &v);
            cfg.drain_ms = (unsigned)v;
            break;
        case OPT_IDLE:
            ret = parse_size(optarg, 100, 86400000, &v);
            cfg.idle_ms = (unsigned)v;
            break;
        case OPT_HANDSHAKE:
            ret = parse_size(optarg, 100, 3600000, &v);
            cfg.handshake_ms = (unsigned)v;
            break;
        case OPT_HDR_TIMEOUT:
            ret = parse_size(optarg, 100, 3600000, &v);
            cfg.header_timeout_ms = (unsigned)v;
            break;
        case OPT_GLITCH:
            ret = parse_size(optarg, 1, 1000000, &v);
            cfg.glitch_budget = (unsigned)v;
            break;
        case OPT_SEND_ZC:
            ret = parse_size(optarg, 0, (size_t)1 << 30, &cfg.send_zc_threshold);
            break;
        case OPT_BUDGET:
            ret = parse_size(optarg, (size_t)1 << 20, (size_t)1 << 40, &cfg.worker_budget);
            break;
        case OPT_SHARE:
            ret = parse_size(optarg, (size_t)256 << 10, (size_t)1 << 40, &cfg.conn_share);
            break;
        case OPT_LOG:
            ret = parse_level(optarg, &level);
            break;
        case OPT_TLS_CERT:
            cfg.tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            cfg.tls_key = optarg;
            break;
        case OPT_TLS_CLIENT_CA:
            cfg.tls_client_ca = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "ringstreamd: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
        if (ret < 0) {
            fprintf(stderr, "ringstreamd: invalid value '%s' for --%s (see --help)\n", optarg,
                    opts[opt - OPT_LISTEN].name);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringstreamd: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (data_dir == NULL) {
        fprintf(stderr, "ringstreamd: --data-dir DIR is required (see --help)\n");
        return 2;
    }
    rs_log_set_level(level);
    if (raise_fd_limit(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 1;
    }
    if (rs_fault_init(err, sizeof(err)) < 0) { /* RS_FAULTS, test builds only */
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 2;
    }
    if (RS_FAULT_ENABLED && getenv("RS_FAULTS") != NULL)
        rs_log_warn("fault injection (test build): RS_FAULTS=%s", getenv("RS_FAULTS"));
    if (rs_ring_probe(err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 1;
    }
    if (cfg.send_zc_threshold > 0 && rs_ring_has_sendmsg_zc() != 1) {
        fprintf(stderr, "ringstreamd: --send-zc-threshold needs IORING_OP_SENDMSG_ZC "
                        "(Linux >= 6.1); use --send-zc-threshold 0\n");
        return 1;
    }
    /* Signals go to this thread only, and only through sigwait() below. Blocked before any
     * thread exists (rs_bulk_open starts the index recheck thread), since a thread inherits
     * the mask: one with SIGTERM unblocked would let it kill the process undrained. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGPIPE);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (rs_bulk_open(&bulk, data_dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err); /* names the directory */
        return 1;
    }
    srv = rs_server_new(&cfg, err, sizeof(err));
    if (srv == NULL) {
        describe_addr(&cfg, addr, sizeof(addr));
        fprintf(stderr, "ringstreamd: %s: %s\n", addr, err);
        rs_bulk_close(bulk);
        return 1;
    }
    /* Every service served is SERVING to grpc.health.v1.Health; the registry is read-only
     * once the workers run. */
    health = rs_health_new();
    if (health == NULL || rs_health_add(health, rs_bulk_service(bulk)->name) < 0 ||
        rs_health_add(health, rs_interop_service()->name) < 0 ||
        rs_health_add(health, rs_health_service(health)->name) < 0) {
        fprintf(stderr, "ringstreamd: out of memory\n");
        return 1;
    }
    snprintf(err, sizeof(err), "cannot register a service");
    if (rs_server_add_service(srv, rs_bulk_service(bulk)) < 0 ||
        rs_server_add_service(srv, rs_interop_service()) < 0 ||
        rs_server_add_service(srv, rs_health_service(health)) < 0 ||
        rs_server_start(srv, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 1; /* workers may be parked at their start barrier; exiting ends them */
    }
    describe_addr(&cfg, addr, sizeof(addr));
    rs_log_info("crypto: %s", rs_tls_describe());
    rs_log_info("listening on %s, %u workers, data dir %s", addr, cfg.workers, data_dir);
#ifdef RS_HAVE_SYSTEMD
    sd_notifyf(0, "READY=1\nSTATUS=serving on %s", addr); /* no-op outside systemd */
#endif
    do {
        if (sigwait(&sigs, &sig) != 0)
            sig = SIGTERM;
        if (sig == SIGHUP)
            reload_tls(srv, &cfg);
    } while (sig == SIGPIPE || sig == SIGHUP);
#ifdef RS_HAVE_SYSTEMD
    sd_notify(0, "STOPPING=1");
#endif
    rs_log_info("%s: draining for up to %u ms", strsignal(sig), cfg.drain_ms);
    rs_server_stop(srv);
    rs_server_destroy(srv);
    rs_health_destroy(health);
    rs_bulk_close(bulk);
    rs_log_info("stopped");
    return 0;
}
