# tests/fuzz/conn.cmake: the whole-connection fuzz target (fuzz_conn.c). Meant to be included
# from tests/fuzz/CMakeLists.txt when RS_FUZZ is on; needs clang (libFuzzer).
#
# The workers are built once more against the fake ring (tests/unit/fake_ring.c) and with
# coverage instrumentation, so libFuzzer sees the connection and call code it drives.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(WARNING "fuzz_conn needs clang (libFuzzer); not built")
  return()
endif()
add_library(rs_workers_fuzz STATIC ${RS_WORKERS_SOURCES} ${PROJECT_SOURCE_DIR}/tests/unit/fake_ring.c)
rs_warnings(rs_workers_fuzz)
target_compile_options(rs_workers_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
target_link_libraries(rs_workers_fuzz PUBLIC rs_core rs_proto PkgConfig::NGHTTP2 Threads::Threads)

add_executable(fuzz_conn ${CMAKE_CURRENT_LIST_DIR}/fuzz_conn.c)
rs_warnings(fuzz_conn)
target_compile_options(fuzz_conn PRIVATE -fsanitize=fuzzer,address,undefined)
target_link_options(fuzz_conn PRIVATE -fsanitize=fuzzer,address,undefined)
target_link_libraries(fuzz_conn PRIVATE rs_workers_fuzz)
add_dependencies(rs_fuzz fuzz_conn)
# A short fuzzing run over the kept corpus, like every other target (tests/fuzz/run.cmake).
add_test(NAME fuzz/fuzz_conn
         COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:fuzz_conn> -DNAME=fuzz_conn
                 -DCORPUS=${CMAKE_CURRENT_LIST_DIR}/corpus/conn -DWORK=${CMAKE_BINARY_DIR}
                 -DSECONDS=${RS_FUZZ_SECONDS} -P ${CMAKE_CURRENT_LIST_DIR}/run.cmake)
math(EXPR rs_fuzz_conn_limit "${RS_FUZZ_SECONDS} + 120")
set_tests_properties(fuzz/fuzz_conn PROPERTIES LABELS fuzz TIMEOUT ${rs_fuzz_conn_limit})
