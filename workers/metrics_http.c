/* workers/metrics_http.c: --metrics-listen, GET /metrics over HTTP/1.1 (what Prometheus and
 * curl speak) from libmicrohttpd's own thread, off the workers' rings. The text is
 * rs_metrics_render()'s, the same as GET /metrics on the gRPC port: every worker's counters
 * read with relaxed atomic loads, so scraping takes no lock a worker waits on. Built into
 * ringstreamd only (the unit tests' fake-ring workers library does not need libmicrohttpd).
 *
 * libmicrohttpd is opened with dlopen() when --metrics-listen is set, not linked: Debian's
 * build pulls in GnuTLS and with it p11-kit, nettle, hogweed, gmp, libunistring, libidn2,
 * libtasn1 and libffi, whose pages cost every ringstreamd about 2.4 MiB of resident memory
 * (GnuTLS's constructor initialises it at load time) whether or not anyone scrapes it. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>
#include "workers/internal.h"
#include "workers/server.h"

#define RS_METRICS_HTTP_CONNS     16 /* scrapers at once; more are refused by libmicrohttpd */
#define RS_METRICS_HTTP_TIMEOUT_S 10 /* an idle scraper connection is closed after this */

/* libmicrohttpd's functions this file calls, from dlopen(RS_MHD_SONAME); set once by
 * mhd_load() in the main thread before the daemon's thread starts, read-only afterwards. */
static struct {
    void *lib;
    struct MHD_Daemon *(*start_daemon)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                                       MHD_AccessHandlerCallback, void *, ...);
    void (*stop_daemon)(struct MHD_Daemon *);
    struct MHD_Response *(*create_response_from_buffer)(size_t, void *,
                                                        enum MHD_ResponseMemoryMode);
    enum MHD_Result (*add_response_header)(struct MHD_Response *, const char *, const char *);
    enum MHD_Result (*queue_response)(struct MHD_Connection *, unsigned int, struct MHD_Response *);
    void (*destroy_response)(struct MHD_Response *);
} mhd;

static int mhd_sym(void **fn, const char *name, char *err, size_t errlen)
{
    *fn = dlsym(mhd.lib, name);
    if (*fn == NULL) {
        snprintf(err, errlen, "%s has no %s: %s", RS_MHD_SONAME, name, dlerror());
        return -1;
    }
    return 0;
}

/* Returns 0 once libmicrohttpd is loaded with every function resolved, or -1 with err set
 * (naming the library and what to install). */
static int mhd_load(char *err, size_t errlen)
{
    if (mhd.lib != NULL)
        return 0;
    mhd.lib = dlopen(RS_MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (mhd.lib == NULL) {
        snprintf(err, errlen, "cannot load %s (install libmicrohttpd, e.g. Debian's %s): %s",
                 RS_MHD_SONAME, RS_MHD_PACKAGE, dlerror());
        return -1;
    }
    if (mhd_sym((void **)&mhd.start_daemon, "MHD_start_daemon", err, errlen) < 0 ||
        mhd_sym((void **)&mhd.stop_daemon, "MHD_stop_daemon", err, errlen) < 0 ||
        mhd_sym((void **)&mhd.create_response_from_buffer, "MHD_create_response_from_buffer", err,
                errlen) < 0 ||
        mhd_sym((void **)&mhd.add_response_header, "MHD_add_response_header", err, errlen) < 0 ||
        mhd_sym((void **)&mhd.queue_response, "MHD_queue_response", err, errlen) < 0 ||
        mhd_sym((void **)&mhd.destroy_response, "MHD_destroy_response", err, errlen) < 0) {
        dlclose(mhd.lib);
        memset(&mhd, 0, sizeof(mhd));
        return -1;
    }
    return 0;
}

struct rs_metrics_http {
    struct MHD_Daemon *mhd;
    const struct rs_server *srv; /* borrowed; outlives the daemon (stop before destroying it) */
};

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned code, char *body, size_t len,
                              enum MHD_ResponseMemoryMode mode, const char *type)
{
    struct MHD_Response *resp = mhd.create_response_from_buffer(len, body, mode);
    enum MHD_Result ret;

    if (resp == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        mhd.add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = mhd.queue_response(conn, code, resp);
    mhd.destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **req_cls)
{
    struct rs_metrics_http *m = cls;
    char *body;
    size_t len = 0;

    (void)version;
    (void)upload;
    if (*req_cls == NULL) { /* first call: headers only; answer on the next */
        *req_cls = m;
        return MHD_YES;
    }
    if (*upload_len != 0) {
        *upload_len = 0; /* a body is ignored (only GET and HEAD are answered) */
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0)
        return answer(conn, MHD_HTTP_NOT_FOUND, "not found\n", 10, MHD_RESPMEM_PERSISTENT,
                      "text/plain");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", 19,
                      MHD_RESPMEM_PERSISTENT, "text/plain");
    body = rs_metrics_render(m->srv, &len);
    if (body == NULL)
        return answer(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", 14,
                      MHD_RESPMEM_PERSISTENT, "text/plain");
    return answer(conn, MHD_HTTP_OK, body, len, MHD_RESPMEM_MUST_FREE,
                  "text/plain; version=0.0.4; charset=utf-8");
}

int rs_metrics_http_listen(const struct sockaddr *addr, socklen_t addrlen, char *err, size_t errlen)
{
    int fd, one = 1;

    if (mhd_load(err, errlen) < 0)
        return -1;
    fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, addr, addrlen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct rs_metrics_http *rs_metrics_http_start(const struct rs_server *srv, int fd, char *err,
                                              size_t errlen)
{
    struct rs_metrics_http *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        goto err_close;
    }
    m->srv = srv;
    m->mhd = mhd.start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | 0, 0, NULL,
                              NULL, on_request, m, MHD_OPTION_LISTEN_SOCKET, fd,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)RS_METRICS_HTTP_CONNS,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)RS_METRICS_HTTP_TIMEOUT_S,
                              MHD_OPTION_END);
    if (m->mhd == NULL) {
        snprintf(err, errlen, "libmicrohttpd could not start");
        goto err_free;
    }
    return m;
err_free:
    free(m);
err_close:
    close(fd);
    return NULL;
}

void rs_metrics_http_stop(struct rs_metrics_http *m)
{
    if (m == NULL)
        return;
    mhd.stop_daemon(m->mhd); /* joins its thread and closes the listening socket */
    free(m);
}
