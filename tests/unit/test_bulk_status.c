/* tests/unit/test_bulk_status.c: the Bulk store's errno -> gRPC status table (status.h). */
#include "workers/bulk/status.h"
#include "tests/unit/runner.h"
#include <errno.h>

static const struct {
    int err;
    enum rs_grpc_status st;
} table[] = {
    { -ENOENT, RS_GRPC_NOT_FOUND },          { -EEXIST, RS_GRPC_ALREADY_EXISTS },
    { -ENOSPC, RS_GRPC_RESOURCE_EXHAUSTED }, { -EDQUOT, RS_GRPC_RESOURCE_EXHAUSTED },
    { -ENOMEM, RS_GRPC_RESOURCE_EXHAUSTED }, { -ENOBUFS, RS_GRPC_RESOURCE_EXHAUSTED },
    { -EMFILE, RS_GRPC_RESOURCE_EXHAUSTED }, { -ENFILE, RS_GRPC_RESOURCE_EXHAUSTED },
    { -EROFS, RS_GRPC_FAILED_PRECONDITION }, { -EACCES, RS_GRPC_FAILED_PRECONDITION },
    { -EPERM, RS_GRPC_FAILED_PRECONDITION }, { -EIO, RS_GRPC_UNAVAILABLE },
    { -EAGAIN, RS_GRPC_UNAVAILABLE },        { -EINTR, RS_GRPC_UNAVAILABLE },
    { -EBUSY, RS_GRPC_UNAVAILABLE },         { -ESTALE, RS_GRPC_UNAVAILABLE },
    { -ETIMEDOUT, RS_GRPC_UNAVAILABLE },     { -EBADMSG, RS_GRPC_DATA_LOSS },
    { -ECANCELED, RS_GRPC_CANCELLED },
};

static void test_documented_table(void)
{
    size_t i;

    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        enum rs_grpc_status got = rs_bulk_status_from_errno(table[i].err);

        if (got != table[i].st)
            printf("\n  errno %d: got %d, want %d", -table[i].err, (int)got, (int)table[i].st);
        CU_ASSERT_EQUAL(got, table[i].st);
    }
}

static void test_runtime_store_errors_are_not_internal(void)
{
    /* finding 10: a read-only or unwritable store, and EIO, used to answer INTERNAL */
    CU_ASSERT_NOT_EQUAL(rs_bulk_status_from_errno(-EROFS), RS_GRPC_INTERNAL);
    CU_ASSERT_NOT_EQUAL(rs_bulk_status_from_errno(-EACCES), RS_GRPC_INTERNAL);
    CU_ASSERT_NOT_EQUAL(rs_bulk_status_from_errno(-EACCES), RS_GRPC_PERMISSION_DENIED);
    CU_ASSERT_NOT_EQUAL(rs_bulk_status_from_errno(-EIO), RS_GRPC_INTERNAL);
}

static void test_unknown_and_bad_input_are_internal(void)
{
    CU_ASSERT_EQUAL(rs_bulk_status_from_errno(-EBADF), RS_GRPC_INTERNAL);
    CU_ASSERT_EQUAL(rs_bulk_status_from_errno(-EINVAL), RS_GRPC_INTERNAL);
    CU_ASSERT_EQUAL(rs_bulk_status_from_errno(ENOENT), RS_GRPC_INTERNAL); /* not a -errno */
    CU_ASSERT_EQUAL(rs_bulk_status_from_errno(0), RS_GRPC_INTERNAL);
    CU_ASSERT_EQUAL(rs_bulk_status_from_errno(-100000), RS_GRPC_INTERNAL);
}

static CU_TestInfo tests[] = {
    { "every errno of the documented table maps to its status", test_documented_table },
    { "a read-only, unwritable or failing store is not INTERNAL",
      test_runtime_store_errors_are_not_internal },
    { "unknown errno, 0 and positive values are INTERNAL",
      test_unknown_and_bad_input_are_internal },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/bulk status", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
