/* tests/unit/test_status.c: gRPC status names and the HTTP and errno mappings. */
#include "proto/grpc.h"
#include "tests/unit/runner.h"
#include <errno.h>

static void test_wire_values(void)
{
    CU_ASSERT_EQUAL(RS_GRPC_OK, 0);
    CU_ASSERT_EQUAL(RS_GRPC_CANCELLED, 1);
    CU_ASSERT_EQUAL(RS_GRPC_RESOURCE_EXHAUSTED, 8);
    CU_ASSERT_EQUAL(RS_GRPC_UNIMPLEMENTED, 12);
    CU_ASSERT_EQUAL(RS_GRPC_UNAUTHENTICATED, 16);
}

static void test_names(void)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    int i;

    for (i = 0; i < 17; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(rs_grpc_status_name(i));
        CU_ASSERT_STRING_EQUAL(rs_grpc_status_name(i), names[i]);
    }
}

static void test_name_out_of_range(void)
{
    static const int bad[] = { -1, 17, 18, 100, -2147483647 - 1, 2147483647 };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_STRING_EQUAL(rs_grpc_status_name(bad[i]), "UNKNOWN_STATUS");
}

static void test_from_http(void)
{
    static const struct {
        int http;
        enum rs_grpc_status st;
    } cases[] = {
        { 400, RS_GRPC_INTERNAL },
        { 401, RS_GRPC_UNAUTHENTICATED },
        { 403, RS_GRPC_PERMISSION_DENIED },
        { 404, RS_GRPC_UNIMPLEMENTED },
        { 429, RS_GRPC_UNAVAILABLE },
        { 502, RS_GRPC_UNAVAILABLE },
        { 503, RS_GRPC_UNAVAILABLE },
        { 504, RS_GRPC_UNAVAILABLE },
        { 200, RS_GRPC_UNKNOWN },
        { 301, RS_GRPC_UNKNOWN },
        { 402, RS_GRPC_UNKNOWN },
        { 405, RS_GRPC_UNKNOWN },
        { 500, RS_GRPC_UNKNOWN },
        { 501, RS_GRPC_UNKNOWN },
        { 505, RS_GRPC_UNKNOWN },
        { 0, RS_GRPC_UNKNOWN },
        { -1, RS_GRPC_UNKNOWN },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CU_ASSERT_EQUAL(rs_grpc_status_from_http(cases[i].http), cases[i].st);
}

static void test_from_errno(void)
{
    static const struct {
        int err;
        enum rs_grpc_status st;
    } cases[] = {
        { -ENOENT, RS_GRPC_NOT_FOUND },
        { -EEXIST, RS_GRPC_ALREADY_EXISTS },
        { -ENOMEM, RS_GRPC_RESOURCE_EXHAUSTED },
        { -ENOSPC, RS_GRPC_RESOURCE_EXHAUSTED },
        { -EDQUOT, RS_GRPC_RESOURCE_EXHAUSTED },
        { -EMSGSIZE, RS_GRPC_RESOURCE_EXHAUSTED },
        { -EINVAL, RS_GRPC_INVALID_ARGUMENT },
        { -ECANCELED, RS_GRPC_CANCELLED },
        { -ETIMEDOUT, RS_GRPC_DEADLINE_EXCEEDED },
        { -EACCES, RS_GRPC_PERMISSION_DENIED },
        { -EPERM, RS_GRPC_PERMISSION_DENIED },
        { -EIO, RS_GRPC_INTERNAL },
        { -EPROTO, RS_GRPC_INTERNAL },
        { -EBADF, RS_GRPC_INTERNAL },
        { ENOENT, RS_GRPC_INTERNAL }, /* positive: not a -errno */
        { 0, RS_GRPC_INTERNAL },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CU_ASSERT_EQUAL(rs_grpc_status_from_errno(cases[i].err), cases[i].st);
}

static CU_TestInfo tests[] = {
    { "enum values are the wire values", test_wire_values },
    { "every status has its name", test_names },
    { "out-of-range status is UNKNOWN_STATUS", test_name_out_of_range },
    { "HTTP status mapping", test_from_http },
    { "errno mapping", test_from_errno },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "proto/grpc status", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
