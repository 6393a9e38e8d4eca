/* tests/fuzz/gen_conn_corpus.c: writes the seed corpus of fuzz_conn (tests/fuzz/corpus/conn/):
 * valid client byte streams made by an nghttp2 client session, each behind an options byte
 * (see fuzz_conn.c). Build and run by hand:
 *   cc -I. -o /tmp/gen_conn_corpus tests/fuzz/gen_conn_corpus.c -lnghttp2
 *   /tmp/gen_conn_corpus tests/fuzz/corpus/conn */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nghttp2/nghttp2.h>

struct body {
    const uint8_t *p;
    size_t len, off;
    int end_stream;
};

struct out {
    uint8_t buf[1 << 16];
    size_t len;
};

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    struct body *b = src->ptr;
    size_t n = b->len - b->off < len ? b->len - b->off : len;

    memcpy(buf, b->p + b->off, n);
    b->off += n;
    if (b->off == b->len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!b->end_stream)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

static void drain(nghttp2_session *s, struct out *o)
{
    const uint8_t *d;
    ssize_t n;

    while ((n = nghttp2_session_mem_send(s, &d)) > 0 && o->len + (size_t)n <= sizeof(o->buf)) {
        memcpy(o->buf + o->len, d, (size_t)n);
        o->len += (size_t)n;
    }
}

static int32_t request(nghttp2_session *s, const char *method, const char *path,
                       const char *timeout, struct body *b)
{
    nghttp2_data_provider prd = { .source.ptr = b, .read_callback = body_read };
    nghttp2_nv nv[7];
    size_t n = 0;

#define NV(k, v)                                                                  \
    nv[n++] = (nghttp2_nv){ (uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), \
                            NGHTTP2_NV_FLAG_NONE }
    NV(":method", method);
    NV(":scheme", "http");
    NV(":path", path);
    NV(":authority", "f");
    NV("content-type", "application/grpc");
    NV("te", "trailers");
    if (timeout != NULL)
        NV("grpc-timeout", timeout);
#undef NV
    return nghttp2_submit_request(s, NULL, nv, n, b != NULL ? &prd : NULL, NULL);
}

static void save(const char *dir, const char *name, uint8_t opt, const struct out *o)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    fputc(opt, f);
    fwrite(o->buf, 1, o->len, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    static const uint8_t msg1[] = { 0, 0, 0, 0, 3, 'a', 'b', 'c' };
    static const uint8_t msg2[] = { 0, 0, 0, 0, 1, 'x', 0, 0, 0, 0, 2, 'y', 'z' };
    static const uint8_t zmsg[] = { 1, 0, 0, 0, 2, 'h', 'i' }; /* compressed flag, no encoding */
    /* SimpleRequest { response_size: 10 } */
    static const uint8_t unary[] = { 0, 0, 0, 0, 2, 0x10, 0x0a };
    /* StreamingOutputCallRequest { response_parameters { size: 5, interval_us: 1000 } x2 } */
    static const uint8_t sout[] = { 0,    0,    0,    0,    14,   0x12, 0x05, 0x10, 0x05, 0x18,
                                    0xe8, 0x07, 0x12, 0x05, 0x10, 0x05, 0x18, 0xe8, 0x07 };
    nghttp2_session_callbacks *cbs;
    nghttp2_session *s;
    struct out *o = calloc(1, sizeof(*o));
    struct body b1, b2;
    int32_t id;
    int i;

    if (argc != 2 || o == NULL)
        return 2;
    nghttp2_session_callbacks_new(&cbs);
    for (i = 0; i < 9; i++) {
        nghttp2_session_client_new(&s, cbs, NULL);
        nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
        o->len = 0;
        b1 = (struct body){ msg1, sizeof(msg1), 0, 1 };
        b2 = (struct body){ msg2, sizeof(msg2), 0, 0 };
        switch (i) {
        case 0: /* unary Echo */
            request(s, "POST", "/f.F/Echo", NULL, &b1);
            drain(s, o);
            save(argv[1], "echo_unary", 0x00, o);
            break;
        case 1: /* two messages, a deadline, timers fired half-way */
            b2.end_stream = 1;
            request(s, "POST", "/f.F/Echo", "1S", &b2);
            drain(s, o);
            save(argv[1], "echo_deadline", 0x40, o);
            break;
        case 2: /* a held message, then RST_STREAM(CANCEL) */
            id = request(s, "POST", "/f.F/Hold", NULL, &b2);
            drain(s, o);
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
            drain(s, o);
            save(argv[1], "hold_reset", 0x00, o);
            break;
        case 3: /* two streams, PING, WINDOW_UPDATE; a drain half-way */
            request(s, "POST", "/f.F/Echo", NULL, &b1);
            request(s, "POST", "/f.F/Hold", "100m", &b2);
            nghttp2_submit_ping(s, NGHTTP2_FLAG_NONE, NULL);
            nghttp2_submit_window_update(s, NGHTTP2_FLAG_NONE, 0, 1000);
            drain(s, o);
            save(argv[1], "two_streams_drain", 0x80, o);
            break;
        case 4: /* a plain GET, one byte at a time */
            request(s, "GET", "/", NULL, NULL);
            drain(s, o);
            save(argv[1], "get_bytewise", 0x02, o);
            break;
        case 5: /* Echo with sends held and the first sendmsg failing */
            request(s, "POST", "/f.F/Echo", NULL, &b1);
            drain(s, o);
            save(argv[1], "echo_send_fails", 0x30, o);
            break;
        case 6: /* a compressed message without grpc-encoding, 3-byte chunks */
            b1 = (struct body){ zmsg, sizeof(zmsg), 0, 1 };
            request(s, "POST", "/f.F/Echo", NULL, &b1);
            drain(s, o);
            save(argv[1], "compressed_no_encoding", 0x04, o);
            break;
        case 7: /* interop UnaryCall */
            b1 = (struct body){ unary, sizeof(unary), 0, 1 };
            request(s, "POST", "/grpc.testing.TestService/UnaryCall", NULL, &b1);
            drain(s, o);
            save(argv[1], "interop_unary", 0x00, o);
            break;
        case 8: /* interop FullDuplexCall with intervals (timers fired half-way) */
            b1 = (struct body){ sout, sizeof(sout), 0, 1 };
            request(s, "POST", "/grpc.testing.TestService/FullDuplexCall", "2S", &b1);
            drain(s, o);
            save(argv[1], "interop_duplex_timers", 0x40, o);
            break;
        }
        nghttp2_session_del(s);
    }
    nghttp2_session_callbacks_del(cbs);
    free(o);
    return 0;
}
