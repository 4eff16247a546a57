# SPDX-License-Identifier: MIT
# Runs a program under mpiexec and compares its stdout, line by line, with an expected file.
#
#   cmake -DMPIEXEC=mpiexec -DNUMPROC_FLAG=-n -DNUMPROC=3 [-DPREFLAGS=a|b] -DPROGRAM=path
#         [-DPOSTFLAGS=a|b] -DEXPECTED=file [-DTIMEOUT=seconds] -P compare_output.cmake
#
# Launch line: MPIEXEC NUMPROC_FLAG NUMPROC PREFLAGS... PROGRAM POSTFLAGS... (PREFLAGS and
# POSTFLAGS are '|'-separated lists). Fails when the program fails, times out, or prints
# anything other than the expected lines (trailing carriage returns are ignored; a final
# newline is optional). stderr is shown on failure only.

cmake_minimum_required(VERSION 3.16)

foreach(var MPIEXEC NUMPROC_FLAG NUMPROC PROGRAM EXPECTED)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "compare_output.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED TIMEOUT)
  set(TIMEOUT 110)
endif()
if(NOT EXISTS "${EXPECTED}")
  message(FATAL_ERROR "compare_output.cmake: expected-output file ${EXPECTED} does not exist")
endif()

string(REPLACE "|" ";" preflags "${PREFLAGS}")
string(REPLACE "|" ";" postflags "${POSTFLAGS}")
list(REMOVE_ITEM preflags "")
list(REMOVE_ITEM postflags "")
set(command ${MPIEXEC} ${NUMPROC_FLAG} ${NUMPROC} ${preflags} ${PROGRAM} ${postflags})
list(JOIN command " " command_text)

execute_process(COMMAND ${command}
                OUTPUT_VARIABLE actual_text
                ERROR_VARIABLE error_text
                RESULT_VARIABLE result
                TIMEOUT ${TIMEOUT})
file(READ "${EXPECTED}" expected_text)

# Splits text into a list of lines. Characters that CMake lists treat specially (';' and
# brackets, which the tensor output is full of) are escaped first and restored by show_line.
function(split_lines text out)
  string(REPLACE "\r\n" "\n" text "${text}")
  string(REPLACE "@" "@a" text "${text}")
  string(REPLACE ";" "@s" text "${text}")
  string(REPLACE "[" "@l" text "${text}")
  string(REPLACE "]" "@r" text "${text}")
  string(REGEX REPLACE "\n$" "" text "${text}")
  if(text STREQUAL "")
    set(lines "")
  else()
    string(REPLACE "\n" ";" lines "${text}")
  endif()
  set(${out} "${lines}" PARENT_SCOPE)
endfunction()
function(show_line line out)
  string(REPLACE "@r" "]" line "${line}")
  string(REPLACE "@l" "[" line "${line}")
  string(REPLACE "@s" ";" line "${line}")
  string(REPLACE "@a" "@" line "${line}")
  set(${out} "${line}" PARENT_SCOPE)
endfunction()

# Details go out verbatim (message(NOTICE)); FATAL_ERROR would re-wrap them.
if(NOT result EQUAL 0)
  message(NOTICE "--- stdout:\n${actual_text}--- stderr:\n${error_text}---")
  message(FATAL_ERROR "FAILED: ${command_text} exited with: ${result}")
endif()

split_lines("${actual_text}" actual)
split_lines("${expected_text}" expected)
list(LENGTH actual actual_count)
list(LENGTH expected expected_count)
if(actual_count GREATER expected_count)
  set(count ${actual_count})
else()
  set(count ${expected_count})
endif()

set(report "")
set(mismatches 0)
if(count GREATER 0)
  math(EXPR last "${count} - 1")
  foreach(i RANGE ${last})
    math(EXPR line_number "${i} + 1")
    set(want "")
    set(got "")
    if(i LESS expected_count)
      list(GET expected ${i} want)
      show_line("${want}" want)
    endif()
    if(i LESS actual_count)
      list(GET actual ${i} got)
      show_line("${got}" got)
    endif()
    if(i GREATER_EQUAL expected_count)
      string(APPEND report "line ${line_number}: unexpected extra line\n  + ${got}\n")
      math(EXPR mismatches "${mismatches} + 1")
    elseif(i GREATER_EQUAL actual_count)
      string(APPEND report "line ${line_number}: missing line\n  - ${want}\n")
      math(EXPR mismatches "${mismatches} + 1")
    elseif(NOT want STREQUAL got)
      string(APPEND report "line ${line_number}: differs\n  - ${want}\n  + ${got}\n")
      math(EXPR mismatches "${mismatches} + 1")
    endif()
  endforeach()
endif()

if(mismatches GREATER 0)
  message(NOTICE "${mismatches} line(s) differ (- expected, + actual):\n${report}"
                 "--- stdout (${actual_count} lines):\n${actual_text}"
                 "--- stderr:\n${error_text}---")
  message(FATAL_ERROR "FAILED: the output of ${command_text} differs from ${EXPECTED} "
                      "in ${mismatches} line(s); see above")
endif()
message(STATUS "OK: ${actual_count} lines as expected in ${EXPECTED}")
