/* tests/unit/test_client_rpc.c: the client call layer (client/rpc.c) against bad input that
 * needs no real server: malformed addresses, a refused port, a server that accepts and never
 * answers, one that answers with HTTP/1.1, one that closes at once, and TLS options that
 * cannot load. Peers are threads on 127.0.0.1 sockets; every wait is bounded by the client's
 * own timeouts, which these tests set to one second. */
#include "client/rpc.h"
#include "tests/unit/runner.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t some_req[] = { 0x0a, 0x01, 'x' }; /* StatRequest{name: "x"} */

/* A listening socket on 127.0.0.1 with a kernel-chosen port. Returns the fd; |port| set. */
static int listen_any(int *port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CU_ASSERT_FATAL(listen(fd, 4) == 0);
    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

enum peer_mode {
    PEER_SILENT,
    PEER_HTTP1,
    PEER_CLOSE
};

struct peer {
    int lfd;
    enum peer_mode mode;
    pthread_t tid;
};

/* Accepts one connection and behaves as |mode| says; returns when the client hangs up (or
 * after 10 s, whichever is first). */
static void *peer_main(void *arg)
{
    static const char http1[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    struct peer *p = arg;
    struct pollfd pf = { .fd = p->lfd, .events = POLLIN };
    char buf[4096];
    int fd;

    if (poll(&pf, 1, 10000) != 1)
        return NULL;
    fd = accept(p->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    if (p->mode == PEER_HTTP1 && write(fd, http1, sizeof(http1) - 1) < 0)
        perror("write");
    if (p->mode != PEER_CLOSE) {
        for (int i = 0; i < 100; i++) { /* drain until EOF, at most 10 s */
            struct pollfd q = { .fd = fd, .events = POLLIN };

            if (poll(&q, 1, 100) == 1 && read(fd, buf, sizeof(buf)) <= 0)
                break;
        }
    }
    close(fd);
    return NULL;
}

static void peer_start(struct peer *p, enum peer_mode mode, char *addr, size_t len)
{
    int port;

    p->mode = mode;
    p->lfd = listen_any(&port);
    snprintf(addr, len, "127.0.0.1:%d", port);
    CU_ASSERT_FATAL(pthread_create(&p->tid, NULL, peer_main, p) == 0);
}

static void peer_stop(struct peer *p)
{
    pthread_join(p->tid, NULL);
    close(p->lfd);
}

static void test_bad_addresses(void)
{
    static const char *const bad[] = {
        "", ":", ":50051", "host:", "host:port", "host:12a", "[::1", "[::1]x", "[]:1", "a:b:c",
    };
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rsc_conn_opts o = { .server = bad[i], .connect_timeout_ms = 1000 };
        struct rsc_conn *c;

        err[0] = '\0';
        c = rsc_conn_open(&o, err, sizeof(err));
        CU_ASSERT_PTR_NULL(c);
        rsc_conn_close(c);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad server address"));
    }
}

static void test_refused(void)
{
    char addr[64], err[256] = "";
    int port, fd = listen_any(&port);
    struct rsc_conn_opts o = { .server = addr, .connect_timeout_ms = 1000 };

    close(fd); /* nobody listens there now */
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    CU_ASSERT_PTR_NULL(rsc_conn_open(&o, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "refused"));
}

/* Runs one unary call against a peer of |mode|; returns rsc_call_run's result. */
static int call_against(enum peer_mode mode, struct rsc_status *st)
{
    struct peer p;
    char addr[64], err[256] = "";
    struct rsc_conn_opts o = { .server = addr,
                               .connect_timeout_ms = 1000,
                               .idle_timeout_ms = 1000 };
    struct rsc_conn *c;
    int ret = 0;

    peer_start(&p, mode, addr, sizeof(addr));
    c = rsc_conn_open(&o, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(c); /* TCP connects; HTTP/2 fails later */
    if (c != NULL) {
        ret = rsc_call_run(c, "/ringstream.v1.Bulk/Stat", some_req, sizeof(some_req), NULL, NULL,
                           NULL, st);
        /* the connection is dead now: a second call fails at once, same reason */
        CU_ASSERT(rsc_call_run(c, "/ringstream.v1.Bulk/Stat", some_req, sizeof(some_req), NULL,
                               NULL, NULL, st) < 0);
        rsc_conn_close(c);
    }
    peer_stop(&p);
    return ret;
}

static void test_silent_server_times_out(void)
{
    struct rsc_status st;

    CU_ASSERT_EQUAL(call_against(PEER_SILENT, &st), -ECONNRESET);
    CU_ASSERT_PTR_NOT_NULL(strstr(st.msg, "no answer"));
}

static void test_http1_answer_is_protocol_error(void)
{
    struct rsc_status st;

    CU_ASSERT(call_against(PEER_HTTP1, &st) < 0);
    CU_ASSERT(strlen(st.msg) > 0);
}

static void test_closed_at_once(void)
{
    struct rsc_status st;

    CU_ASSERT(call_against(PEER_CLOSE, &st) < 0);
    CU_ASSERT(strlen(st.msg) > 0);
}

static void test_tls_options_that_cannot_load(void)
{
    struct peer p;
    char addr[64], err[256] = "";
    struct rsc_conn_opts o = { .server = addr, .connect_timeout_ms = 1000 };

    /* a CA file that does not exist */
    peer_start(&p, PEER_CLOSE, addr, sizeof(addr));
    o.tls = (struct rsc_tls_opts){ .on = true, .ca = "/nonexistent/ca.pem" };
    CU_ASSERT_PTR_NULL(rsc_conn_open(&o, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot load CA file"));
    peer_stop(&p);

    /* an IP literal with the system CAs: no name could be checked */
    peer_start(&p, PEER_CLOSE, addr, sizeof(addr));
    o.tls = (struct rsc_tls_opts){ .on = true };
    err[0] = '\0';
    CU_ASSERT_PTR_NULL(rsc_conn_open(&o, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--servername"));
    peer_stop(&p);

    /* a handshake with a peer that hangs up */
    peer_start(&p, PEER_CLOSE, addr, sizeof(addr));
    o.tls = (struct rsc_tls_opts){ .on = true, .servername = "localhost" };
    err[0] = '\0';
    CU_ASSERT_PTR_NULL(rsc_conn_open(&o, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "TLS handshake"));
    peer_stop(&p);
}

static CU_TestInfo tests[] = {
    { "malformed server addresses", test_bad_addresses },
    { "connection refused", test_refused },
    { "a server that never answers: idle timeout", test_silent_server_times_out },
    { "an HTTP/1.1 answer", test_http1_answer_is_protocol_error },
    { "closed right after accept", test_closed_at_once },
    { "TLS options that cannot work", test_tls_options_that_cannot_load },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "client/rpc", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
