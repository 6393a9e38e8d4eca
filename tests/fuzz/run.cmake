# tests/fuzz/run.cmake: one ctest run of a fuzz target (see CMakeLists.txt here).
#   cmake -DEXE=<binary> -DNAME=<name> -DCORPUS=<seed dir> -DWORK=<build dir> -DSECONDS=<n>
#         -P run.cmake
# New inputs go to <build>/fuzz-scratch/<name>/, emptied first; crashes to
# <build>/fuzz-artifacts/<name>/. Fails (non-zero exit) when the fuzzer does.
set(scratch ${WORK}/fuzz-scratch/${NAME})
set(artifacts ${WORK}/fuzz-artifacts/${NAME})
file(REMOVE_RECURSE ${scratch})
file(MAKE_DIRECTORY ${scratch} ${artifacts})
execute_process(
  COMMAND ${EXE} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          -print_final_stats=1 -artifact_prefix=${artifacts}/ ${scratch} ${CORPUS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NAME}: exit ${rc}; the input is in ${artifacts}/")
endif()
