/* tests/fuzz/fuzz_deframer.c: the receive deframer of proto/grpc.c (rs_deframer_push/next/pop)
 * against a model that sees the whole byte stream pushed so far.
 *
 * Input: max_msg (2 bytes, taken mod 1024), room (1 byte, mod 64), then steps, each a control
 * byte c and (c & 31) stream bytes to push. c & 0x20 keeps the next message returned during
 * this step held across the following pushes (as a handler that has not consumed it yet);
 * c & 0x40 asks rs_deframer_next() again while held.
 *
 * Invariants: every answer of rs_deframer_next() is exactly the model's (a message with the
 * same bytes and flag, "not yet", -EPROTO as soon as a bad flag byte arrives, -EMSGSIZE with
 * the announced length as soon as the prefix is whole); a held view never moves or changes
 * while the caller pushes within |room|; a push beyond it is refused whole (-ENOSPC); the
 * buffered count is what was pushed and not popped; an empty deframer holds no memory. */
#include <errno.h>
#include <string.h>
#include "fuzz.h"
#include "proto/grpc.h"

struct run {
    struct rs_deframer d;
    size_t max_msg, room;
    uint8_t *all;  /* every byte pushed, in order (the model's view) */
    size_t pushed; /* bytes of |all| */
    size_t start;  /* offset in |all| of the oldest message not popped */
    bool dead;     /* an error was returned: the stream would be reset */
    bool holding;  /* |held| is outstanding */
    struct rs_grpc_msg held;
    size_t budget; /* bytes that may still be pushed while holding */
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* What rs_deframer_next() must answer for the message at r->start. */
static int model_next(const struct run *r, size_t *len)
{
    size_t avail = r->pushed - r->start;
    const uint8_t *p = r->all + r->start;

    *len = 0;
    if (avail == 0)
        return 0;
    if (p[0] > 1)
        return -EPROTO;
    if (avail < RS_GRPC_PREFIX_LEN)
        return 0;
    *len = be32(p + 1);
    if (*len > r->max_msg)
        return -EMSGSIZE;
    if (avail - RS_GRPC_PREFIX_LEN < *len)
        return 0;
    return 1;
}

static void check_buffered(const struct run *r)
{
    RS_FUZZ_CHECK(rs_deframer_buffered(&r->d) == r->pushed - r->start);
    if (r->pushed == r->start)
        RS_FUZZ_CHECK(r->d.buf == NULL);
}

static void pop_held(struct run *r)
{
    RS_FUZZ_CHECK(r->holding);
    rs_deframer_pop(&r->d);
    r->start += RS_GRPC_PREFIX_LEN + r->held.len;
    r->holding = false;
    check_buffered(r);
}

/* Takes whole messages out until "not yet", an error, or one is kept held. */
static void drain(struct run *r, bool hold)
{
    while (!r->dead && !r->holding) {
        struct rs_grpc_msg m = { 0 };
        size_t len;
        int want = model_next(r, &len);
        int got = rs_deframer_next(&r->d, r->room, &m);

        RS_FUZZ_CHECK(got == want);
        if (got == 0)
            return;
        if (got < 0) {
            if (got == -EMSGSIZE) {
                RS_FUZZ_CHECK(m.len == len);
                RS_FUZZ_CHECK(m.compressed == (r->all[r->start] == 1));
            }
            r->dead = true;
            return;
        }
        RS_FUZZ_CHECK(m.len == len);
        RS_FUZZ_CHECK(m.compressed == (r->all[r->start] == 1));
        RS_FUZZ_CHECK(len == 0 || memcmp(m.data, r->all + r->start + RS_GRPC_PREFIX_LEN, len) == 0);
        r->held = m;
        r->holding = true;
        r->budget = r->room;
        if (hold)
            return;
        pop_held(r);
    }
}

static void push(struct run *r, const uint8_t *p, size_t n)
{
    int ret;

    if (r->holding) {
        size_t now = n < r->budget ? n : r->budget;

        /* Within |room|: taken, and the held view stays where it is, unchanged. */
        ret = rs_deframer_push(&r->d, p, now);
        RS_FUZZ_CHECK(ret == 0);
        memcpy(r->all + r->pushed, p, now);
        r->pushed += now;
        r->budget -= now;
        p += now;
        n -= now;
        RS_FUZZ_CHECK(r->held.len == 0 ||
                      memcmp(r->held.data, r->all + r->start + RS_GRPC_PREFIX_LEN, r->held.len) ==
                              0);
        if (n == 0)
            return;
        /* Beyond it: taken only if it happens to fit; refused whole otherwise. */
        ret = rs_deframer_push(&r->d, p, n);
        RS_FUZZ_CHECK(ret == 0 || ret == -ENOSPC);
        if (ret == 0) {
            memcpy(r->all + r->pushed, p, n);
            r->pushed += n;
            check_buffered(r);
            return;
        }
        check_buffered(r);
        pop_held(r);
        drain(r, false);
        if (r->dead)
            return;
    }
    ret = rs_deframer_push(&r->d, p, n);
    RS_FUZZ_CHECK(ret == 0);
    memcpy(r->all + r->pushed, p, n);
    r->pushed += n;
    check_buffered(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rs_fuzz_in in = { data, size };
    struct run r = { 0 };

    r.max_msg = rs_fuzz_u16(&in) % 1024;
    r.room = rs_fuzz_u8(&in) % 64;
    r.all = malloc(size + 1);
    RS_FUZZ_CHECK(r.all != NULL);
    rs_deframer_init(&r.d, r.max_msg);
    while (in.left > 0 && !r.dead) {
        uint8_t c = rs_fuzz_u8(&in);
        size_t n;
        const uint8_t *p = rs_fuzz_take(&in, c & 31, &n);

        push(&r, p, n);
        if (r.dead)
            break;
        if (r.holding && (c & 0x40)) {
            struct rs_grpc_msg again = { 0 };
            int ret = rs_deframer_next(&r.d, r.room, &again);

            /* The same message again, unless the room asked for no longer fits. */
            if (ret == 1)
                RS_FUZZ_CHECK(again.data == r.held.data && again.len == r.held.len);
            else
                RS_FUZZ_CHECK(ret == -ENOSPC && r.budget < r.room);
        }
        if (r.holding && !(c & 0x20))
            pop_held(&r);
        drain(&r, (c & 0x20) != 0);
    }
    if (r.holding)
        pop_held(&r);
    drain(&r, false);
    if (!r.dead) {
        size_t len;

        /* Whatever is left is an incomplete message. */
        RS_FUZZ_CHECK(model_next(&r, &len) == 0);
        check_buffered(&r);
    }
    rs_deframer_free(&r.d);
    RS_FUZZ_CHECK(r.d.buf == NULL && rs_deframer_buffered(&r.d) == 0);
    free(r.all);
    return 0;
}
