# End-to-end tests: each entry runs one tests/e2e/*.py script (one case group) against its own
# ringstreamd on a free 127.0.0.1 port with a fresh data dir. Included from tests/CMakeLists.txt.
# Under RS_SANITIZE only the fast groups are registered (label asan), and the TLS suite with
# 128 MiB objects; the 100 MiB, plain-HTTP/2 and h2load groups run in the normal build only.

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
  rs_e2e_test(bulk_get_crc test_get_crc.py 300 "e2e;asan" --group core)
  rs_e2e_test(limits test_limits.py 300 "e2e;asan")
  rs_e2e_test(conn_limits test_conn_limits.py 300 "e2e;asan")
  rs_e2e_test(service test_service.py 300 "e2e;asan;service") # issue 14
  rs_e2e_test(protocol test_protocol.py 600 "e2e;asan")
  rs_e2e_test(list_index_order test_list_index.py 300 "e2e;asan" --group order)
  rs_e2e_test(tls_quick test_tls.py 300 "e2e;asan;tls" --group quick)
  rs_e2e_test(reflection test_reflection.py 300 "e2e;asan;reflection") # ~2 s
  rs_e2e_test(upload test_upload.py 300 "e2e;asan;upload" --group core)
  # the rest of the TLS suite under ASan, with 128 MiB instead of 1 GiB objects
  rs_e2e_test(tls_full test_tls.py 600 "e2e;asan;tls" --group full --group large
              --large-bytes 134217728)
else()
  rs_e2e_test(limits test_limits.py 120 e2e)
  rs_e2e_test(conn_limits test_conn_limits.py 120 e2e)
  rs_e2e_test(service test_service.py 120 "e2e;service") # issue 14
  # cmake --install into a staging dir, systemd-analyze verify/security, cpack -G DEB
  add_test(NAME e2e/install
           COMMAND ${RS_E2E_PYTHON} ${RS_E2E_DIR}/test_install.py --build-dir ${PROJECT_BINARY_DIR}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(e2e/install PROPERTIES LABELS "e2e;service" TIMEOUT 300
                       ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
  rs_e2e_test(protocol test_protocol.py 300 e2e)
  # gRPC server reflection (v1, v1alpha): descriptors, dynamic calls, errors, pipelining
  rs_e2e_test(reflection test_reflection.py 120 "e2e;reflection")
  # the same through grpc-go's generated v1alpha client (built offline with Debian's Go, ~15 s)
  rs_e2e_test(reflection_go test_reflection_go.py 400 "e2e;reflection")
  rs_e2e_test(bulk_core test_bulk.py 300 e2e --group core)
  rs_e2e_test(bulk_concurrency test_bulk.py 300 e2e --group concurrency)
  # Resumable uploads, checked_data and if_match_sha256 on the write side (the grown contract).
  rs_e2e_test(upload test_upload.py 120 "e2e;upload" --group core)
  # Chunk.crc32c and GetRequest.if_match_sha256 (core and a 64 MiB object)
  rs_e2e_test(bulk_get_crc test_get_crc.py 300 e2e)
  rs_e2e_test(large_transfer test_large.py 600 e2e --group transfer)
  rs_e2e_test(large_http2 test_large.py 120 e2e --group http2)
  rs_e2e_test(h2load test_h2load.py 600 e2e)
  # List over the name index (issue 15).
  rs_e2e_test(list_index_order test_list_index.py 120 e2e --group order)
  rs_e2e_test(list_index_crash test_list_index.py 300 e2e --group crash)
  rs_e2e_test(list_index_memory test_list_index.py 300 e2e --group memory)
  rs_e2e_test(list_index_big test_list_index.py 600 e2e --group big)
  # 1,000,000 objects (issue 15): ~80 s and ~1.5 GB of RAM with the store on /dev/shm (the
  # test falls back to the temp dir, ~4 GB of disk, when /dev/shm lacks room).
  rs_e2e_test(list_index_huge test_list_index.py 900 e2e --group huge)
  # TLS (issue 12): grpcio, curl and openssl s_client against --tls-cert servers
  rs_e2e_test(tls test_tls.py 300 "e2e;tls" --group quick --group full)
  # 1 GiB Put and Get over TLS and mTLS, SIGHUP during a 1 GiB download
  rs_e2e_test(tls_large test_tls.py 900 "e2e;tls" --group large)
endif()

# --- gRPC interop (grpc.testing.TestService) and grpc.health.v1.Health: normal build only ----
# One ctest entry per interop case, each with its own ringstreamd: interop/<case> runs the
# python grpcio client (interop_client.py), interop-js/<case> the grpc-js one
# (grpcjs/interop.js through grpcjs/run_interop.py; node_modules from scripts/deps.sh).
# Both scripts reject an unknown case name, so these lists cannot drift silently.
if(NOT RS_SANITIZE)
  set(RS_INTEROP_CASES
      empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
      timeout_on_sleeping_server cancel_after_begin cancel_after_first_response
      status_code_and_message special_status_message custom_metadata unimplemented_method
      unimplemented_service client_compressed_unary client_compressed_streaming
      server_compressed_unary server_compressed_streaming)
  set(RS_INTEROP_JS_CASES
      empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
      status_code_and_message special_status_message custom_metadata unimplemented_method
      unimplemented_service timeout_on_sleeping_server cancel_after_begin
      cancel_after_first_response)
  foreach(c ${RS_INTEROP_CASES})
    add_test(NAME interop/${c}
             COMMAND ${RS_E2E_PYTHON} ${RS_E2E_DIR}/interop_client.py
                     --server $<TARGET_FILE:ringstreamd> --case ${c}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(interop/${c} PROPERTIES LABELS "e2e;interop" TIMEOUT 120
                         ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
  endforeach()
  foreach(c ${RS_INTEROP_JS_CASES})
    add_test(NAME interop-js/${c}
             COMMAND ${RS_E2E_PYTHON} ${RS_E2E_DIR}/grpcjs/run_interop.py
                     --server $<TARGET_FILE:ringstreamd> --case ${c}
             WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    set_tests_properties(interop-js/${c} PROPERTIES LABELS "e2e;interop;grpcjs" TIMEOUT 120
                         ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
  endforeach()
  rs_e2e_test(health test_health.py 120 "e2e;health")
endif()

# Bounded memory and flow-control backpressure (issue 3): perf/rsload drives the traffic
# (2 GiB Put/Get, slow reader, slow consumer, non-reading Echo, stalled next to active,
# max message size). Normal build only.
if(NOT RS_SANITIZE)
  rs_e2e_test(backpressure test_backpressure.py 300 e2e --group backpressure)
  set_property(TEST e2e/backpressure APPEND PROPERTY ENVIRONMENT
               "RS_RSLOAD=$<TARGET_FILE:rsload>")
endif()

# Per-server bounds (issue 15): each attack beside a bystander that must keep getting answers
# (timers, EMFILE, HalfDuplexCall, 1,000 stalled Gets, compressed output). Normal build only.
if(NOT RS_SANITIZE)
  rs_e2e_test(attacks test_attacks.py 300 "e2e;attacks")
  set_property(TEST e2e/attacks APPEND PROPERTY ENVIRONMENT "RS_RSLOAD=$<TARGET_FILE:rsload>")
endif()

# The per-worker memory budget (issue 15, core/budget.h): parked partial messages, a zero
# window pinning send queues, 10,000 idle connections, each beside a bystander. Normal build.
if(NOT RS_SANITIZE)
  rs_e2e_test(budget test_budget.py 240 "e2e;budget")
endif()

# Tests that need the bulk store's named fault points (core/fault.h; the points are listed in
# workers/bulk/storeop.h): registered only in a build configured with RS_FAULT_INJECTION=ON,
# which scripts/test does for build-asan (build/ stays without). Storage faults: findings 4
# and 10 of issue 16; the slow-consumer backpressure case uses put.write=delay.
if(RS_FAULT_INJECTION)
  rs_e2e_test(storage_faults test_storage_faults.py 600 "e2e;faults")
  rs_e2e_test(upload_faults test_upload.py 300 "e2e;faults;upload" --group faults)
  rs_e2e_test(backpressure_slow_consumer test_backpressure.py 300 "e2e;faults"
              --group slow_consumer)
  set_property(TEST e2e/backpressure_slow_consumer APPEND PROPERTY ENVIRONMENT
               "RS_RSLOAD=$<TARGET_FILE:rsload>")
endif()

# Crash safety (kill -9 during Puts, overwrites and Deletes; a Put onto a full file system):
# release build only (fast enough to run many rounds).
if(NOT RS_SANITIZE)
  rs_e2e_test(crash test_crash.py 180 "e2e;crash")
endif()

# The ringstream command-line client (client/) against a real server; RS_CLIENT names the
# binary. Under RS_SANITIZE only the fast groups (core: round trips, ls/stat/rm, exit codes;
# integrity: a fake server lying about crc32c/SHA-256; pget: resumed get --streams, 64 MiB).
if(RS_SANITIZE)
  rs_e2e_test(client test_client.py 300 "e2e;asan;client" --group core --group integrity
              --group pget)
else()
  rs_e2e_test(client test_client.py 600 "e2e;client")
endif()
set_property(TEST e2e/client APPEND PROPERTY ENVIRONMENT "RS_CLIENT=$<TARGET_FILE:ringstream>")
