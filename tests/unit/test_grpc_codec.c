/* tests/unit/test_grpc_codec.c: the 5-byte prefix and the receive deframer. */
#include "proto/grpc.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MSG 1024

static struct rs_deframer d;

static void setup(void)
{
    rs_deframer_init(&d, MAX_MSG);
}

static void teardown(void)
{
    rs_deframer_free(&d);
}

/* A stream of framed messages and what the deframer should yield from it. */
struct expect {
    size_t len;
    bool compressed;
    uint8_t seed;
};

static const struct expect stream_msgs[] = {
    { 3, false, 1 },   { 0, false, 2 }, { 1, true, 3 },
    { 300, false, 4 }, { 0, true, 5 },  { 17, false, 6 },
};
#define NMSGS (sizeof(stream_msgs) / sizeof(stream_msgs[0]))

static uint8_t payload_byte(uint8_t seed, size_t i)
{
    return (uint8_t)(seed * 31u + i * 7u);
}

/* Returns the stream length; |out| must be large enough. */
static size_t build_stream(uint8_t *out)
{
    size_t o = 0;
    size_t k, i;

    for (k = 0; k < NMSGS; k++) {
        rs_grpc_prefix_write(out + o, stream_msgs[k].compressed, (uint32_t)stream_msgs[k].len);
        o += RS_GRPC_PREFIX_LEN;
        for (i = 0; i < stream_msgs[k].len; i++)
            out[o++] = payload_byte(stream_msgs[k].seed, i);
    }
    return o;
}

static bool msg_matches(const struct rs_grpc_msg *m, const struct expect *e)
{
    size_t i;

    if (m->len != e->len || m->compressed != e->compressed)
        return false;
    for (i = 0; i < m->len; i++) {
        if (m->data[i] != payload_byte(e->seed, i))
            return false;
    }
    return true;
}

/* Pops every complete message, checking each against the expectation list. Returns false on
 * any mismatch or error. */
static bool drain(struct rs_deframer *df, size_t *seen)
{
    struct rs_grpc_msg m;
    int r;

    while ((r = rs_deframer_next(df, 0, &m)) == 1) {
        if (*seen >= NMSGS || !msg_matches(&m, &stream_msgs[*seen]))
            return false;
        (*seen)++;
        rs_deframer_pop(df);
    }
    return r == 0;
}

static void test_prefix_write_layout(void)
{
    uint8_t p[RS_GRPC_PREFIX_LEN];
    static const uint8_t zero[] = { 0, 0, 0, 0, 0 };
    static const uint8_t mid[] = { 1, 0x01, 0x02, 0x03, 0x04 };
    static const uint8_t top[] = { 0, 0xff, 0xff, 0xff, 0xff };

    rs_grpc_prefix_write(p, false, 0);
    CU_ASSERT_EQUAL(memcmp(p, zero, sizeof(p)), 0);
    rs_grpc_prefix_write(p, true, 0x01020304u);
    CU_ASSERT_EQUAL(memcmp(p, mid, sizeof(p)), 0);
    rs_grpc_prefix_write(p, false, UINT32_MAX);
    CU_ASSERT_EQUAL(memcmp(p, top, sizeof(p)), 0);
}

static void test_prefix_parse_roundtrip(void)
{
    static const uint32_t lens[] = { 0, 1, 255, 256, 65535, 65536, 0x01020304u, UINT32_MAX };
    uint8_t buf[RS_GRPC_PREFIX_LEN + 8];
    struct rs_grpc_msg m;
    size_t i;

    /* Small lengths come back as messages; large ones through -EMSGSIZE's announced size. */
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        struct rs_deframer df;
        bool comp = i % 2 == 1;
        int r;

        rs_deframer_init(&df, 4);
        rs_grpc_prefix_write(buf, comp, lens[i]);
        memset(buf + RS_GRPC_PREFIX_LEN, 0xab, 8);
        CU_ASSERT_EQUAL(
                rs_deframer_push(&df, buf, RS_GRPC_PREFIX_LEN + (lens[i] <= 4 ? lens[i] : 0)), 0);
        memset(&m, 0, sizeof(m));
        r = rs_deframer_next(&df, 0, &m);
        if (lens[i] <= 4) {
            CU_ASSERT_EQUAL(r, 1);
            CU_ASSERT_EQUAL(m.compressed, comp);
            rs_deframer_pop(&df);
        } else {
            CU_ASSERT_EQUAL(r, -EMSGSIZE);
        }
        CU_ASSERT_EQUAL(m.len, lens[i]);
        rs_deframer_free(&df);
    }
}

static void test_every_split_point(void)
{
    uint8_t s[512];
    size_t n = build_stream(s);
    size_t cut, seen;

    CU_ASSERT_FATAL(n < sizeof(s));
    for (cut = 0; cut <= n; cut++) {
        seen = 0;
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s, cut), 0);
        CU_ASSERT_FATAL(drain(&d, &seen));
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s + cut, n - cut), 0);
        CU_ASSERT_FATAL(drain(&d, &seen));
        CU_ASSERT_EQUAL_FATAL(seen, NMSGS);
        CU_ASSERT_EQUAL_FATAL(rs_deframer_buffered(&d), 0);
        CU_ASSERT_PTR_NULL_FATAL(d.buf);
    }
}

static void test_every_pair_of_split_points(void)
{
    uint8_t s[512];
    size_t n = build_stream(s);
    size_t a, b, seen;

    for (a = 0; a <= n; a++) {
        for (b = a; b <= n; b++) {
            seen = 0;
            CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s, a), 0);
            CU_ASSERT_FATAL(drain(&d, &seen));
            CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s + a, b - a), 0);
            CU_ASSERT_FATAL(drain(&d, &seen));
            CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s + b, n - b), 0);
            CU_ASSERT_FATAL(drain(&d, &seen));
            CU_ASSERT_EQUAL_FATAL(seen, NMSGS);
            CU_ASSERT_PTR_NULL_FATAL(d.buf);
        }
    }
}

static void test_byte_at_a_time(void)
{
    uint8_t s[512];
    size_t n = build_stream(s);
    size_t i, seen = 0;

    for (i = 0; i < n; i++) {
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s + i, 1), 0);
        CU_ASSERT_FATAL(drain(&d, &seen));
    }
    CU_ASSERT_EQUAL(seen, NMSGS);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&d), 0);
    CU_ASSERT_PTR_NULL(d.buf);
}

static void test_incomplete_returns_zero(void)
{
    uint8_t s[RS_GRPC_PREFIX_LEN + 4];
    struct rs_grpc_msg m;
    size_t i;

    rs_grpc_prefix_write(s, false, 4);
    memcpy(s + RS_GRPC_PREFIX_LEN, "abcd", 4);
    CU_ASSERT_EQUAL(rs_deframer_next(&d, 0, &m), 0);
    for (i = 0; i < sizeof(s) - 1; i++) {
        CU_ASSERT_EQUAL(rs_deframer_push(&d, s + i, 1), 0);
        CU_ASSERT_EQUAL(rs_deframer_next(&d, 0, &m), 0);
        CU_ASSERT_EQUAL(rs_deframer_buffered(&d), i + 1);
    }
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s + i, 1), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_EQUAL(m.len, 4);
    CU_ASSERT_EQUAL(memcmp(m.data, "abcd", 4), 0);
    rs_deframer_pop(&d);
}

static void test_exact_max_size_accepted(void)
{
    uint8_t *s = malloc(RS_GRPC_PREFIX_LEN + MAX_MSG);
    struct rs_grpc_msg m;

    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rs_grpc_prefix_write(s, false, MAX_MSG);
    memset(s + RS_GRPC_PREFIX_LEN, 'x', MAX_MSG);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s, RS_GRPC_PREFIX_LEN), 0);
    CU_ASSERT_EQUAL(rs_deframer_next(&d, 0, &m), 0);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s + RS_GRPC_PREFIX_LEN, MAX_MSG), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_EQUAL(m.len, MAX_MSG);
    CU_ASSERT_EQUAL(m.data[0], 'x');
    CU_ASSERT_EQUAL(m.data[MAX_MSG - 1], 'x');
    rs_deframer_pop(&d);
    CU_ASSERT_PTR_NULL(d.buf);
    free(s);
}

static void test_over_max_rejected_from_prefix(void)
{
    uint8_t p[RS_GRPC_PREFIX_LEN];
    struct rs_grpc_msg m = { 0 };

    rs_grpc_prefix_write(p, false, MAX_MSG + 1);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, p, 4), 0);
    CU_ASSERT_EQUAL(rs_deframer_next(&d, 0, &m), 0);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, p + 4, 1), 0);
    CU_ASSERT_EQUAL(rs_deframer_next(&d, 0, &m), -EMSGSIZE);
    CU_ASSERT_EQUAL(m.len, MAX_MSG + 1);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&d), RS_GRPC_PREFIX_LEN);
    CU_ASSERT_FALSE(d.held);
}

static void test_compressed_flag_reported(void)
{
    uint8_t s[2 * RS_GRPC_PREFIX_LEN + 2];
    struct rs_grpc_msg m;

    rs_grpc_prefix_write(s, true, 1);
    s[5] = 'a';
    rs_grpc_prefix_write(s + 6, false, 1);
    s[11] = 'b';
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s, sizeof(s)), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_TRUE(m.compressed);
    CU_ASSERT_EQUAL(m.data[0], 'a');
    rs_deframer_pop(&d);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_FALSE(m.compressed);
    CU_ASSERT_EQUAL(m.data[0], 'b');
    rs_deframer_pop(&d);
}

static void test_bad_flag_is_eproto(void)
{
    static const uint8_t flags[] = { 2, 3, 0x80, 0xff };
    uint8_t p[RS_GRPC_PREFIX_LEN];
    struct rs_grpc_msg m;
    size_t i;

    for (i = 0; i < sizeof(flags); i++) {
        struct rs_deframer df;

        rs_deframer_init(&df, MAX_MSG);
        rs_grpc_prefix_write(p, false, 0);
        p[0] = flags[i];
        CU_ASSERT_EQUAL(rs_deframer_push(&df, p, 1), 0);
        CU_ASSERT_EQUAL(rs_deframer_next(&df, 0, &m), -EPROTO);
        CU_ASSERT_EQUAL(rs_deframer_push(&df, p + 1, 4), 0);
        CU_ASSERT_EQUAL(rs_deframer_next(&df, 0, &m), -EPROTO);
        rs_deframer_free(&df);
        CU_ASSERT_PTR_NULL(df.buf);
    }
}

static void test_held_view_does_not_move(void)
{
    enum {
        ROOM = 3000
    };
    uint8_t s[RS_GRPC_PREFIX_LEN + 10];
    uint8_t chunk[100];
    const uint8_t *view;
    uint8_t *buf_before;
    struct rs_grpc_msg m;
    size_t i;

    /* A popped message first, so head > 0 and the reservation may compact or grow. */
    rs_grpc_prefix_write(s, false, 0);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s, RS_GRPC_PREFIX_LEN), 0);
    rs_grpc_prefix_write(s, false, 10);
    memcpy(s + RS_GRPC_PREFIX_LEN, "0123456789", 10);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s, sizeof(s)), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_EQUAL(m.len, 0);
    rs_deframer_pop(&d);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, ROOM, &m), 1);
    CU_ASSERT_TRUE(d.held);
    CU_ASSERT_TRUE(d.cap - d.tail >= ROOM);
    view = m.data;
    buf_before = d.buf;
    memset(chunk, 0, sizeof(chunk));
    for (i = 0; i < ROOM / sizeof(chunk); i++)
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, chunk, sizeof(chunk)), 0);
    CU_ASSERT_PTR_EQUAL(d.buf, buf_before);
    CU_ASSERT_PTR_EQUAL(m.data, view);
    CU_ASSERT_EQUAL(memcmp(view, "0123456789", 10), 0);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&d), sizeof(s) + ROOM);
    /* Asking again while held gives the same view. */
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_PTR_EQUAL(m.data, view);
    /* Past the reserved room (if the allocation had no slack), the push is refused. */
    while (d.tail < d.cap)
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, chunk, 1), 0);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, chunk, 1), -ENOSPC);
    CU_ASSERT_PTR_EQUAL(d.buf, buf_before);
    rs_deframer_pop(&d);
    CU_ASSERT_FALSE(d.held);
    /* Released: the buffer may grow again. */
    CU_ASSERT_EQUAL(rs_deframer_push(&d, chunk, 1), 0);
}

static void test_buffer_freed_when_empty(void)
{
    uint8_t s[RS_GRPC_PREFIX_LEN + 2 + RS_GRPC_PREFIX_LEN];
    struct rs_grpc_msg m;

    CU_ASSERT_PTR_NULL(d.buf);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s, 0), 0);
    CU_ASSERT_PTR_NULL(d.buf);
    rs_grpc_prefix_write(s, false, 2);
    s[5] = 'h';
    s[6] = 'i';
    rs_grpc_prefix_write(s + 7, false, 0);
    /* Message plus a partial prefix: after the pop the partial bytes keep the buffer. */
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s, 9), 0);
    CU_ASSERT_PTR_NOT_NULL(d.buf);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    rs_deframer_pop(&d);
    CU_ASSERT_PTR_NOT_NULL(d.buf);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&d), 2);
    CU_ASSERT_EQUAL(rs_deframer_push(&d, s + 9, 3), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_EQUAL(m.len, 0);
    rs_deframer_pop(&d);
    CU_ASSERT_PTR_NULL(d.buf);
    CU_ASSERT_EQUAL(d.cap, 0);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&d), 0);
    CU_ASSERT_EQUAL(rs_deframer_next(&d, 0, &m), 0);
}

static void test_free_empty_and_partial(void)
{
    struct rs_deframer df;
    uint8_t p[3] = { 0, 0, 0 };

    rs_deframer_init(&df, 10);
    rs_deframer_free(&df);
    rs_deframer_free(&df);
    CU_ASSERT_PTR_NULL(df.buf);
    CU_ASSERT_EQUAL(rs_deframer_push(&df, p, sizeof(p)), 0);
    rs_deframer_free(&df); /* ASan reports a leak if this does not free */
    CU_ASSERT_PTR_NULL(df.buf);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&df), 0);
}

/* A 4 MiB message arriving in 16 KiB DATA-frame pieces, its last 1 KiB missing (issue 15:
 * the buffer used to double to 8 MiB). It must be sized to the declared message exactly. */
static void test_partial_large_message_sized_exactly(void)
{
    const size_t big = (size_t)4 << 20, piece = 16384;
    struct rs_deframer bd;
    struct rs_grpc_msg m;
    uint8_t *s = malloc(RS_GRPC_PREFIX_LEN + big);
    size_t off, n;

    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rs_deframer_init(&bd, big);
    rs_grpc_prefix_write(s, false, (uint32_t)big);
    memset(s + RS_GRPC_PREFIX_LEN, 'z', big);
    for (off = 0; off < RS_GRPC_PREFIX_LEN + big - 1024; off += n) {
        n = RS_GRPC_PREFIX_LEN + big - 1024 - off;
        if (n > piece)
            n = piece;
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&bd, s + off, n), 0);
        CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&bd, 0, &m), 0);
        CU_ASSERT(bd.cap <= RS_GRPC_PREFIX_LEN + big);
    }
    CU_ASSERT_EQUAL(bd.cap, RS_GRPC_PREFIX_LEN + big);
    CU_ASSERT_EQUAL(rs_deframer_push(&bd, s + off, RS_GRPC_PREFIX_LEN + big - off), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&bd, 0, &m), 1);
    CU_ASSERT_EQUAL(m.len, big);
    CU_ASSERT_EQUAL(bd.cap, RS_GRPC_PREFIX_LEN + big);
    rs_deframer_pop(&bd);
    CU_ASSERT_PTR_NULL(bd.buf);
    rs_deframer_free(&bd);
    free(s);
}

/* Once the prefix is known the buffer grows once, to the whole message: not once per piece. */
static void test_grows_once_per_message(void)
{
    uint8_t s[RS_GRPC_PREFIX_LEN + MAX_MSG];
    struct rs_grpc_msg m;
    uint8_t *first;
    size_t off;

    rs_grpc_prefix_write(s, false, MAX_MSG);
    memset(s + RS_GRPC_PREFIX_LEN, 'q', MAX_MSG);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s, RS_GRPC_PREFIX_LEN + 1), 0);
    CU_ASSERT_EQUAL(d.cap, RS_GRPC_PREFIX_LEN + MAX_MSG);
    first = d.buf;
    for (off = RS_GRPC_PREFIX_LEN + 1; off < sizeof(s); off++) {
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s + off, 1), 0);
        CU_ASSERT_PTR_EQUAL(d.buf, first);
    }
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 0, &m), 1);
    CU_ASSERT_EQUAL(d.cap, sizeof(s));
    rs_deframer_pop(&d);
}

/* Room reserved for what flow control lets arrive while a view is held comes on top of the
 * message, and only that much. */
static void test_reserved_room_on_top_of_message(void)
{
    uint8_t s[RS_GRPC_PREFIX_LEN + 100];
    struct rs_grpc_msg m;

    rs_grpc_prefix_write(s, false, 100);
    memset(s + RS_GRPC_PREFIX_LEN, 'r', 100);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s, sizeof(s)), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, 300, &m), 1);
    CU_ASSERT(d.cap - d.tail >= 300);
    CU_ASSERT(d.cap <= sizeof(s) + 300 || d.cap <= 256);
    rs_deframer_pop(&d);
}

/* A large message popped with a small tail of the next one behind it gives the memory back. */
static void test_shrinks_after_large_message(void)
{
    const size_t big = 200000;
    struct rs_deframer bd;
    struct rs_grpc_msg m;
    uint8_t *s = malloc(RS_GRPC_PREFIX_LEN + big + RS_GRPC_PREFIX_LEN);

    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rs_deframer_init(&bd, big);
    rs_grpc_prefix_write(s, false, (uint32_t)big);
    memset(s + RS_GRPC_PREFIX_LEN, 'k', big);
    rs_grpc_prefix_write(s + RS_GRPC_PREFIX_LEN + big, false, 0); /* 3 of its 5 bytes first */
    CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&bd, s, RS_GRPC_PREFIX_LEN + big + 3), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&bd, 0, &m), 1);
    rs_deframer_pop(&bd);
    CU_ASSERT_EQUAL(rs_deframer_buffered(&bd), 3);
    CU_ASSERT(bd.cap <= 4096);
    CU_ASSERT_EQUAL(rs_deframer_push(&bd, s + RS_GRPC_PREFIX_LEN + big + 3, 2), 0);
    CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&bd, 0, &m), 1);
    CU_ASSERT_EQUAL(m.len, 0);
    rs_deframer_pop(&bd);
    rs_deframer_free(&bd);
    free(s);
}

/* Popping a small message from the front of many does not move the rest to the front each
 * time (which copied a 16 KiB DATA frame of 100-byte messages about 80 times over): only once
 * the popped bytes are four times what is left. The room reserved makes the buffer larger than
 * 64 KiB, as a stream's window does. */
static void test_small_messages_not_moved_each_pop(void)
{
    enum {
        N = 100,
        LEN = 10,
        FRAMED = RS_GRPC_PREFIX_LEN + LEN,
        ROOM = 100000
    };
    uint8_t s[N * FRAMED + 2];
    struct rs_grpc_msg m;
    size_t k, moves = 0, head_before;

    for (k = 0; k < N; k++) {
        rs_grpc_prefix_write(s + k * FRAMED, false, LEN);
        memset(s + k * FRAMED + RS_GRPC_PREFIX_LEN, (int)k, LEN);
    }
    s[N * FRAMED] = 0; /* two bytes of a next prefix keep the buffer */
    s[N * FRAMED + 1] = 0;
    CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&d, s, sizeof(s)), 0);
    for (k = 0; k < N; k++) {
        CU_ASSERT_EQUAL_FATAL(rs_deframer_next(&d, ROOM, &m), 1);
        CU_ASSERT_EQUAL_FATAL(m.len, LEN);
        CU_ASSERT_EQUAL_FATAL(m.data[0], (uint8_t)k);
        CU_ASSERT_EQUAL_FATAL(m.data[LEN - 1], (uint8_t)k);
        head_before = d.head;
        rs_deframer_pop(&d);
        if (d.head != head_before + FRAMED) {
            moves++;
            CU_ASSERT_EQUAL(d.head, 0);
            CU_ASSERT(head_before + FRAMED >= 4 * rs_deframer_buffered(&d));
        }
    }
    CU_ASSERT_EQUAL(rs_deframer_buffered(&d), 2);
    CU_ASSERT(moves <= 3);
}

/* A stream of messages with room reserved for each one (as a stream that keeps its window open
 * does) settles on one buffer: the shrink after a pop keeps the room the next message reserves
 * again, instead of giving it back and reallocating it at every message. */
static void test_reserved_room_kept_across_messages(void)
{
    enum {
        N = 200,
        LEN = 1000,
        FRAMED = RS_GRPC_PREFIX_LEN + LEN,
        PIECE = 16384,
        ROOM = 100000
    };
    struct rs_deframer bd;
    struct rs_grpc_msg m;
    uint8_t *s = malloc((size_t)N * FRAMED);
    size_t k, off, n, seen = 0, resizes = 0, cap = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    rs_deframer_init(&bd, 4096);
    for (k = 0; k < N; k++) {
        rs_grpc_prefix_write(s + k * FRAMED, false, LEN);
        memset(s + k * FRAMED + RS_GRPC_PREFIX_LEN, (int)k, LEN);
    }
    for (off = 0; off < (size_t)N * FRAMED; off += n) {
        n = (size_t)N * FRAMED - off;
        if (n > PIECE)
            n = PIECE;
        CU_ASSERT_EQUAL_FATAL(rs_deframer_push(&bd, s + off, n), 0);
        while (rs_deframer_next(&bd, ROOM, &m) == 1) {
            CU_ASSERT_EQUAL_FATAL(m.data[0], (uint8_t)seen);
            CU_ASSERT(bd.cap - bd.tail >= ROOM);
            CU_ASSERT(bd.cap <= PIECE + ROOM + FRAMED);
            seen++;
            rs_deframer_pop(&bd);
            if (bd.buf != NULL && bd.cap != cap) {
                resizes++;
                cap = bd.cap;
            }
        }
    }
    CU_ASSERT_EQUAL(seen, N);
    /* Sized once, then a few small growths while the largest remainder grows (4 here); it was
     * two reallocations per message (400). */
    CU_ASSERT(resizes <= 8);
    CU_ASSERT_PTR_NULL(bd.buf);
    rs_deframer_free(&bd);
    free(s);
}

static CU_TestInfo tests[] = {
    { "prefix write layout", test_prefix_write_layout },
    { "prefix parse round trip", test_prefix_parse_roundtrip },
    { "deframer every split point", test_every_split_point },
    { "deframer every pair of split points", test_every_pair_of_split_points },
    { "deframer byte at a time", test_byte_at_a_time },
    { "incomplete message returns 0", test_incomplete_returns_zero },
    { "message of exactly max size accepted", test_exact_max_size_accepted },
    { "max+1 rejected from the prefix alone", test_over_max_rejected_from_prefix },
    { "compressed flag reported", test_compressed_flag_reported },
    { "bad flag byte is EPROTO", test_bad_flag_is_eproto },
    { "held view does not move within reserved room", test_held_view_does_not_move },
    { "buffer freed when empty", test_buffer_freed_when_empty },
    { "free accepts empty and partial", test_free_empty_and_partial },
    { "partial 4 MiB message sized exactly", test_partial_large_message_sized_exactly },
    { "grows once per message", test_grows_once_per_message },
    { "reserved room on top of the message", test_reserved_room_on_top_of_message },
    { "shrinks after a large message", test_shrinks_after_large_message },
    { "small messages not moved at every pop", test_small_messages_not_moved_each_pop },
    { "reserved room kept across messages", test_reserved_room_kept_across_messages },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "proto/grpc codec", NULL, NULL, setup, teardown, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
