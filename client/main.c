/* client/main.c: the ringstream command-line client for the Bulk service of
 * proto/bulk.proto: the command line, and the small commands (stat, rm, ls); put.c and get.c
 * hold the transfers, bench.c the load generator, cli.c what they share, rpc.c the HTTP/2 and
 * gRPC call layer. Exit codes: RSC_EX_* in cli.h, documented in usage() and the README. */
#include "client/cli.h"
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "client/bench.h"
#include "core/crc32c.h"

/* --- stat, rm, ls ------------------------------------------------------------------------- */

static void print_info_human(const ringstream_v1_ObjectInfo *oi, bool long_form)
{
    char h[2 * RS_SHA256_LEN + 1], when[64] = "-";
    time_t t = (time_t)(oi->modified_unix_ms / 1000);
    struct tm tm;

    rsc_hex(h, oi->sha256, RS_SHA256_LEN);
    if (gmtime_r(&t, &tm) != NULL)
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (long_form)
        printf("name:     %s\nsize:     %" PRIu64 "\nsha256:   %s\nmodified: %s\n", oi->name,
               oi->size, h, when);
    else
        printf("%12" PRIu64 "  %s  %s\n", oi->size, when, oi->name);
}

static int cmd_stat(int argc, char **argv)
{
    ringstream_v1_ObjectInfo oi;
    char what[300];
    struct rsc_conn *c;
    int code;

    if (argc != 1)
        return rsc_fail(RSC_EX_USAGE, "stat", -1, NULL, "usage: ringstream stat NAME");
    snprintf(what, sizeof(what), "stat %s", argv[0]);
    c = rsc_connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    code = rsc_do_stat(c, what, argv[0], &oi);
    if (code == 0) {
        if (rsc_cli.json)
            rsc_json_info(stdout, "stat", &oi, NULL);
        else
            print_info_human(&oi, true);
    }
    rsc_conn_close(c);
    return code;
}

static int cmd_rm(int argc, char **argv)
{
    ringstream_v1_ObjectInfo oi;
    uint8_t req[RSC_SMALL_MSG];
    struct rsc_status st;
    char what[300];
    struct rsc_conn *c;
    size_t len;
    int code;

    if (argc != 1)
        return rsc_fail(RSC_EX_USAGE, "rm", -1, NULL, "usage: ringstream rm NAME");
    snprintf(what, sizeof(what), "rm %s", argv[0]);
    c = rsc_connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    len = rsc_name_request(ringstream_v1_DeleteRequest_fields, argv[0], req);
    code = rsc_unary(c, what, RSC_SVC "Delete", req, len, ringstream_v1_ObjectInfo_fields, &oi,
                     &st);
    if (code == 0 && rsc_cli.json)
        rsc_json_info(stdout, "rm", &oi, NULL);
    rsc_conn_close(c);
    return code;
}

struct ls_state {
    uint64_t count;
    bool bad;
};

static int on_list(void *arg, const uint8_t *m, size_t len)
{
    struct ls_state *ls = arg;
    ringstream_v1_ObjectInfo oi;

    if (!rsc_decode_info(m, len, &oi)) {
        ls->bad = true;
        return -1;
    }
    ls->count++;
    if (rsc_cli.json)
        rsc_json_info(stdout, "ls", &oi, NULL);
    else
        print_info_human(&oi, false);
    return 0;
}

static int cmd_ls(int argc, char **argv)
{
    const char *prefix = argc > 0 ? argv[0] : "";
    struct ls_state ls = { 0 };
    uint8_t req[RSC_SMALL_MSG];
    struct rsc_status st;
    struct rsc_conn *c;
    size_t len;
    int code, ret;

    if (argc > 1)
        return rsc_fail(RSC_EX_USAGE, "ls", -1, NULL, "usage: ringstream ls [PREFIX]");
    c = rsc_connect_or_fail("ls", &code);
    if (c == NULL)
        return code;
    len = rsc_name_request(ringstream_v1_ListRequest_fields, prefix, req);
    ret = rsc_call_run(c, RSC_SVC "List", req, len, NULL, on_list, &ls, &st);
    rsc_conn_close(c);
    if (ls.bad)
        return rsc_fail(RSC_EX_CONN, "ls", -1, "INTERNAL", "malformed ObjectInfo from the server");
    if (ret < 0 || st.code != 0)
        return rsc_fail_call("ls", ret, &st);
    return RSC_EX_OK;
}

/* --- command line ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: ringstream [OPTIONS] COMMAND ARGS\n"
          "\n"
          "Commands:\n"
          "  put FILE NAME     upload FILE (- for stdin) as object NAME\n"
          "  get NAME FILE     download NAME into FILE (- for stdout); data goes to FILE.part\n"
          "                    and is renamed once its SHA-256 matches the server's\n"
          "  ls [PREFIX]       list objects (size, modification time, name)\n"
          "  stat NAME         show an object's size, SHA-256 and modification time\n"
          "  rm NAME           delete an object\n"
          "  bench KIND        load test: KIND is unary (Stat), get, put or echo; prints calls/s,\n"
          "                    bytes/s and latency percentiles (p50 p90 p99 p999)\n"
          "\n"
          "Options:\n"
          "  --server HOST:PORT         server (default $RINGSTREAM_SERVER or " RSC_DEFAULT_SRV
          ")\n"
          "  --tls                      TLS (ALPN h2), server certificate verified\n"
          "  --ca FILE                  CA bundle for the server certificate (implies --tls)\n"
          "  --cert FILE --key FILE     client certificate and key (implies --tls)\n"
          "  --servername NAME          name expected in the server certificate (and SNI)\n"
          "  --overwrite                put: replace an existing object\n"
          "  --resumable-threshold SIZE put: resumable upload from this size (default 8M)\n"
          "  --streams N                get: N ranged Gets on N connections (1..64),\n"
          "                             resumable like one stream;\n"
          "                             bench: calls in flight per connection\n"
          "  --conns N                  bench: connections (one thread each; default 1)\n"
          "  --size SIZE                bench: bytes per call (default 64K)\n"
          "  --duration SECONDS         bench: how long (default 5)\n"
          "  --limit-rate SIZE          at most SIZE bytes per second\n"
          "  --timeout SECONDS          rsc_fail when the server is silent this long (default 60)\n"
          "  --json                     one JSON object per result on stdout (stderr for get -)\n"
          "  --no-progress              no progress bar (shown only when stderr is a terminal)\n"
          "  --version                  version and the CRC32C/SHA-256 providers\n"
          "  -h, --help                 this text\n"
          "\n"
          "Interrupted transfers resume when the same command is run again: uploads from the\n"
          "server's persisted size, downloads from FILE.part (state in $XDG_CACHE_HOME/ringstream).\n"
          "\n"
          "Exit codes:\n"
          "  0  success\n"
          "  1  the server answered with a gRPC error (the status is named on stderr;\n"
          "     --json adds grpc_status)\n"
          "  2  usage error\n"
          "  3  local I/O error (reading or writing a file, the cache directory)\n"
          "  4  integrity failure: CRC32C or SHA-256 mismatch, or the server reported DATA_LOSS;\n"
          "     no file is left behind\n"
          "  5  connection failure: cannot connect, TLS handshake, connection lost, timeout,\n"
          "     a response that does not decode\n",
          f);
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-')
        return -EINVAL;
    switch (*end) {
    case '\0':
        break;
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
        return -EINVAL;
    }
    if (*end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        O_TLS = 256,
        O_CA,
        O_CERT,
        O_KEY,
        O_SNI,
        O_OVERWRITE,
        O_RESUM,
        O_STREAMS,
        O_RATE,
        O_JSON,
        O_NOPROG,
        O_SERVER,
        O_TIMEOUT,
        O_CONNS,
        O_SIZE,
        O_DURATION,
        O_VERSION,
    };
    static const struct option longopts[] = {
        { "server", required_argument, NULL, O_SERVER },
        { "tls", no_argument, NULL, O_TLS },
        { "ca", required_argument, NULL, O_CA },
        { "cert", required_argument, NULL, O_CERT },
        { "key", required_argument, NULL, O_KEY },
        { "servername", required_argument, NULL, O_SNI },
        { "overwrite", no_argument, NULL, O_OVERWRITE },
        { "resumable-threshold", required_argument, NULL, O_RESUM },
        { "streams", required_argument, NULL, O_STREAMS },
        { "limit-rate", required_argument, NULL, O_RATE },
        { "timeout", required_argument, NULL, O_TIMEOUT },
        { "json", no_argument, NULL, O_JSON },
        { "conns", required_argument, NULL, O_CONNS },
        { "size", required_argument, NULL, O_SIZE },
        { "duration", required_argument, NULL, O_DURATION },
        { "no-progress", no_argument, NULL, O_NOPROG },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, O_VERSION },
        { NULL, 0, NULL, 0 },
    };
    const char *env = getenv("RINGSTREAM_SERVER");
    bool no_progress = false;
    uint64_t v;
    int ch;

    /* wolfSSL writes with send() without MSG_NOSIGNAL: a peer gone away is an error, not death. */
    signal(SIGPIPE, SIG_IGN);
    rsc_cli.conn.server = env != NULL && env[0] != '\0' ? env : RSC_DEFAULT_SRV;
    rsc_cli.resumable_threshold = RSC_DEFAULT_RESUM;
    rsc_cli.streams = 1;
    rsc_cli.conns = 1;
    rsc_cli.bench_size = 64 * 1024;
    rsc_cli.duration_s = 5;
    rsc_cli.cmd = "ringstream";
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_SERVER:
            rsc_cli.conn.server = optarg;
            break;
        case O_TLS:
            rsc_cli.conn.tls.on = true;
            break;
        case O_CA:
            rsc_cli.conn.tls.on = true;
            rsc_cli.conn.tls.ca = optarg;
            break;
        case O_CERT:
            rsc_cli.conn.tls.on = true;
            rsc_cli.conn.tls.cert = optarg;
            break;
        case O_KEY:
            rsc_cli.conn.tls.on = true;
            rsc_cli.conn.tls.key = optarg;
            break;
        case O_SNI:
            rsc_cli.conn.tls.servername = optarg;
            break;
        case O_OVERWRITE:
            rsc_cli.overwrite = true;
            break;
        case O_RESUM:
            if (parse_size(optarg, &rsc_cli.resumable_threshold) < 0)
                return rsc_fail(RSC_EX_USAGE, "--resumable-threshold", -1, NULL, "bad size \"%s\"",
                                optarg);
            break;
        case O_STREAMS:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > RSC_MAX_STREAMS)
                return rsc_fail(RSC_EX_USAGE, "--streams", -1, NULL, "want 1..%d, not \"%s\"",
                                RSC_MAX_STREAMS, optarg);
            rsc_cli.streams = (unsigned)v;
            break;
        case O_RATE:
            if (parse_size(optarg, &rsc_cli.limit_rate) < 0)
                return rsc_fail(RSC_EX_USAGE, "--limit-rate", -1, NULL, "bad size \"%s\"", optarg);
            break;
        case O_TIMEOUT:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > 86400)
                return rsc_fail(RSC_EX_USAGE, "--timeout", -1, NULL, "want 1..86400 s, not \"%s\"",
                                optarg);
            rsc_cli.conn.idle_timeout_ms = (int)v * 1000;
            break;
        case O_JSON:
            rsc_cli.json = true;
            break;
        case O_CONNS:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > 256)
                return rsc_fail(RSC_EX_USAGE, "--conns", -1, NULL, "want 1..256, not \"%s\"",
                                optarg);
            rsc_cli.conns = (unsigned)v;
            break;
        case O_SIZE:
            if (parse_size(optarg, &rsc_cli.bench_size) < 0 || rsc_cli.bench_size > (1ull << 34))
                return rsc_fail(RSC_EX_USAGE, "--size", -1, NULL, "bad size \"%s\"", optarg);
            break;
        case O_DURATION:
            if (parse_size(optarg, &v) < 0 || v < 1 || v > 3600)
                return rsc_fail(RSC_EX_USAGE, "--duration", -1, NULL, "want 1..3600 s, not \"%s\"",
                                optarg);
            rsc_cli.duration_s = (double)v;
            break;
        case O_NOPROG:
            no_progress = true;
            break;
        case 'h':
            usage(stdout);
            return RSC_EX_OK;
        case O_VERSION:
            printf("ringstream %s\nCRC32C: %s\nSHA-256: %s\n", RS_VERSION, rs_crc32c_provider(),
                   rs_sha256_provider());
            return RSC_EX_OK;
        default:
            usage(stderr);
            return RSC_EX_USAGE;
        }
    }
    if ((rsc_cli.conn.tls.cert == NULL) != (rsc_cli.conn.tls.key == NULL))
        return rsc_fail(RSC_EX_USAGE, "--cert", -1, NULL, "--cert and --key go together");
    rsc_cli.progress = !no_progress && !rsc_cli.json && isatty(STDERR_FILENO);
    if (optind >= argc) {
        usage(stderr);
        return RSC_EX_USAGE;
    }
    rsc_cli.cmd = argv[optind];
    argc -= optind + 1;
    argv += optind + 1;
    if (strcmp(rsc_cli.cmd, "put") == 0)
        return rsc_cmd_put(argc, argv);
    if (strcmp(rsc_cli.cmd, "get") == 0)
        return rsc_cmd_get(argc, argv);
    if (strcmp(rsc_cli.cmd, "ls") == 0)
        return cmd_ls(argc, argv);
    if (strcmp(rsc_cli.cmd, "stat") == 0)
        return cmd_stat(argc, argv);
    if (strcmp(rsc_cli.cmd, "rm") == 0)
        return cmd_rm(argc, argv);
    if (strcmp(rsc_cli.cmd, "bench") == 0) {
        struct rsc_bench_opts b = { .conn = &rsc_cli.conn,
                                    .conns = rsc_cli.conns,
                                    .streams = rsc_cli.streams,
                                    .size = rsc_cli.bench_size,
                                    .duration_s = rsc_cli.duration_s,
                                    .json = rsc_cli.json };

        if (argc != 1 || rsc_bench_kind_parse(argv[0], &b.kind) < 0)
            return rsc_fail(
                    RSC_EX_USAGE, "bench", -1, NULL,
                    "usage: ringstream bench rsc_unary|get|put|echo [--conns N] [--streams N] "
                    "[--size SIZE] [--duration S]");
        return rsc_bench_run(&b);
    }
    fprintf(stderr, "ringstream: unknown command \"%s\" (see ringstream --help)\n", rsc_cli.cmd);
    return RSC_EX_USAGE;
}
