# SPDX-License-Identifier: MIT
# Helpers that register mpirpc's tests with CTest.

# Every launch line gets these: root is allowed (CI runs as root) and more ranks than cores.
set(MPIRPC_TEST_ENVIRONMENT OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    OMPI_MCA_rmaps_base_oversubscribe=1)
# Sanitized builds (MPIRPC_SANITIZE; see tests/sanitizers/README.md for why each setting).
if(MPIRPC_SANITIZE STREQUAL "address")
  list(APPEND MPIRPC_TEST_ENVIRONMENT ASAN_OPTIONS=detect_leaks=0
       UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
elseif(MPIRPC_SANITIZE STREQUAL "thread")
  list(APPEND MPIRPC_TEST_ENVIRONMENT
       TSAN_OPTIONS=suppressions=${PROJECT_SOURCE_DIR}/tests/sanitizers/tsan.supp:report_signal_unsafe=0:history_size=7)
endif()

# mpirpc_add_unit_test(NAME name SOURCES files...)
# A single-process Catch2 test, run without a launcher.
function(mpirpc_add_unit_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SOURCES" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 60)
  endif()
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE mpirpc_test_main_unit)
  add_test(NAME ${ARG_NAME} COMMAND ${ARG_NAME})
  set_tests_properties(${ARG_NAME} PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS unit
                       ENVIRONMENT "${MPIRPC_TEST_ENVIRONMENT}")
endfunction()

# mpirpc_add_mpi_test(NAME name SOURCES files... RANKS 2 3 4 [TIMEOUT s] [LABELS ...])
# One executable, registered once per rank count as name.npN and launched with FindMPI's
# MPIEXEC_* variables. Catch2's discovery is not used: it would run outside mpiexec.
function(mpirpc_add_mpi_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SOURCES;RANKS;LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  if(NOT ARG_RANKS)
    set(ARG_RANKS 2 3 4)
  endif()
  add_executable(${ARG_NAME} ${ARG_SOURCES})
  target_link_libraries(${ARG_NAME} PRIVATE mpirpc_test_main_mpi)
  foreach(np IN LISTS ARG_RANKS)
    set(test_name ${ARG_NAME}.np${np})
    add_test(NAME ${test_name}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} --oversubscribe
                     ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${ARG_NAME}> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${test_name} PROPERTIES
      TIMEOUT ${ARG_TIMEOUT}
      PROCESSORS ${np}
      LABELS "mpi;${ARG_LABELS}"
      ENVIRONMENT "${MPIRPC_TEST_ENVIRONMENT}")
  endforeach()
endfunction()

# mpirpc_add_compile_fail_test(NAME name SOURCE file REGEX message)
# Passes when compiling `file` fails with a diagnostic matching `message`.
function(mpirpc_add_compile_fail_test)
  cmake_parse_arguments(ARG "" "NAME;SOURCE;REGEX" "" ${ARGN})
  add_executable(${ARG_NAME} EXCLUDE_FROM_ALL ${ARG_SOURCE})
  target_link_libraries(${ARG_NAME} PRIVATE mpirpc::mpirpc)
  add_test(NAME compile_fail.${ARG_NAME}
           COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target ${ARG_NAME})
  set_tests_properties(compile_fail.${ARG_NAME} PROPERTIES
    PASS_REGULAR_EXPRESSION "${ARG_REGEX}" TIMEOUT 180 LABELS compile_fail)
endfunction()
