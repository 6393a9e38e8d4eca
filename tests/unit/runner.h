/* tests/unit/runner.h: one-line main() for every CUnit suite executable. */
#ifndef RS_TESTS_RUNNER_H
#define RS_TESTS_RUNNER_H
#include <CUnit/CUnit.h>

/* Registers |suites|, runs them verbosely (CUnit prints its Run Summary) and returns non-zero
 * when any assertion or suite failed. */
int rs_test_run(CU_SuiteInfo *suites);

#endif /* RS_TESTS_RUNNER_H */
