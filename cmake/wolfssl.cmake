# cmake/wolfssl.cmake: provides the imported target rs::wolfssl and links it into rs_core.
#
# RS_WOLFSSL=source (default): scripts/wolfssl/build.sh builds Debian's wolfssl source package
#   (same version and patches as libwolfssl35) with AES-NI, AVX1/AVX2 and SP x86_64 assembly, as
#   a static library in a cache prefix, at configure time. A second configure costs ~0.1 s (the
#   script's stamp). When the script fails, we fall back to the system library, loudly.
# RS_WOLFSSL=system: Debian's libwolfssl-dev (pkg-config wolfssl), built without AES-NI.
#
# wolfSSL 5.5.4 has no WOLFSSL_USE_OPTIONS_H: every file that uses wolfSSL must include
# <wolfssl/options.h> before any other wolfSSL header, or struct layouts disagree with the
# library. The cache lives under $RS_CACHE_DIR (default <repo>/build/_deps).
#
# Sets RS_WOLFSSL_FROM (source or system) and, for a source build, RS_WOLFSSL_PREFIX.
# Include this after rs_core is defined.

set(RS_WOLFSSL "source" CACHE STRING "wolfSSL: source (Debian source package with assembly) or system")
set_property(CACHE RS_WOLFSSL PROPERTY STRINGS source system)
if(NOT RS_WOLFSSL MATCHES "^(source|system)$")
  message(FATAL_ERROR "RS_WOLFSSL must be 'source' or 'system', not '${RS_WOLFSSL}'")
endif()

find_package(Threads REQUIRED)
set(RS_WOLFSSL_FROM "")
set(RS_WOLFSSL_PREFIX "")
set(_rs_wolfssl_script ${PROJECT_SOURCE_DIR}/scripts/wolfssl/build.sh)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_rs_wolfssl_script})

if(RS_WOLFSSL STREQUAL "source")
  set(_rs_prefix_file ${PROJECT_BINARY_DIR}/wolfssl-prefix.txt)
  file(REMOVE ${_rs_prefix_file})
  message(STATUS "wolfSSL: building Debian's source package (scripts/wolfssl/build.sh)")
  string(TIMESTAMP _rs_t0 "%s")
  execute_process(
    COMMAND ${_rs_wolfssl_script} --emit-prefix ${_rs_prefix_file}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    RESULT_VARIABLE _rs_rc)
  string(TIMESTAMP _rs_t1 "%s")
  math(EXPR _rs_secs "${_rs_t1} - ${_rs_t0}")
  if(_rs_rc EQUAL 0 AND EXISTS ${_rs_prefix_file})
    file(STRINGS ${_rs_prefix_file} _rs_prefix LIMIT_COUNT 1)
    if(EXISTS ${_rs_prefix}/lib/libwolfssl.a AND EXISTS ${_rs_prefix}/include/wolfssl/options.h)
      set(RS_WOLFSSL_PREFIX ${_rs_prefix})
      set(RS_WOLFSSL_FROM source)
    endif()
  endif()
  if(RS_WOLFSSL_FROM STREQUAL "source")
    message(STATUS "wolfSSL: ${RS_WOLFSSL_PREFIX} (script took ${_rs_secs}s)")
    add_library(rs::wolfssl STATIC IMPORTED GLOBAL)
    # Imported include directories are SYSTEM: wolfSSL's headers stay out of our -Werror.
    set_target_properties(rs::wolfssl PROPERTIES
      IMPORTED_LOCATION ${RS_WOLFSSL_PREFIX}/lib/libwolfssl.a
      INTERFACE_INCLUDE_DIRECTORIES ${RS_WOLFSSL_PREFIX}/include
      INTERFACE_COMPILE_DEFINITIONS RS_WOLFSSL_FROM_SOURCE=1
      INTERFACE_LINK_LIBRARIES "m;Threads::Threads")
    # Rebuilt or removed prefix (stamp changes) -> reconfigure, which reruns the script.
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
      ${RS_WOLFSSL_PREFIX}/.rs-wolfssl-stamp)
  else()
    # Lines start with a space so CMake prints them as they are, not as reflowed paragraphs.
    message(WARNING
      " ########################################################################\n"
      " ## wolfSSL from Debian's source package could NOT be built (exit ${_rs_rc}:\n"
      " ## see the script's message above). FALLING BACK to the system libwolfssl\n"
      " ## (libwolfssl-dev): no AES-NI/AVX2, much slower TLS record crypto.\n"
      " ## Silence this with -DRS_WOLFSSL=system, or fix the cause and reconfigure.\n"
      " ########################################################################")
  endif()
endif()

if(RS_WOLFSSL_FROM STREQUAL "")
  pkg_check_modules(WOLFSSL_SYS IMPORTED_TARGET GLOBAL wolfssl)
  if(NOT WOLFSSL_SYS_FOUND)
    message(FATAL_ERROR "wolfSSL: neither a source build nor the system library (pkg-config "
                        "wolfssl) is available. Install it: apt-get install libwolfssl-dev")
  endif()
  message(STATUS "wolfSSL: system libwolfssl ${WOLFSSL_SYS_VERSION}")
  add_library(rs::wolfssl INTERFACE IMPORTED GLOBAL)
  target_link_libraries(rs::wolfssl INTERFACE PkgConfig::WOLFSSL_SYS)
  set(RS_WOLFSSL_FROM system)
endif()

target_link_libraries(rs_core PUBLIC rs::wolfssl)
