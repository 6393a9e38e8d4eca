/* tests/unit/test_budget.c: the per-worker memory budget and its per-connection shares. */
#include "core/budget.h"
#include "tests/unit/runner.h"
#include <errno.h>

static struct rs_budget b;
static struct rs_budget_acct a1, a2;

static void setup(void)
{
    CU_ASSERT_EQUAL_FATAL(rs_budget_init(&b, 800, 300), 0);
    a1.used = 0;
    a2.used = 0;
}

static void test_init_rejects_bad_limits(void)
{
    struct rs_budget x;

    CU_ASSERT_EQUAL(rs_budget_init(&x, 0, 0), -EINVAL);
    CU_ASSERT_EQUAL(rs_budget_init(&x, 100, 0), -EINVAL);
    CU_ASSERT_EQUAL(rs_budget_init(&x, 100, 101), -EINVAL);
    CU_ASSERT_EQUAL(rs_budget_init(&x, 100, 100), 0);
}

static void test_share_caps_one_connection(void)
{
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, 300), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, 1), -EDQUOT);
    CU_ASSERT_EQUAL(a1.used, 300);
    CU_ASSERT_EQUAL(b.used, 300);
    CU_ASSERT_EQUAL(b.refused[RS_BUDGET_R_SHARE], 1);
    /* another connection is not affected by the first one's share */
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a2, 300), 0);
}

static void test_worker_limit_holds_across_connections(void)
{
    struct rs_budget_acct a3 = { 0 }, a4 = { 0 }, a5 = { 0 }, a6 = { 0 };

    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, 300), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a2, 300), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a3, 201), -ENOBUFS);
    CU_ASSERT_EQUAL(b.refused[RS_BUDGET_R_WORKER], 1);
    /* a heavy connection stops at 7/8; the last eighth (100) is for light ones (<= 37 each) */
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a3, 101), -ENOBUFS);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a3, 100), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a4, 37), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a5, 37), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a6, 27), -ENOBUFS); /* past the limit itself */
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a6, 26), 0);
    CU_ASSERT_EQUAL(b.used, 800);
    CU_ASSERT_EQUAL(b.peak, 800);
    rs_budget_release(&b, &a6, 26);
    rs_budget_release(&b, &a5, 37);
    rs_budget_release(&b, &a4, 37);
    rs_budget_release(&b, &a3, 100);
    rs_budget_release(&b, &a2, 300);
    rs_budget_release(&b, &a1, 300);
    CU_ASSERT_EQUAL(b.used, 0);
    CU_ASSERT_EQUAL(b.peak, 800);
}

static void test_huge_charge_does_not_wrap(void)
{
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, (size_t)-1), -ENOBUFS);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, 10), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, (size_t)-1 - 5), -ENOBUFS);
    CU_ASSERT_EQUAL(b.used, 10);
}

/* The degradation order: smaller windows, then refused streams, then no accept. */
static void test_levels_in_order(void)
{
    struct rs_budget_acct big = { 0 };
    struct rs_budget wide;

    CU_ASSERT_EQUAL_FATAL(rs_budget_init(&wide, 800, 800), 0);
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_OK);
    CU_ASSERT_EQUAL(rs_budget_stream_window(&wide, 1000, 100), 1000);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &big, 400), 0); /* half */
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_SHRINK);
    CU_ASSERT_EQUAL(rs_budget_stream_window(&wide, 1000, 100), 1000);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &big, 100), 0); /* 5/8: halfway to refusal */
    CU_ASSERT_EQUAL(rs_budget_stream_window(&wide, 1000, 100), 550);
    CU_ASSERT_TRUE(rs_budget_admit_stream(&wide, &big));
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &big, 100), 0); /* 3/4 */
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_REFUSE);
    CU_ASSERT_EQUAL(rs_budget_stream_window(&wide, 1000, 100), 100);
    CU_ASSERT_FALSE(rs_budget_admit_stream(&wide, &big));
    CU_ASSERT_TRUE(rs_budget_admit_conn(&wide));
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &big, 100), 0); /* 7/8 */
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_NO_ACCEPT);
    CU_ASSERT_FALSE(rs_budget_admit_conn(&wide));
    CU_ASSERT_EQUAL(wide.refused[RS_BUDGET_R_STREAM], 1);
    CU_ASSERT_EQUAL(wide.refused[RS_BUDGET_R_ACCEPT], 1);
    rs_budget_release(&wide, &big, 700);
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_OK);
    CU_ASSERT_TRUE(rs_budget_admit_conn(&wide));
}

static void test_connection_over_share_gets_no_stream(void)
{
    CU_ASSERT_TRUE(rs_budget_admit_stream(&b, &a1));
    CU_ASSERT_EQUAL(rs_budget_charge(&b, &a1, 300), 0);
    CU_ASSERT_FALSE(rs_budget_admit_stream(&b, &a1));
    CU_ASSERT_TRUE(rs_budget_admit_stream(&b, &a2)); /* the bystander still gets streams */
}

/* Near the budget a light connection (a bystander's small calls) still gets streams and memory,
 * while the heavy ones that filled the budget are refused. */
static void test_light_connection_admitted_near_budget(void)
{
    struct rs_budget wide;
    struct rs_budget_acct heavy1 = { 0 }, heavy2 = { 0 }, light = { 0 }, light2 = { 0 };

    CU_ASSERT_EQUAL_FATAL(rs_budget_init(&wide, 800, 400), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &heavy1, 300), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &heavy2, 300), 0);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &light, 50), 0); /* exactly an eighth of 400 */
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_REFUSE);
    CU_ASSERT_FALSE(rs_budget_admit_stream(&wide, &heavy1));
    CU_ASSERT_TRUE(rs_budget_admit_stream(&wide, &light));
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &light, 1), 0);
    CU_ASSERT_FALSE(rs_budget_admit_stream(&wide, &light)); /* now past an eighth */
    CU_ASSERT_EQUAL(wide.refused[RS_BUDGET_R_STREAM], 2);
    /* the last eighth (700..800) is kept for light connections */
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &heavy1, 50), -ENOBUFS);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &heavy1, 49), 0);
    CU_ASSERT_EQUAL(rs_budget_level(&wide), RS_BUDGET_NO_ACCEPT);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &heavy2, 1), -ENOBUFS);
    CU_ASSERT_EQUAL(rs_budget_charge(&wide, &light2, 50), 0);
    CU_ASSERT_TRUE(rs_budget_admit_stream(&wide, &light2));
}

static void test_default_scales_and_clamps(void)
{
    const uint64_t gib = (uint64_t)1 << 30;

    CU_ASSERT_EQUAL(rs_budget_default(0, 2), (size_t)256 << 20);
    CU_ASSERT_EQUAL(rs_budget_default(24 * gib, 2), (size_t)3 * gib);
    CU_ASSERT_EQUAL(rs_budget_default(24 * gib, 0), (size_t)4 * gib); /* clamped high */
    CU_ASSERT_EQUAL(rs_budget_default(gib / 4, 8), (size_t)64 << 20); /* clamped low */
}

static CU_TestInfo tests[] = {
    { "init rejects bad limits", test_init_rejects_bad_limits },
    { "share caps one connection", test_share_caps_one_connection },
    { "worker limit holds across connections", test_worker_limit_holds_across_connections },
    { "huge charge does not wrap", test_huge_charge_does_not_wrap },
    { "levels degrade in order", test_levels_in_order },
    { "connection over its share gets no new stream", test_connection_over_share_gets_no_stream },
    { "light connections admitted and charged near the budget",
      test_light_connection_admitted_near_budget },
    { "default scales with memory and clamps", test_default_scales_and_clamps },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "core/budget", NULL, NULL, setup, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
