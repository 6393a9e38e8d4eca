# End-to-end tests: each entry runs one tests/e2e/*.py script (one case group) against its own
# ringstreamd on a free 127.0.0.1 port with a fresh data dir. Included from tests/CMakeLists.txt.
# Under RS_SANITIZE only the fast core bulk group is registered (label asan); the 100 MiB,
# plain-HTTP/2 and h2load groups run in the normal build only.

set(RS_E2E_PYTHON /usr/bin/python3)
set(RS_E2E_DIR ${CMAKE_CURRENT_LIST_DIR})

# rs_e2e_test(<name> <script> <timeout-seconds> <labels> [--group <group>]...)
function(rs_e2e_test name script timeout labels)
  add_test(NAME e2e/${name}
           COMMAND ${RS_E2E_PYTHON} ${RS_E2E_DIR}/${script} --server $<TARGET_FILE:ringstreamd> ${ARGN}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(e2e/${name} PROPERTIES LABELS "${labels}" TIMEOUT ${timeout}
                       ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
endfunction()

if(RS_SANITIZE)
  rs_e2e_test(bulk_core test_bulk.py 600 "e2e;asan" --group core)
else()
  rs_e2e_test(bulk_core test_bulk.py 300 e2e --group core)
  rs_e2e_test(bulk_concurrency test_bulk.py 300 e2e --group concurrency)
  rs_e2e_test(large_transfer test_large.py 600 e2e --group transfer)
  rs_e2e_test(large_http2 test_large.py 120 e2e --group http2)
  rs_e2e_test(h2load test_h2load.py 600 e2e)
endif()
