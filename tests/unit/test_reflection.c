/* tests/unit/test_reflection.c: workers/reflection's table of descriptors: the set built into
 * the binary (every proto/ file, symbols of every kind), a hand-written set with imports and
 * an extension (the walk that sends each file once per stream, extension lookups), and hostile
 * sets (truncated at every length, every byte flipped, missing imports, duplicates, deep
 * nesting), which must fail with -EINVAL and a reason, never crash. */
#include "workers/reflection/reflection.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char err[256];

/* --- a small protobuf writer for hand-made sets ---------------------------------------- */

struct pbuf {
    uint8_t b[8192];
    size_t n;
};

static void put_varint(struct pbuf *p, uint64_t v)
{
    CU_ASSERT_FATAL(p->n + 10 <= sizeof(p->b));
    while (v >= 0x80) {
        p->b[p->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p->b[p->n++] = (uint8_t)v;
}

static void put_bytes(struct pbuf *p, uint32_t field, const void *data, size_t len)
{
    put_varint(p, (uint64_t)field << 3 | 2);
    put_varint(p, len);
    CU_ASSERT_FATAL(p->n + len <= sizeof(p->b));
    memcpy(p->b + p->n, data, len);
    p->n += len;
}

static void put_str(struct pbuf *p, uint32_t field, const char *s)
{
    put_bytes(p, field, s, strlen(s));
}

static void put_msg(struct pbuf *p, uint32_t field, const struct pbuf *m)
{
    put_bytes(p, field, m->b, m->n);
}

/* A DescriptorProto/EnumDescriptorProto/... holding only a name. */
static void put_named(struct pbuf *p, uint32_t field, const char *name)
{
    struct pbuf m = { .n = 0 };

    put_str(&m, 1, name);
    put_msg(p, field, &m);
}

/* The hand-made set: c.proto (package c: message C, enum E { E0 }), b.proto (package b, imports
 * c.proto: message B { field f; nested message N { enum M } }, extension x of c.C = 100 and
 * = 7), a.proto (package a, imports b.proto and c.proto: service S { method Do }). Listed
 * a, b, c: imports may come after the file that names them. */
static void make_set(struct pbuf *set)
{
    struct pbuf a = { .n = 0 }, b = { .n = 0 }, c = { .n = 0 }, m = { .n = 0 }, n = { .n = 0 },
                e = { .n = 0 }, x = { .n = 0 }, svc = { .n = 0 };

    put_str(&c, 1, "c.proto");
    put_str(&c, 2, "c");
    put_named(&c, 4, "C");
    put_str(&e, 1, "E");
    put_named(&e, 2, "E0");
    put_msg(&c, 5, &e);

    put_str(&b, 1, "b.proto");
    put_str(&b, 2, "b");
    put_str(&b, 3, "c.proto");
    put_str(&m, 1, "B");
    put_named(&m, 2, "f");
    put_str(&n, 1, "N");
    put_named(&n, 4, "M");
    put_msg(&m, 3, &n);
    put_msg(&b, 4, &m);
    put_str(&x, 1, "x");
    put_str(&x, 2, ".c.C");
    put_varint(&x, 3 << 3);
    put_varint(&x, 100);
    put_msg(&b, 7, &x);
    x.n = 0;
    put_str(&x, 1, "y");
    put_str(&x, 2, ".c.C");
    put_varint(&x, 3 << 3);
    put_varint(&x, 7);
    put_msg(&b, 7, &x);

    put_str(&a, 1, "a.proto");
    put_str(&a, 2, "a");
    put_str(&a, 3, "b.proto");
    put_str(&a, 3, "c.proto");
    put_str(&svc, 1, "S");
    put_named(&svc, 2, "Do");
    put_msg(&a, 6, &svc);

    set->n = 0;
    put_msg(set, 1, &a);
    put_msg(set, 1, &b);
    put_msg(set, 1, &c);
}

static int sym_file(const struct rs_reflection *r, const char *name)
{
    return rs_reflection_file_of_symbol(r, name, strlen(name));
}

static int file_idx(const struct rs_reflection *r, const char *name)
{
    return rs_reflection_file_by_name(r, name, strlen(name));
}

/* --- the built-in set ------------------------------------------------------------------ */

static void test_builtin_set_loads(void)
{
    static const char *const files[] = {
        "bulk.proto",
        "health.proto",
        "grpc_testing.proto",
        "grpc/reflection/v1/reflection.proto",
        "grpc/reflection/v1alpha/reflection.proto",
    };
    struct rs_reflection *r = NULL;
    size_t i;

    CU_ASSERT_EQUAL_FATAL(rs_reflection_new(&r, rs_reflection_descriptor_set,
                                            rs_reflection_descriptor_set_len, err, sizeof(err)),
                          0);
    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        CU_ASSERT(file_idx(r, files[i]) >= 0);
    CU_ASSERT_EQUAL(file_idx(r, "nope.proto"), -ENOENT);
    CU_ASSERT_EQUAL(file_idx(r, "bulk.prot"), -ENOENT);
    rs_reflection_destroy(r);
}

static void test_builtin_symbols_of_every_kind(void)
{
    static const char *const health[] = {
        "grpc.health.v1.Health",                                    /* service */
        "grpc.health.v1.Health.Check",                              /* method */
        "grpc.health.v1.HealthCheckRequest",                        /* message */
        "grpc.health.v1.HealthCheckRequest.service",                /* field */
        "grpc.health.v1.HealthCheckResponse.ServingStatus",         /* nested enum */
        "grpc.health.v1.HealthCheckResponse.SERVING",               /* its value, beside it */
        "grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING", /* and grpc-go 1.33's name */
    };
    static const char *const missing[] = {
        "grpc.health.v1", /* a package */
        "grpc.health.v1.",
        "grpc.health.v1.Health.",
        ".grpc.health.v1.Health",
        "grpc.health.v1.Healt",
        "grpc.health.v1.Health.Check.x",
        "grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING.x",
        "grpc.health.v1.SERVING", /* the enum is inside HealthCheckResponse */
        "",
    };
    struct rs_reflection *r = NULL;
    int h, v1;
    size_t i;

    CU_ASSERT_EQUAL_FATAL(rs_reflection_new(&r, rs_reflection_descriptor_set,
                                            rs_reflection_descriptor_set_len, err, sizeof(err)),
                          0);
    h = file_idx(r, "health.proto");
    v1 = file_idx(r, "grpc/reflection/v1/reflection.proto");
    for (i = 0; i < sizeof(health) / sizeof(health[0]); i++)
        CU_ASSERT_EQUAL(sym_file(r, health[i]), h);
    for (i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        CU_ASSERT_EQUAL(sym_file(r, missing[i]), -ENOENT);
    CU_ASSERT_EQUAL(sym_file(r, "grpc.reflection.v1.ServerReflectionRequest.message_request"),
                    v1); /* a oneof */
    CU_ASSERT_EQUAL(sym_file(r, "grpc.reflection.v1.ServerReflection.ServerReflectionInfo"), v1);
    CU_ASSERT_EQUAL(sym_file(r, "ringstream.v1.Bulk.Put"), file_idx(r, "bulk.proto"));
    CU_ASSERT_EQUAL(sym_file(r, "grpc.testing.UnimplementedService"),
                    file_idx(r, "grpc_testing.proto"));
    /* proto3: no extensions anywhere */
    CU_ASSERT_EQUAL(rs_reflection_file_of_extension(r, "ringstream.v1.StatRequest", 25, 1),
                    -ENOENT);
    rs_reflection_destroy(r);
}

/* --- a set with imports ---------------------------------------------------------------- */

static void test_walk_sends_each_file_once_per_stream(void)
{
    struct rs_reflection *r = NULL;
    struct pbuf set;
    uint8_t sent[3] = { 0 }, seen[3];
    uint32_t queue[3], out[3];
    int a, b, c;

    make_set(&set);
    CU_ASSERT_EQUAL_FATAL(rs_reflection_new(&r, set.b, set.n, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rs_reflection_nfiles(r), 3);
    a = file_idx(r, "a.proto");
    b = file_idx(r, "b.proto");
    c = file_idx(r, "c.proto");
    /* a first, then its imports breadth first: b, c (c once, though b imports it too) */
    CU_ASSERT_EQUAL_FATAL(rs_reflection_walk(r, (uint32_t)a, sent, seen, queue, out), 3);
    CU_ASSERT_EQUAL(out[0], (uint32_t)a);
    CU_ASSERT_EQUAL(out[1], (uint32_t)b);
    CU_ASSERT_EQUAL(out[2], (uint32_t)c);
    /* asked again on the same stream: the file itself, none of its imports */
    CU_ASSERT_EQUAL_FATAL(rs_reflection_walk(r, (uint32_t)b, sent, seen, queue, out), 1);
    CU_ASSERT_EQUAL(out[0], (uint32_t)b);
    CU_ASSERT_EQUAL_FATAL(rs_reflection_walk(r, (uint32_t)a, sent, seen, queue, out), 1);
    CU_ASSERT_EQUAL(out[0], (uint32_t)a);
    /* a new stream: b brings c */
    memset(sent, 0, sizeof(sent));
    CU_ASSERT_EQUAL_FATAL(rs_reflection_walk(r, (uint32_t)b, sent, seen, queue, out), 2);
    CU_ASSERT_EQUAL(out[0], (uint32_t)b);
    CU_ASSERT_EQUAL(out[1], (uint32_t)c);
    CU_ASSERT_EQUAL_FATAL(rs_reflection_walk(r, (uint32_t)c, sent, seen, queue, out), 1);
    CU_ASSERT_EQUAL(out[0], (uint32_t)c);
    rs_reflection_destroy(r);
}

static void test_handmade_symbols_and_extensions(void)
{
    struct rs_reflection *r = NULL;
    struct pbuf set;
    int b;

    make_set(&set);
    CU_ASSERT_EQUAL_FATAL(rs_reflection_new(&r, set.b, set.n, err, sizeof(err)), 0);
    b = file_idx(r, "b.proto");
    CU_ASSERT_EQUAL(sym_file(r, "a.S.Do"), file_idx(r, "a.proto"));
    CU_ASSERT_EQUAL(sym_file(r, "b.B.N.M"), b);
    CU_ASSERT_EQUAL(sym_file(r, "b.B.f"), b);
    CU_ASSERT_EQUAL(sym_file(r, "b.x"), b); /* a file-level extension, in the package */
    CU_ASSERT_EQUAL(sym_file(r, "c.E0"), file_idx(r, "c.proto"));
    CU_ASSERT_EQUAL(sym_file(r, "c.E.E0"), file_idx(r, "c.proto"));
    CU_ASSERT_EQUAL(sym_file(r, "c.C.E0"), -ENOENT);
    CU_ASSERT_EQUAL(rs_reflection_file_of_extension(r, "c.C", 3, 100), b);
    CU_ASSERT_EQUAL(rs_reflection_file_of_extension(r, "c.C", 3, 7), b);
    CU_ASSERT_EQUAL(rs_reflection_file_of_extension(r, "c.C", 3, 8), -ENOENT);
    CU_ASSERT_EQUAL(rs_reflection_file_of_extension(r, ".c.C", 4, 100), -ENOENT);
    CU_ASSERT_EQUAL(rs_reflection_file_of_extension(r, "b.B", 3, 100), -ENOENT);
    rs_reflection_destroy(r);
}

static void test_add_rejects_bad_names(void)
{
    struct rs_reflection *r = NULL;
    struct pbuf set;

    make_set(&set);
    CU_ASSERT_EQUAL_FATAL(rs_reflection_new(&r, set.b, set.n, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(rs_reflection_add(r, NULL), -EINVAL);
    CU_ASSERT_EQUAL(rs_reflection_add(r, ""), -EINVAL);
    CU_ASSERT_EQUAL(rs_reflection_add(NULL, "a.S"), -EINVAL);
    CU_ASSERT_EQUAL(rs_reflection_add(r, "a.S"), 0);
    CU_ASSERT_EQUAL(rs_reflection_add(r, "a.S"), 0); /* twice: harmless */
    rs_reflection_destroy(r);
    rs_reflection_destroy(NULL);
}

/* --- hostile sets ---------------------------------------------------------------------- */

static void expect_invalid(const uint8_t *p, size_t n, const char *why)
{
    struct rs_reflection *r = (struct rs_reflection *)1;

    err[0] = '\0';
    CU_ASSERT_EQUAL(rs_reflection_new(&r, p, n, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NULL(r);
    if (strstr(err, why) == NULL) {
        fprintf(stderr, "want an error with \"%s\", got \"%s\"\n", why, err);
        CU_FAIL("error text");
    }
}

static void test_invalid_sets(void)
{
    struct pbuf set = { .n = 0 }, f = { .n = 0 }, m = { .n = 0 }, deep[40];
    int i;

    expect_invalid((const uint8_t *)"", 0, "no file");
    expect_invalid((const uint8_t *)"\x0a\x05\x0a\x01", 4, "malformed");
    /* a file without a name */
    put_str(&f, 2, "pkg");
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "without a name");
    /* a NUL in a package (found by the byte flips below): symbols would be cut short */
    set.n = f.n = 0;
    put_str(&f, 1, "a.proto");
    put_bytes(&f, 2, "a\0b", 3);
    put_named(&f, 4, "M");
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "NUL in the package");
    /* an import that is not in the set */
    set.n = f.n = 0;
    put_str(&f, 1, "a.proto");
    put_str(&f, 3, "gone.proto");
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "gone.proto");
    /* the same file twice */
    set.n = f.n = 0;
    put_str(&f, 1, "a.proto");
    put_msg(&set, 1, &f);
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "twice");
    /* the same symbol in two files */
    set.n = 0;
    f.n = 0;
    put_str(&f, 1, "a.proto");
    put_named(&f, 4, "M");
    put_msg(&set, 1, &f);
    f.n = 0;
    put_str(&f, 1, "b.proto");
    put_named(&f, 4, "M");
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "declared twice");
    /* a message without a name, and one with a dot in it */
    set.n = f.n = 0;
    put_str(&f, 1, "a.proto");
    put_str(&m, 2, "nameless");
    put_msg(&f, 4, &m);
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "bad name");
    set.n = f.n = 0;
    put_str(&f, 1, "a.proto");
    put_named(&f, 4, "x.y");
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "bad name");
    /* an extension without a number */
    set.n = f.n = m.n = 0;
    put_str(&f, 1, "a.proto");
    put_str(&m, 1, "e");
    put_str(&m, 2, ".a.M");
    put_msg(&f, 7, &m);
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "extendee or number");
    /* messages nested 40 deep */
    deep[39].n = 0;
    put_str(&deep[39], 1, "M39");
    for (i = 38; i >= 0; i--) {
        char name[8];

        snprintf(name, sizeof(name), "M%d", i);
        deep[i].n = 0;
        put_str(&deep[i], 1, name);
        put_msg(&deep[i], 3, &deep[i + 1]);
    }
    set.n = f.n = 0;
    put_str(&f, 1, "a.proto");
    put_msg(&f, 4, &deep[0]);
    put_msg(&set, 1, &f);
    expect_invalid(set.b, set.n, "nested too deeply");
}

/* Every prefix of the built-in set, and the set with each byte flipped: 0 or -EINVAL with a
 * reason, never a crash (ASan build) or a leak. */
static void test_mangled_builtin_set(void)
{
    size_t len = rs_reflection_descriptor_set_len, i, ok = 0;
    uint8_t *copy = malloc(len);
    struct rs_reflection *r;
    int ret;

    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    for (i = 0; i < len; i++) {
        memcpy(copy, rs_reflection_descriptor_set, i); /* its own buffer: ASan sees overruns */
        ret = rs_reflection_new(&r, copy, i, err, sizeof(err));
        CU_ASSERT(ret == 0 || (ret == -EINVAL && err[0] != '\0'));
        ok += ret == 0;
        rs_reflection_destroy(r);
    }
    CU_ASSERT(ok > 0 && ok < 6); /* the prefixes that end right after a file */
    for (i = 0; i < len; i++) {
        memcpy(copy, rs_reflection_descriptor_set, len);
        copy[i] ^= 0xff;
        ret = rs_reflection_new(&r, copy, len, err, sizeof(err));
        CU_ASSERT(ret == 0 || (ret == -EINVAL && err[0] != '\0'));
        rs_reflection_destroy(r);
    }
    free(copy);
}

static CU_TestInfo tests[] = {
    { "the built-in set names every proto/ file", test_builtin_set_loads },
    { "built-in symbols of every kind, and names that are not symbols",
      test_builtin_symbols_of_every_kind },
    { "the walk sends a file's imports once per stream, the file itself always",
      test_walk_sends_each_file_once_per_stream },
    { "nested symbols and extensions of a hand-made set", test_handmade_symbols_and_extensions },
    { "add rejects NULL and empty names", test_add_rejects_bad_names },
    { "inconsistent sets are -EINVAL with a reason", test_invalid_sets },
    { "the built-in set truncated or with a byte flipped", test_mangled_builtin_set },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/reflection", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
