/* tests/unit/test_timerheap.c: the per-worker timer heap (ordering, removal, ties, scale). */
#include "core/timerheap.h"
#include "tests/unit/runner.h"
#include <errno.h>
#include <stdlib.h>

#define MANY 100000

static struct rs_timerheap h;
static struct rs_timer *many; /* MANY entries, for the scale tests */

static void setup(void)
{
    rs_timerheap_init(&h);
    many = calloc(MANY, sizeof(*many));
}

static void teardown(void)
{
    rs_timerheap_free(&h);
    free(many);
    many = NULL;
}

/* Pops everything expired by |now| and checks the order is non-decreasing in (expiry, seq). */
static size_t drain_checked(uint64_t now)
{
    struct rs_timer *t, *prev = NULL;
    size_t n = 0;

    while ((t = rs_timerheap_pop_expired(&h, now)) != NULL) {
        CU_ASSERT_EQUAL(t->idx, RS_TIMER_NONE);
        if (prev != NULL)
            CU_ASSERT(prev->expiry < t->expiry ||
                      (prev->expiry == t->expiry && prev->seq < t->seq));
        prev = t;
        n++;
    }
    return n;
}

static void test_empty_heap_has_nothing_expired(void)
{
    CU_ASSERT_PTR_NULL(rs_timerheap_peek(&h));
    CU_ASSERT_PTR_NULL(rs_timerheap_pop_expired(&h, UINT64_MAX));
}

static void test_pops_in_expiry_order(void)
{
    static const uint64_t exp[] = { 50, 10, 40, 30, 20, 60, 5 };
    struct rs_timer t[7];
    size_t i;

    for (i = 0; i < 7; i++) {
        rs_timer_init(&t[i]);
        CU_ASSERT_EQUAL(rs_timerheap_add(&h, &t[i], exp[i]), 0);
    }
    CU_ASSERT_PTR_EQUAL(rs_timerheap_peek(&h), &t[6]);
    CU_ASSERT_PTR_NULL(rs_timerheap_pop_expired(&h, 4));
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 5), &t[6]);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 35), &t[1]);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 35), &t[4]);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 35), &t[3]);
    CU_ASSERT_PTR_NULL(rs_timerheap_pop_expired(&h, 35));
    CU_ASSERT_EQUAL(rs_timerheap_count(&h), 3);
    CU_ASSERT_EQUAL(drain_checked(UINT64_MAX), 3);
}

static void test_add_twice_is_refused(void)
{
    struct rs_timer t;

    rs_timer_init(&t);
    CU_ASSERT_EQUAL(rs_timerheap_add(&h, &t, 1), 0);
    CU_ASSERT_EQUAL(rs_timerheap_add(&h, &t, 2), -EALREADY);
    CU_ASSERT_EQUAL(rs_timerheap_count(&h), 1);
}

static void test_remove_keeps_order_and_is_idempotent(void)
{
    struct rs_timer t[5];
    size_t i;

    for (i = 0; i < 5; i++) {
        rs_timer_init(&t[i]);
        CU_ASSERT_EQUAL(rs_timerheap_add(&h, &t[i], 100 - i * 10), 0);
    }
    rs_timerheap_remove(&h, &t[4]); /* the earliest */
    rs_timerheap_remove(&h, &t[1]); /* one in the middle */
    rs_timerheap_remove(&h, &t[1]);
    CU_ASSERT_EQUAL(t[1].idx, RS_TIMER_NONE);
    CU_ASSERT_EQUAL(rs_timerheap_count(&h), 3);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 1000), &t[3]);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 1000), &t[2]);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 1000), &t[0]);
    CU_ASSERT_PTR_NULL(rs_timerheap_pop_expired(&h, 1000));
    /* a removed entry can be added again */
    CU_ASSERT_EQUAL(rs_timerheap_add(&h, &t[1], 7), 0);
    CU_ASSERT_PTR_EQUAL(rs_timerheap_pop_expired(&h, 7), &t[1]);
}

static void test_equal_expiries_come_out_in_insertion_order(void)
{
    size_t i;
    struct rs_timer *t;

    CU_ASSERT_PTR_NOT_NULL_FATAL(many);
    for (i = 0; i < 1000; i++) {
        rs_timer_init(&many[i]);
        CU_ASSERT_EQUAL(rs_timerheap_add(&h, &many[i], 42), 0);
    }
    /* remove every third one; the rest keep their relative order */
    for (i = 0; i < 1000; i += 3)
        rs_timerheap_remove(&h, &many[i]);
    for (i = 0; i < 1000; i++) {
        if (i % 3 == 0)
            continue;
        t = rs_timerheap_pop_expired(&h, 42);
        CU_ASSERT_PTR_EQUAL(t, &many[i]);
    }
    CU_ASSERT_EQUAL(rs_timerheap_count(&h), 0);
}

static void test_hundred_thousand_random_timers(void)
{
    size_t i, removed = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(many);
    srand(12345);
    for (i = 0; i < MANY; i++) {
        rs_timer_init(&many[i]);
        CU_ASSERT_EQUAL(rs_timerheap_add(&h, &many[i], (uint64_t)(rand() % 5000)), 0);
    }
    CU_ASSERT_EQUAL(rs_timerheap_count(&h), MANY);
    for (i = 0; i < MANY; i += 7) {
        rs_timerheap_remove(&h, &many[i]);
        removed++;
    }
    /* half the range first: nothing later than 2500 may come out */
    i = drain_checked(2499);
    CU_ASSERT(rs_timerheap_peek(&h) == NULL || rs_timerheap_peek(&h)->expiry >= 2500);
    i += drain_checked(UINT64_MAX);
    CU_ASSERT_EQUAL(i, MANY - removed);
    for (i = 0; i < MANY; i++)
        CU_ASSERT_EQUAL_FATAL(many[i].idx, RS_TIMER_NONE);
}

static void test_free_leaves_entries_outside(void)
{
    struct rs_timer t;

    rs_timer_init(&t);
    CU_ASSERT_EQUAL(rs_timerheap_add(&h, &t, 1), 0);
    rs_timerheap_free(&h);
    CU_ASSERT_EQUAL(t.idx, RS_TIMER_NONE);
    CU_ASSERT_EQUAL(rs_timerheap_count(&h), 0);
}

static CU_TestInfo tests[] = {
    { "empty heap has nothing expired", test_empty_heap_has_nothing_expired },
    { "pops in expiry order", test_pops_in_expiry_order },
    { "add twice is refused", test_add_twice_is_refused },
    { "remove keeps order and is idempotent", test_remove_keeps_order_and_is_idempotent },
    { "equal expiries come out in insertion order",
      test_equal_expiries_come_out_in_insertion_order },
    { "100k random timers with removals", test_hundred_thousand_random_timers },
    { "free leaves entries outside", test_free_leaves_entries_outside },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "core/timerheap", NULL, NULL, setup, teardown, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
