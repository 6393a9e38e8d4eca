/* workers/main.c: ringstreamd, the daemon: flags, the data directory, signals. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include "core/fault.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/tlsinfo.h"
#include "uring/ring.h"
#include "workers/bulk/bulk.h"
#include "workers/health/health.h"
#include "workers/interop/interop.h"
#include "workers/reflection/reflection.h"
#include "workers/sdnotify.h"
#include "workers/server.h"

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

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static int parse_level(const char *s, enum rs_log_level *out)
{
    unsigned i;

    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
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

/* ---- options: one table drives getopt_long, the configuration file, --help and
 * --check-config ------------------------------------------------------------------------- */

/* Everything an option can set. */
struct settings {
    struct rs_config cfg;
    char data_dir[PATH_MAX]; /* "" = not given */
    char tls_cert[PATH_MAX]; /* "" = no TLS */
    char tls_key[PATH_MAX];
    char tls_client_ca[PATH_MAX];  /* "" = no mutual TLS */
    char metrics_listen[300];      /* "" = off; else HOST:PORT, checked by opt_metrics_listen */
    struct rs_listen metrics_addr; /* metrics_listen resolved */
    enum rs_log_level level;
    bool reflection;        /* serve grpc.reflection.v1 and v1alpha ServerReflection */
    uint64_t upload_ttl_ms; /* resumable uploads expire after this without an Upload stream */
    uint32_t max_uploads;   /* open at once */
    int src;        /* where the option being parsed comes from: 1 the file, 2 the command line */
    int listen_src; /* where cfg.listen came from: 0 the default, else as |src| */
};

struct opt;
/* Parses |val| into the option's target. Returns 0 or -EINVAL. */
typedef int (*opt_parse_fn)(const struct opt *o, const char *val, struct settings *st);
/* Writes the option's current value as a configuration-file value (no newline). */
typedef void (*opt_print_fn)(const struct opt *o, const struct settings *st, FILE *f);

enum {
    OPT_F_KEY = 1u << 0,  /* also a key of the configuration file's [server] section */
    OPT_F_ZERO = 1u << 1, /* 0 is accepted too (it means "derived", see the help text) */
};

/* One row per option. Options without a parser are actions handled by main() (--help). */
struct opt {
    const char *name; /* long option and configuration key */
    int has_arg;      /* getopt_long's required_argument or no_argument */
    opt_parse_fn parse;
    opt_print_fn print;
    size_t off;   /* of the target in struct settings */
    size_t width; /* of the target for numbers: 4 or 8 bytes */
    unsigned long long min, max;
    unsigned flags;   /* OPT_F_* */
    const char *arg;  /* the value's name in --help, NULL without a value */
    const char *help; /* lines for --help, '\n'-separated */
};

#define ST(field)  offsetof(struct settings, field), sizeof(((struct settings *)0)->field)
#define CFG(field) ST(cfg.field)

static int opt_num(const struct opt *o, const char *val, struct settings *st)
{
    size_t v;
    char *p = (char *)st + o->off;

    if (parse_size(val, (size_t)o->min, (size_t)o->max, &v) < 0 &&
        !((o->flags & OPT_F_ZERO) && parse_size(val, 0, 0, &v) == 0))
        return -EINVAL;
    if (o->width == sizeof(uint32_t)) {
        uint32_t v32 = (uint32_t)v;

        memcpy(p, &v32, sizeof(v32));
    } else {
        uint64_t v64 = v;

        memcpy(p, &v64, sizeof(v64));
    }
    return 0;
}

static void print_num(const struct opt *o, const struct settings *st, FILE *f)
{
    const char *p = (const char *)st + o->off;

    if (o->width == sizeof(uint32_t)) {
        uint32_t v32;

        memcpy(&v32, p, sizeof(v32));
        fprintf(f, "%u", v32);
    } else {
        uint64_t v64;

        memcpy(&v64, p, sizeof(v64));
        fprintf(f, "%llu", (unsigned long long)v64);
    }
}

/* listen may be repeated: the first one from a source (the file, then the command line)
 * replaces what came before it (the default, then the file's). */
static int opt_listen(const struct opt *o, const char *val, struct settings *st)
{
    if (st->listen_src != st->src) {
        st->cfg.nlisten = 0;
        st->listen_src = st->src;
    }
    return parse_listen(val, &st->cfg) < 0 ? -EINVAL : 0;
}

/* One "listen = " line per address (print_config wrote the first key). */
static void print_listen(const struct opt *o, const struct settings *st, FILE *f)
{
    char one[INET6_ADDRSTRLEN + 16];
    unsigned i;

    for (i = 0; i < st->cfg.nlisten; i++) {
        describe_one(&st->cfg.listen[i], one, sizeof(one));
        fprintf(f, "%s%s%s", i > 0 ? "\nlisten = " : "", st->cfg.listen[i].h2c ? "h2c://" : "",
                one);
    }
}

/* A string option's target is a char array of the row's |width| bytes (no allocation: the
 * settings live as long as the process and need no freeing on any exit path). */
static int opt_str(const struct opt *o, const char *val, struct settings *st)
{
    char *p = (char *)st + o->off;
    size_t n = strlen(val);

    if ((n == 0 && !(o->flags & OPT_F_ZERO)) || n >= o->width)
        return -EINVAL;
    memcpy(p, val, n + 1);
    return 0;
}

static void print_str(const struct opt *o, const struct settings *st, FILE *f)
{
    fputs((const char *)st + o->off, f);
}

/* --metrics-listen HOST:PORT (as listen, without h2c://); "" turns it off. */
static int opt_metrics_listen(const struct opt *o, const char *val, struct settings *st)
{
    struct rs_config scratch = { .nlisten = 0 };

    if (val[0] == '\0') {
        st->metrics_listen[0] = '\0';
        return 0;
    }
    if (strncmp(val, "h2c://", 6) == 0 || parse_listen(val, &scratch) < 0)
        return -EINVAL;
    st->metrics_addr = scratch.listen[0];
    return opt_str(o, val, st);
}

static int opt_level(const struct opt *o, const char *val, struct settings *st)
{
    return parse_level(val, &st->level);
}

static void print_level(const struct opt *o, const struct settings *st, FILE *f)
{
    fputs(level_names[st->level], f);
}

static int opt_bool(const struct opt *o, const char *val, struct settings *st)
{
    bool *p = (bool *)((char *)st + o->off);

    if (strcmp(val, "on") == 0 || strcmp(val, "yes") == 0 || strcmp(val, "true") == 0 ||
        strcmp(val, "1") == 0)
        *p = true;
    else if (strcmp(val, "off") == 0 || strcmp(val, "no") == 0 || strcmp(val, "false") == 0 ||
             strcmp(val, "0") == 0)
        *p = false;
    else
        return -EINVAL;
    return 0;
}

static void print_bool(const struct opt *o, const struct settings *st, FILE *f)
{
    fputs(*(const bool *)((const char *)st + o->off) ? "on" : "off", f);
}

/* A duration: a number with a unit, ms, s, m or h (a bare number is seconds), into a uint64_t
 * of milliseconds within the row's min..max. */
static int opt_duration(const struct opt *o, const char *val, struct settings *st)
{
    unsigned long long v, mul = 1000;
    char *end;

    if (val[0] < '0' || val[0] > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(val, &end, 10);
    if (errno != 0)
        return -EINVAL;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -EINVAL;
    if (v > o->max / mul || v * mul < o->min)
        return -EINVAL;
    v *= mul;
    memcpy((char *)st + o->off, &(uint64_t){ v }, sizeof(uint64_t));
    return 0;
}

static void print_duration(const struct opt *o, const struct settings *st, FILE *f)
{
    uint64_t v;

    memcpy(&v, (const char *)st + o->off, sizeof(v));
    fprintf(f, "%llums", (unsigned long long)v);
}

#define KEY OPT_F_KEY
#define NUM opt_num, print_num
#define R   required_argument

/* The rows, in --help's order. A new option is one row here (and its field). */
static const struct opt opts[] = {
    { "config", R, NULL, NULL, 0, 0, 0, 0, 0, "FILE",
      "read options from an INI file ([server] section, keys named as the\n"
      "long options); options on the command line override it" },
    { "listen", R, opt_listen, print_listen, 0, 0, 0, 0, KEY, "HOST:PORT",
      "address to serve on; [::1]:PORT for IPv6 (default 127.0.0.1:50051);\n"
      "may be repeated (up to 8). With tls-cert every address serves TLS,\n"
      "except those written h2c://HOST:PORT (cleartext)" },
    { "tls-cert", R, opt_str, print_str, ST(tls_cert), 0, 0, KEY | OPT_F_ZERO, "FILE",
      "PEM certificate chain: serve TLS 1.3/1.2 with ALPN h2 (SIGHUP rereads\n"
      "it, the key and the client CA; a bad file keeps the old ones)" },
    { "tls-key", R, opt_str, print_str, ST(tls_key), 0, 0, KEY | OPT_F_ZERO, "FILE",
      "PEM private key of tls-cert" },
    { "tls-client-ca", R, opt_str, print_str, ST(tls_client_ca), 0, 0, KEY | OPT_F_ZERO, "FILE",
      "require client certificates issued by these PEM CAs (mutual TLS)" },
    { "tls-ticket-hours", R, NUM, CFG(tls_ticket_hours), 1, 24, KEY, "HOURS",
      "rotate the session ticket key this often (default and most 24); a\n"
      "ticket is accepted for one more interval; SIGHUP keeps the keys" },
    { "data-dir", R, opt_str, print_str, ST(data_dir), 0, 0, KEY, "DIR",
      "where the bulk store keeps objects; created if missing (required;\n"
      "needs O_TMPFILE and user xattrs, e.g. ext4, xfs); one server per\n"
      "directory (a lock file in it)" },
    { "workers", R, NUM, CFG(workers), 1, 1024, KEY, "N",
      "worker threads, one io_uring ring each (default: online CPUs)" },
    { "max-msg", R, NUM, CFG(max_msg), 64, 1u << 30, KEY, "BYTES",
      "largest gRPC message received or sent; larger ones fail with\n"
      "RESOURCE_EXHAUSTED (default 4194304)" },
    { "stream-buffer", R, NUM, CFG(stream_buffer), 16384, 0x7fffffff, KEY, "BYTES",
      "per-stream receive window and send queue (default 1048576)" },
    { "max-streams", R, NUM, CFG(max_streams), 1, 1u << 20, KEY, "N",
      "concurrent streams per connection, advertised in SETTINGS (default 100)" },
    { "max-header-list", R, NUM, CFG(max_header_list), 1024, 1u << 24, KEY, "BYTES",
      "SETTINGS_MAX_HEADER_LIST_SIZE (default 16384)" },
    { "max-conns", R, NUM, CFG(max_conns), 1, 1u << 20, KEY, "N",
      "connections per worker (default 4096)" },
    { "idle-timeout-ms", R, NUM, CFG(idle_ms), 100, 86400000, KEY, "MS",
      "close a connection without streams after MS of silence (GOAWAY first;\n"
      "default 300000)" },
    { "handshake-timeout-ms", R, NUM, CFG(handshake_ms), 100, 3600000, KEY, "MS",
      "close a connection that sent no HTTP/2 frame within MS (default 10000)" },
    { "header-timeout-ms", R, NUM, CFG(header_timeout_ms), 100, 3600000, KEY | OPT_F_ZERO, "MS",
      "a request's header block (HEADERS + CONTINUATION), or any frame\n"
      "trickling in, must complete within MS; else GOAWAY and close\n"
      "(default 10000; 0 means the default)" },
    { "glitch-budget", R, NUM, CFG(glitch_budget), 1, 1000000, KEY, "N",
      "suspicious frames (resets, empty DATA, invalid frames, streams the\n"
      "server had to fail) a connection may send per 10 s before GOAWAY\n"
      "ENHANCE_YOUR_CALM (default 1000); also nghttp2's rapid-reset limit\n"
      "(burst N, N/10 a second)" },
    { "send-zc-threshold", R, NUM, CFG(send_zc_threshold), 0, 1u << 30, KEY, "BYTES",
      "send with IORING_OP_SENDMSG_ZC when a flush carries at least BYTES of\n"
      "DATA payload; 0 = never (default 0; it cannot win on loopback, see\n"
      "perf/RESULTS.md)" },
    { "worker-budget", R, NUM, CFG(worker_budget), 1u << 20, 1ull << 40, KEY | OPT_F_ZERO, "BYTES",
      "memory each worker may hold for its peers (receive buffers, send queues,\n"
      "handler memory); near it new streams get REFUSED_STREAM, then no\n"
      "connection is accepted (default 0: physical memory / 8 / workers,\n"
      "64m..4g)" },
    { "conn-share", R, NUM, CFG(conn_share), 256u << 10, 1ull << 40, KEY | OPT_F_ZERO, "BYTES",
      "most one connection may hold of it (default 0: budget / 8)" },
    { "drain-ms", R, NUM, CFG(drain_ms), 0, 3600000, KEY, "MS",
      "on SIGTERM, time in-flight calls get to finish; then they end with\n"
      "UNAVAILABLE (default 30000, as grpc-go GracefulStop users expect)" },
    { "upload-ttl", R, opt_duration, print_duration, ST(upload_ttl_ms), 1, 10ull * 365 * 86400000,
      KEY, "TIME",
      "a resumable upload (StartUpload) expires after TIME without an Upload\n"
      "stream, and a published one's status is kept that long; TIME is a\n"
      "number with ms, s, m or h (bare: seconds; default 24h)" },
    { "max-uploads", R, NUM, ST(max_uploads), 1, 1u << 24, KEY, "N",
      "resumable uploads open at once; StartUpload past it fails with\n"
      "RESOURCE_EXHAUSTED (default 1000)" },
    { "metrics", R, opt_bool, print_bool, ST(cfg.metrics), 0, 0, KEY, "on|off",
      "answer GET /metrics (Prometheus text format) on the listen address\n"
      "(default on)" },
    { "access-log", R, opt_bool, print_bool, ST(cfg.access_log), 0, 0, KEY, "on|off",
      "one line per call on stderr: peer, method, status, bytes in/out,\n"
      "duration (default off)" },
    { "metrics-listen", R, opt_metrics_listen, print_str, ST(metrics_listen), 0, 0,
      KEY | OPT_F_ZERO, "HOST:PORT",
      "also serve GET /metrics over HTTP/1.1 (for Prometheus and curl) on this\n"
      "address, from its own thread (default: off)" },
    { "reflection", R, opt_bool, print_bool, ST(reflection), 0, 0, KEY, "on|off",
      "serve gRPC server reflection (grpc.reflection.v1 and v1alpha), so\n"
      "grpcurl and similar tools list and call the services without .proto\n"
      "files (default on)" },
    { "log-level", R, opt_level, print_level, 0, 0, 0, 0, KEY, "LEVEL",
      "error, warn, info or debug (default info); info logs failed calls and\n"
      "connection errors, debug every call" },
    { "check-config", no_argument, NULL, NULL, 0, 0, 0, 0, 0, NULL,
      "validate the options, print the effective configuration as a\n"
      "configuration file and exit (0 when valid)" },
    { "version", no_argument, NULL, NULL, 0, 0, 0, 0, 0, NULL,
      "print the version and the libraries' versions" },
    { "help", no_argument, NULL, NULL, 0, 0, 0, 0, 0, NULL, "this text" },
};

#undef KEY
#undef NUM
#undef R
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const struct opt *opt_find(const char *name)
{
    size_t i;

    for (i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

static void usage(FILE *f)
{
    size_t i;

    fprintf(f, "Usage: ringstreamd --data-dir DIR [options]\n"
               "       ringstreamd --config FILE [options]\n"
               "\n"
               "A streaming gRPC server (HTTP/2 over TLS, or cleartext with prior knowledge)\n"
               "on io_uring.\n"
               "\n");
    for (i = 0; i < NOPTS; i++) {
        const char *h = opts[i].help, *nl;
        int n = fprintf(f, "  --%s%s%s", opts[i].name, opts[i].arg != NULL ? " " : "",
                        opts[i].arg != NULL ? opts[i].arg : "");

        if (n > 26)
            fprintf(f, "\n%28s", "");
        else
            fprintf(f, "%*s", 28 - n, "");
        while ((nl = strchr(h, '\n')) != NULL) {
            fprintf(f, "%.*s\n%28s", (int)(nl - h), h, "");
            h = nl + 1;
        }
        fprintf(f, "%s\n", h);
    }
    fprintf(f, "\nSuffixes k, m, g (powers of 1024) are accepted on BYTES.\n"
               "Every option but config, check-config, version and help is also a key of\n"
               "the configuration file's [server] section (see ringstreamd.conf).\n");
}

/* Prints the effective configuration as a configuration file that parses back to it. */
static void print_config(const struct settings *st, FILE *f)
{
    size_t i;

    fprintf(f, "[server]\n");
    for (i = 0; i < NOPTS; i++) {
        if (!(opts[i].flags & OPT_F_KEY))
            continue;
        fprintf(f, "%s = ", opts[i].name);
        opts[i].print(&opts[i], st, f);
        fputc('\n', f);
    }
}

/* What a configuration file's handler needs; inih gives no line number to the handler, so the
 * first error is kept here and ini_parse()'s return value supplies its line. */
struct ini_ctx {
    struct settings *st;
    char err[256];
};

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *ctx = user;
    const struct opt *o = opt_find(name);

    if (ctx->err[0] != '\0')
        return 0; /* only the first error is reported */
    if (strcmp(section, "server") != 0) {
        snprintf(ctx->err, sizeof(ctx->err), "key '%s' outside the [server] section%s%s%s", name,
                 section[0] != '\0' ? " (in [" : "", section, section[0] != '\0' ? "])" : "");
        return 0;
    }
    if (o == NULL || !(o->flags & OPT_F_KEY)) {
        snprintf(ctx->err, sizeof(ctx->err), "unknown key '%s'", name);
        return 0;
    }
    if (o->parse(o, value, ctx->st) < 0) {
        snprintf(ctx->err, sizeof(ctx->err), "key '%s': invalid value '%s' (see --help)", name,
                 value);
        return 0;
    }
    return 1;
}

/* Reads |path| into |st|. Returns 0, or -1 after printing "FILE:LINE: what" on stderr. */
static int load_config(const char *path, struct settings *st)
{
    struct ini_ctx ctx = { .st = st };
    int line = ini_parse(path, on_ini, &ctx);

    if (line == 0)
        return 0;
    if (line == -1)
        fprintf(stderr, "ringstreamd: %s: cannot open: %s\n", path, strerror(errno));
    else if (line == -2)
        fprintf(stderr, "ringstreamd: %s: out of memory\n", path);
    else if (ctx.err[0] != '\0')
        fprintf(stderr, "ringstreamd: %s:%d: %s\n", path, line, ctx.err);
    else
        fprintf(stderr, "ringstreamd: %s:%d: syntax error (want 'key = value' or '[section]')\n",
                path, line);
    return -1;
}

static void print_version(void)
{
    printf("ringstreamd %s\n", RS_VERSION);
    printf("liburing %s (built against)\n", RS_LIBURING_VERSION);
    printf("nghttp2 %s\n", nghttp2_version(0)->version_str);
    printf("%s\n", rs_tls_describe());
    printf("TLS 1.3 AES-GCM records sealed by %s\n", rs_tls_sealer());
    printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("zlib %s\n", zlibVersion());
}

enum {
    PARSE_RUN = 0,
    PARSE_EXIT_OK,
    PARSE_EXIT_USAGE
};

/* Fills |st| from defaults, the --config file and the command line (which wins). Sets
 * *check for --check-config. Returns PARSE_RUN, or what main() should exit with. */
static int parse_options(int argc, char **argv, struct settings *st, bool *check)
{
    struct option lopts[NOPTS + 1];
    const char *config = NULL;
    int opt, pass;
    size_t i;

    memset(lopts, 0, sizeof(lopts));
    for (i = 0; i < NOPTS; i++) {
        lopts[i].name = opts[i].name;
        lopts[i].has_arg = opts[i].has_arg;
        lopts[i].val = 256 + (int)i;
    }
    opterr = 0;
    /* Pass 0: actions and --config; pass 1, after the file is read: everything else. */
    for (pass = 0; pass < 2; pass++) {
        optind = 0; /* glibc: a full re-initialisation */
        while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
            const struct opt *o;

            if (opt < 256 || opt >= 256 + (int)NOPTS) {
                fprintf(stderr, "ringstreamd: unknown or incomplete option '%s' (see --help)\n",
                        argv[optind - 1]);
                return PARSE_EXIT_USAGE;
            }
            o = &opts[opt - 256];
            if (pass == 0) {
                if (strcmp(o->name, "help") == 0) {
                    usage(stdout);
                    return PARSE_EXIT_OK;
                }
                if (strcmp(o->name, "version") == 0) {
                    print_version();
                    return PARSE_EXIT_OK;
                }
                if (strcmp(o->name, "config") == 0)
                    config = optarg;
                else if (strcmp(o->name, "check-config") == 0)
                    *check = true;
                continue;
            }
            if (o->parse != NULL && o->parse(o, optarg, st) < 0) {
                fprintf(stderr, "ringstreamd: invalid value '%s' for --%s (see --help)\n", optarg,
                        o->name);
                return PARSE_EXIT_USAGE;
            }
        }
        if (optind < argc) {
            fprintf(stderr, "ringstreamd: unexpected argument '%s' (see --help)\n", argv[optind]);
            return PARSE_EXIT_USAGE;
        }
        if (pass == 0 && config != NULL) {
            st->src = 1;
            if (load_config(config, st) < 0)
                return PARSE_EXIT_USAGE;
        }
        st->src = 2;
    }
    if ((st->tls_cert[0] == '\0') != (st->tls_key[0] == '\0') ||
        (st->tls_client_ca[0] != '\0' && st->tls_cert[0] == '\0')) {
        fprintf(stderr, "ringstreamd: tls-cert and tls-key go together, and tls-client-ca "
                        "needs them (see --help)\n");
        return PARSE_EXIT_USAGE;
    }
    st->cfg.tls_cert = st->tls_cert[0] != '\0' ? st->tls_cert : NULL;
    st->cfg.tls_key = st->tls_key[0] != '\0' ? st->tls_key : NULL;
    st->cfg.tls_client_ca = st->tls_client_ca[0] != '\0' ? st->tls_client_ca : NULL;
    if (st->data_dir[0] == '\0') {
        fprintf(stderr, "ringstreamd: --data-dir DIR (or data-dir in the configuration file) "
                        "is required (see --help)\n");
        return PARSE_EXIT_USAGE;
    }
    if (st->cfg.worker_budget != 0 && st->cfg.conn_share > st->cfg.worker_budget) {
        fprintf(stderr, "ringstreamd: conn-share (%zu) is larger than worker-budget (%zu)\n",
                st->cfg.conn_share, st->cfg.worker_budget);
        return PARSE_EXIT_USAGE;
    }
    return PARSE_RUN;
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
    rs_log_debug("file descriptors: limit %llu, %llu needed for --max-conns %u x %u workers",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)need, cfg->max_conns,
                 cfg->workers);
    return 0;
}

#define RS_LOCK_FILE "ringstreamd.lock"

/* One server per data directory: an exclusive flock on a lock file inside it, held (by the
 * descriptor, deliberately never closed) for the life of the process and released by the
 * kernel however the process ends, kill -9 included. The file keeps the holder's pid for the
 * message. Returns the descriptor, or -1 with |err| set. */
static int lock_data_dir(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX], pid[32];
    ssize_t n;
    int fd;

    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "data dir %s: cannot create it: %s", dir, strerror(errno));
        return -1;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, RS_LOCK_FILE) >= sizeof(path)) {
        snprintf(err, errlen, "data dir %s: path too long", dir);
        return -1;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        if (errno == EACCES || errno == EPERM || errno == EROFS)
            snprintf(err, errlen, "data dir %s: not writable (%s)", dir, strerror(errno));
        else
            snprintf(err, errlen, "data dir %s: cannot open %s: %s", dir, RS_LOCK_FILE,
                     strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;

        n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (e == EWOULDBLOCK)
            snprintf(err, errlen,
                     "data dir %s is in use by another ringstreamd (pid %s, lock file "
                     "%s); one server per data directory",
                     dir, pid[0] != '\0' ? pid : "unknown", RS_LOCK_FILE);
        else
            snprintf(err, errlen, "data dir %s: cannot lock %s: %s", dir, RS_LOCK_FILE,
                     strerror(e));
        close(fd);
        return -1;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        rs_log_warn("data dir %s: cannot write the pid into %s", dir, RS_LOCK_FILE);
    return fd;
}

/* Socket activation: when systemd passed a listening socket (ringstreamd.socket), the
 * workers accept on it instead of binding listen. Returns 0 (none passed is fine) or -1. */
static int passed_socket(struct rs_config *cfg, char *err, size_t errlen)
{
    socklen_t len = sizeof(cfg->listen[0].addr);
    int n = rs_sd_listen_fds(), fd = RS_SD_LISTEN_FDS_START;

    if (n < 0) {
        snprintf(err, errlen, "LISTEN_FDS: %s", strerror(-n));
        return -1;
    }
    if (n == 0)
        return 0;
    if (n > 1) {
        snprintf(err, errlen,
                 "systemd passed %d sockets; ringstreamd serves one (one ListenStream= in "
                 "ringstreamd.socket)",
                 n);
        return -1;
    }
    if (rs_sd_is_listening_stream(fd) <= 0 ||
        getsockname(fd, (struct sockaddr *)&cfg->listen[0].addr, &len) < 0 ||
        (cfg->listen[0].addr.ss_family != AF_INET && cfg->listen[0].addr.ss_family != AF_INET6)) {
        snprintf(err, errlen, "the socket systemd passed is not a listening TCP socket");
        return -1;
    }
    cfg->listen[0].addrlen = len;
    cfg->nlisten = 1; /* the passed socket replaces every --listen */
    cfg->listen_fd = fd;
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define RS_STATUS_INTERVAL_MS 5000u /* STATUS= refresh */
#define RS_STALL_MS           5000u /* a worker ticks every second: 5 s without is a hang */

/* Waits for SIGTERM or SIGINT; SIGHUP rereads the TLS files meanwhile. Under systemd, also: STATUS=
 * with live figures every RS_STATUS_INTERVAL_MS, and WATCHDOG=1 every half WatchdogSec while every
 * worker's loop turns (a stalled worker stops the pings, and systemd restarts the service). */
static int wait_for_stop(struct rs_server *srv, const struct rs_config *cfg, const sigset_t *sigs,
                         const char *addr)
{
    uint64_t wd_usec = 0, now, last_status = 0, last_wd = 0, wd_ms = 0;
    struct rs_server_stats st;
    struct timespec ts;
    bool stalled_logged = false;
    int sig;

    if (rs_sd_watchdog_usec(&wd_usec) > 0)
        wd_ms = wd_usec / 2000 > 0 ? wd_usec / 2000 : 1;
    for (;;) {
        uint64_t wait_ms = wd_ms > 0 && wd_ms < 1000 ? wd_ms : 1000;

        ts.tv_sec = (time_t)(wait_ms / 1000);
        ts.tv_nsec = (long)(wait_ms % 1000) * 1000000;
        sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return sig;
        if (sig == SIGHUP)
            reload_tls(srv, cfg);
        if (sig < 0 && errno != EAGAIN && errno != EINTR)
            return SIGTERM;
        now = mono_ms();
        if (wd_ms > 0 && now - last_wd >= wd_ms) {
            rs_server_stats(srv, RS_STALL_MS, &st);
            if (st.workers_stalled == 0) {
                rs_sd_notify("WATCHDOG=1");
                last_wd = now;
                stalled_logged = false;
            } else if (!stalled_logged) {
                rs_log_error("%u workers have not turned their loop for %u ms: no more "
                             "watchdog pings",
                             st.workers_stalled, RS_STALL_MS);
                stalled_logged = true;
            }
        }
        if (now - last_status >= RS_STATUS_INTERVAL_MS) {
            rs_server_stats(srv, RS_STALL_MS, &st);
            rs_sd_notifyf("STATUS=serving on %s: %llu connections, %llu streams, %llu calls done, "
                          "%llu MiB in, %llu MiB out",
                          addr, (unsigned long long)st.conns_open,
                          (unsigned long long)st.streams_open, (unsigned long long)st.calls,
                          (unsigned long long)(st.bytes_in >> 20),
                          (unsigned long long)(st.bytes_out >> 20));
            last_status = now;
        }
    }
}

int main(int argc, char **argv)
{
    struct settings st = {
        .level = RS_LOG_INFO,
        .reflection = true,
        .upload_ttl_ms = 24ull * 3600 * 1000,
        .max_uploads = 1000,
    };
    struct rs_config cfg;
    const char *data_dir;
    struct rs_server *srv;
    struct rs_bulk *bulk = NULL;
    struct rs_health *health = NULL;
    struct rs_reflection *refl = NULL;
    struct rs_metrics_http *mhttp = NULL;
    int mfd = -1;                                       /* the --metrics-listen socket */
    char err[PATH_MAX + 512], addr[RS_LISTEN_MAX * 64]; /* messages may name the data dir */
    bool check = false;
    sigset_t sigs;
    int sig, ret;

    /* Receive buffers are sized to the message (proto/grpc.c) and freed when a stream has
     * nothing buffered, so a steady upload of 64 KiB messages frees and reallocates one each
     * message. With glibc's default thresholds the freed top of the heap is trimmed and
     * large blocks are mmap'ed, so every message paid for fresh zeroed pages: a 1 GiB Put ran
     * at 440-490 MB/s instead of 680-820 (perf/RESULTS.md). Keep freed memory for reuse (peak
     * memory is bounded by the worker budgets, not by the allocator), and serve every size up
     * to twice the largest message from the heap. Environment tunables still override. */
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    rs_config_defaults(&st.cfg);
    ret = parse_options(argc, argv, &st, &check);
    if (ret != PARSE_RUN) {
        return ret == PARSE_EXIT_OK ? 0 : 2;
    }
    if (check) {
        print_config(&st, stdout);
        return 0;
    }
    cfg = st.cfg;
    /* per-method series only when someone can read them */
    cfg.method_metrics = cfg.metrics || st.metrics_listen[0] != '\0';
    data_dir = st.data_dir; /* lives as long as the process */
    rs_log_set_level(st.level);
    rs_log_detect_journal();
    if (passed_socket(&cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 1;
    }
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
     * thread starts (the bulk index starts one in rs_bulk_open()): a thread created earlier
     * would inherit an open mask, and a SIGTERM the kernel handed to it would kill the
     * process with no drain and no STOPPING=1. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGPIPE);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (lock_data_dir(data_dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 1;
    }
    if (rs_bulk_open(&bulk, data_dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err); /* names the directory */
        return 1;
    }
    rs_bulk_set_upload_limits(bulk, st.upload_ttl_ms, st.max_uploads);
    if (st.metrics_listen[0] != '\0') {
        mfd = rs_metrics_http_listen((const struct sockaddr *)&st.metrics_addr.addr,
                                     st.metrics_addr.addrlen, err, sizeof(err));
        if (mfd < 0) {
            fprintf(stderr, "ringstreamd: metrics-listen %s: %s\n", st.metrics_listen, err);
            rs_bulk_close(bulk);
            return 1;
        }
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
    /* Server reflection lists every service registered here, itself included; its
     * descriptors are the proto/ files, built in. */
    if (st.reflection) {
        ret = rs_reflection_new(&refl, rs_reflection_descriptor_set,
                                rs_reflection_descriptor_set_len, err, sizeof(err));
        if (ret < 0) {
            fprintf(stderr, "ringstreamd: server reflection: %s\n", err);
            return 1;
        }
        if (rs_reflection_add(refl, rs_bulk_service(bulk)->name) < 0 ||
            rs_reflection_add(refl, rs_interop_service()->name) < 0 ||
            rs_reflection_add(refl, rs_health_service(health)->name) < 0 ||
            rs_reflection_add(refl, rs_reflection_service_v1(refl)->name) < 0 ||
            rs_reflection_add(refl, rs_reflection_service_v1alpha(refl)->name) < 0 ||
            rs_health_add(health, rs_reflection_service_v1(refl)->name) < 0 ||
            rs_health_add(health, rs_reflection_service_v1alpha(refl)->name) < 0) {
            fprintf(stderr, "ringstreamd: out of memory\n");
            return 1;
        }
    }
    snprintf(err, sizeof(err), "cannot register a service");
    if (rs_server_add_service(srv, rs_bulk_service(bulk)) < 0 ||
        rs_server_add_service(srv, rs_interop_service()) < 0 ||
        rs_server_add_service(srv, rs_health_service(health)) < 0 ||
        (refl != NULL && (rs_server_add_service(srv, rs_reflection_service_v1(refl)) < 0 ||
                          rs_server_add_service(srv, rs_reflection_service_v1alpha(refl)) < 0)) ||
        rs_server_start(srv, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringstreamd: %s\n", err);
        return 1; /* workers may be parked at their start barrier; exiting ends them */
    }
    if (mfd >= 0) {
        mhttp = rs_metrics_http_start(srv, mfd, err, sizeof(err));
        if (mhttp == NULL) {
            fprintf(stderr, "ringstreamd: metrics-listen %s: %s\n", st.metrics_listen, err);
            return 1;
        }
        rs_log_info("metrics on http://%s/metrics", st.metrics_listen);
    }
    describe_addr(&cfg, addr, sizeof(addr));
    rs_log_info("crypto: %s", rs_tls_describe());
    if (cfg.tls_cert != NULL)
        rs_log_info("TLS 1.3 AES-GCM records sealed by %s", rs_tls_sealer());
    rs_log_info("listening on %s%s, %u workers, data dir %s", addr,
                cfg.listen_fd >= 0 ? " (socket passed by systemd)" : "", cfg.workers, data_dir);
    rs_sd_notifyf("READY=1\nSTATUS=serving on %s", addr); /* no-op outside systemd */
    sig = wait_for_stop(srv, &cfg, &sigs, addr);
    rs_sd_notify("STOPPING=1");
    rs_log_info("%s: draining for up to %u ms", strsignal(sig), cfg.drain_ms);
    rs_server_stop(srv);
    /* A second SIGTERM or SIGINT during the drain exits at once (the operator means it; the
     * store is crash-safe, so nothing is half-written, at worst the index is rebuilt).
     * Meanwhile metrics-listen keeps answering (operators watch the drain there) and STATUS=
     * says what is left, once a second. */
    for (unsigned turn = 0; !rs_server_stopped(srv); turn++) {
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000000 };

        if (turn % 20 == 0) {
            struct rs_server_stats now;

            rs_server_stats(srv, RS_STALL_MS, &now);
            rs_sd_notifyf("STATUS=draining: %llu connections, %llu streams left",
                          (unsigned long long)now.conns_open, (unsigned long long)now.streams_open);
        }
        sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            rs_log_warn("%s again: exiting without waiting for the drain", strsignal(sig));
            _exit(1);
        }
    }
    rs_metrics_http_stop(mhttp); /* the workers are done; their counters live until destroy */
    rs_server_destroy(srv);
    rs_health_destroy(health);
    rs_reflection_destroy(refl);
    rs_bulk_close(bulk);
    rs_log_info("stopped");
    return 0;
}
