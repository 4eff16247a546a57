# SPDX-License-Identifier: MIT
# Fails if the library (LIBRARY) defines a symbol of the test seam (mpirpc::detail::testing) or
# of a testing accessor: test code lives in its own target (tests/support/seam).
execute_process(COMMAND ${NM} -C --defined-only ${LIBRARY} OUTPUT_VARIABLE symbols
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nm failed on ${LIBRARY}")
endif()
string(REGEX MATCHALL "[^\n]*(detail::testing::|testing_access)[^\n]*" found "${symbols}")
if(found)
  list(JOIN found "\n" lines)
  message(FATAL_ERROR "the library defines test-seam symbols:\n${lines}")
endif()
string(REGEX MATCH "mpirpc::detail::engine::stop" engine_symbol "${symbols}")
if(NOT engine_symbol)
  message(FATAL_ERROR "nm listed no engine symbols of ${LIBRARY}: the check would pass blindly")
endif()
message(STATUS "no test-seam symbols in ${LIBRARY}")
