#include "tests/unit/runner.h"
#include <CUnit/Basic.h>
#include <stdio.h>

int rs_test_run(CU_SuiteInfo *suites)
{
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        fprintf(stderr, "CU_register_suites: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures() != 0 || CU_get_number_of_suites_failed() != 0 ||
             CU_get_number_of_tests_failed() != 0;
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
