/* tests/unit/test_bulk_name.c: the bulk store's name rules (workers/bulk/name.c). */
#include <string.h>
#include <CUnit/CUnit.h>
#include "tests/unit/runner.h"
#include "workers/bulk/name.h"

struct name_case {
    const char *what;
    const char *name; /* NULL: built by the test (long names) */
    size_t len;       /* bytes of |name|; embedded NULs count */
};

#define CASE(s)             \
    {                       \
        s, s, sizeof(s) - 1 \
    }

static const struct name_case good[] = {
    CASE("a"),
    CASE("a/b"),
    CASE("a.b"),
    CASE("..a"),
    CASE("a.."),
    CASE("A-Z_0.9"),
    CASE("..."),
    CASE("a/b/c.d"),
    CASE(".hidden"),
    CASE("x/.y/..z"),
    CASE("-"),
    CASE("_"),
    CASE("2024/01/02/log.gz"),
};

static const struct name_case hostile[] = {
    CASE(""),     CASE("."),           CASE(".."),          CASE("../x"),
    CASE("x/.."), CASE("/etc/passwd"), CASE("a/../b"),      CASE("a/./b"),
    CASE("./a"),  CASE("a//b"),        CASE("a/"),          CASE("/"),
    CASE("//"),   CASE("a\0b"),        CASE("a\0"),         CASE("\0"),
    CASE("a b"),  CASE(" a"),          CASE("a\\b"),        CASE("..\\x"),
    CASE("a\nb"), CASE("a\tb"),        CASE("caf\xc3\xa9"), CASE("\xe2\x80\xae"),
    CASE("\xff"), CASE("%2e%2e"),      CASE("%2e%2e/x"),    CASE("a:b"),
    CASE("a*"),   CASE("~"),
};

static void test_good_names_pass(void)
{
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CU_ASSERT_TRUE(rs_bulk_name_valid(good[i].name, good[i].len));
        if (!rs_bulk_name_valid(good[i].name, good[i].len))
            fprintf(stderr, "\n  good name refused: \"%s\"\n", good[i].what);
    }
}

static void test_hostile_names_fail(void)
{
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        CU_ASSERT_FALSE(rs_bulk_name_valid(hostile[i].name, hostile[i].len));
        if (rs_bulk_name_valid(hostile[i].name, hostile[i].len))
            fprintf(stderr, "\n  hostile name accepted: case %zu (%zu bytes)\n", i, hostile[i].len);
    }
}

static void test_length_limits(void)
{
    char buf[300];

    memset(buf, 'x', sizeof(buf));
    CU_ASSERT_TRUE(rs_bulk_name_valid(buf, 1));
    CU_ASSERT_TRUE(rs_bulk_name_valid(buf, 255));
    CU_ASSERT_FALSE(rs_bulk_name_valid(buf, 256));
    CU_ASSERT_FALSE(rs_bulk_name_valid(buf, sizeof(buf)));
    CU_ASSERT_FALSE(rs_bulk_name_valid(buf, 0));
    CU_ASSERT_FALSE(rs_bulk_name_valid(NULL, 0));
    /* 255 bytes of segments is fine; a slash at the very end still is not. */
    for (size_t i = 1; i < 255; i += 2)
        buf[i] = '/';
    CU_ASSERT_TRUE(rs_bulk_name_valid(buf, 255));
    CU_ASSERT_FALSE(rs_bulk_name_valid(buf, 254));
}

static void test_length_is_respected(void)
{
    /* Only |len| bytes are looked at: what follows does not matter, NUL or not. */
    CU_ASSERT_TRUE(rs_bulk_name_valid("ab/../c", 2));
    CU_ASSERT_FALSE(rs_bulk_name_valid("ab/../c", 3));
    CU_ASSERT_FALSE(rs_bulk_name_valid("ab/../c", 5));
}

static void test_every_byte_outside_the_alphabet_fails(void)
{
    for (int c = 0; c < 256; c++) {
        char name[3] = { 'a', (char)c, 'b' };
        bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '-' || c == '/';

        CU_ASSERT_EQUAL(rs_bulk_name_valid(name, sizeof(name)), allowed);
    }
}

static CU_TestInfo tests[] = {
    { "good names pass", test_good_names_pass },
    { "hostile names fail", test_hostile_names_fail },
    { "length limits 1..255", test_length_limits },
    { "only len bytes are read", test_length_is_respected },
    { "every byte outside the alphabet fails", test_every_byte_outside_the_alphabet_fails },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/bulk/name", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
