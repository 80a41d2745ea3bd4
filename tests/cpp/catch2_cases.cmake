# Catch2 v2 test cases as CTest tests: finding the TEST_CASE names in the
# sources, and the test spec that selects exactly one case on the command line.
#
# Included by CMakeLists.txt.  Run as a script (cmake -P), it checks a built
# runner against the names found at configure time (the CTest test
# "catch2: every TEST_CASE is registered"):
#   cmake -DRUNNER=<exe> -DNAMES_FILE=<file> -P catch2_cases.cmake

# Case names may hold ';', '[' and ']', which CMake's lists split on or
# group by: in lists they are kept encoded, with control characters in their
# place.  catch2_encode(<var>) / catch2_decode(<var>) convert in place.
string(ASCII 2 _catch2_semi)
string(ASCII 3 _catch2_open)
string(ASCII 4 _catch2_close)
macro(catch2_encode var)
  string(REPLACE ";" "${_catch2_semi}" ${var} "${${var}}")
  string(REPLACE "[" "${_catch2_open}" ${var} "${${var}}")
  string(REPLACE "]" "${_catch2_close}" ${var} "${${var}}")
endmacro()
macro(catch2_decode var)
  string(REPLACE "${_catch2_semi}" ";" ${var} "${${var}}")
  string(REPLACE "${_catch2_open}" "[" ${var} "${${var}}")
  string(REPLACE "${_catch2_close}" "]" ${var} "${${var}}")
endmacro()

# catch2_case_names(<out-var> <file>...): the names of the TEST_CASE,
# TEST_CASE_METHOD and SCENARIO cases in the files, as a list of encoded
# names, less the hidden ones ("[.]" tags, "[!hide]", names starting with
# "./") and those in //-commented lines.  The names must be plain string
# literals; escapes other than \\ \" \' \? stop the configure with an error.
function(catch2_case_names out)
  string(ASCII 1 _bs)  # stands in for an unescaped backslash
  set(names "")
  foreach(src IN LISTS ARGN)
    file(READ "${src}" text)
    string(REGEX REPLACE "\n[ \t]*//[^\n]*" "\n" text "\n${text}")
    set(lit "\"(([^\"\\\\]|\\\\.)*)\"")  # a string literal; group 1: its text
    set(re "(^|[^A-Za-z0-9_])(TEST_CASE|TEST_CASE_METHOD[ \t\r\n]*\\([^,\"]*,|SCENARIO)[ \t\r\n]*\\(?[ \t\r\n]*${lit}([ \t\r\n]*,[ \t\r\n]*${lit})?")
    while(TRUE)
      string(REGEX MATCH "${re}" m "${text}")
      if(m STREQUAL "")
        break()
      endif()
      set(macro "${CMAKE_MATCH_2}")
      set(name "${CMAKE_MATCH_3}")
      set(literal "${CMAKE_MATCH_3}")
      set(tags "${CMAKE_MATCH_6}")
      string(FIND "${text}" "${m}" at)
      string(LENGTH "${m}" len)
      math(EXPR at "${at} + ${len}")
      string(SUBSTRING "${text}" ${at} -1 text)
      if(tags MATCHES "\\[\\.|\\[!hide\\]" OR name MATCHES "^\\./")
        continue()  # hidden: Catch2 runs it only when asked by name
      endif()
      # Undo the C escapes.
      string(REPLACE "\\\\" "${_bs}" name "${name}")
      string(REPLACE "\\\"" "\"" name "${name}")
      string(REPLACE "\\'" "'" name "${name}")
      string(REPLACE "\\?" "?" name "${name}")
      if(name MATCHES "\\\\")
        message(FATAL_ERROR "${src}: the Catch2 case name \"${literal}\" has an escape "
                            "sequence this scan does not decode: spell it as plain characters")
      endif()
      string(REPLACE "${_bs}" "\\" name "${name}")
      if(macro STREQUAL "SCENARIO")
        set(name "Scenario: ${name}")
      endif()
      string(STRIP "${name}" name)  # Catch2 trims names too
      catch2_encode(name)
      list(APPEND names "${name}")
    endwhile()
  endforeach()
  set(${out} "${names}" PARENT_SCOPE)
endfunction()

# catch2_spec(<out-var> <name>): a Catch2 v2 command-line test spec that
# selects the case called <name> and no other.  Catch2 v2 (catch.hpp,
# TestSpecParser) reads ',' as "or" everywhere except right after a
# backslash (inside quotes a bare ',' makes the whole spec invalid, and an
# invalid spec runs nothing and exits 0, even with --warn NoTests), '[' as
# the start of a tag, a leading '~' or "exclude:" as negation, and '\' as
# "take the next character literally".  So the name is put in double
# quotes (which makes '[', ']', '~' and spaces plain), with '\', '"' and ','
# backslash-escaped.
# What no escape can turn off: '*' at either end is a wildcard, and a name
# starting with "exclude:" is a negation (the escapes are removed before that
# test); the latter is matched as "*xclude:...".  The registration check
# (below) verifies that every spec selects exactly its case.
function(catch2_spec out name)
  if(name MATCHES "^exclude:")
    string(SUBSTRING "${name}" 1 -1 name)
    set(name "*${name}")
  endif()
  string(REPLACE "\\" "\\\\" name "${name}")
  string(REPLACE "\"" "\\\"" name "${name}")
  string(REPLACE "," "\\," name "${name}")
  set(${out} "\"${name}\"" PARENT_SCOPE)
endfunction()

# Script mode: the registration check.
if(CMAKE_SCRIPT_MODE_FILE AND CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  if(NOT RUNNER OR NOT NAMES_FILE)
    message(FATAL_ERROR "usage: cmake -DRUNNER=<exe> -DNAMES_FILE=<file> -P ${CMAKE_CURRENT_LIST_FILE}")
  endif()
  # catch2_lines(<out> <text>): the non-empty, stripped lines, encoded, sorted.
  function(catch2_lines out text)
    catch2_encode(text)
    string(REPLACE "\n" ";" text "${text}")
    set(lines "")
    foreach(line IN LISTS text)
      string(STRIP "${line}" line)
      if(NOT line STREQUAL "")
        list(APPEND lines "${line}")
      endif()
    endforeach()
    list(SORT lines)
    set(${out} "${lines}" PARENT_SCOPE)
  endfunction()
  # catch2_list(<out> [<spec>]): the case names the runner lists (its exit
  # code is the number of cases listed, so it is not checked).
  function(catch2_list out)
    if(ARGC GREATER 1)  # (quoted: a spec may hold a ';')
      execute_process(COMMAND "${RUNNER}" --list-test-names-only "${ARGV1}"
                      OUTPUT_VARIABLE listed ERROR_VARIABLE err RESULT_VARIABLE rc)
    else()
      execute_process(COMMAND "${RUNNER}" --list-test-names-only
                      OUTPUT_VARIABLE listed ERROR_VARIABLE err RESULT_VARIABLE rc)
    endif()
    if(NOT rc MATCHES "^[0-9]+$")
      message(FATAL_ERROR "${RUNNER} --list-test-names-only failed: ${rc}\n${err}")
    endif()
    catch2_lines(names "${listed}")
    set(${out} "${names}" PARENT_SCOPE)
  endfunction()

  file(READ "${NAMES_FILE}" expected)
  catch2_lines(expected "${expected}")
  catch2_list(actual)
  set(problems "")
  if(NOT actual STREQUAL expected)
    set(missing "${actual}")
    set(extra "${expected}")
    if(expected)
      list(REMOVE_ITEM missing ${expected})
    endif()
    if(actual)
      list(REMOVE_ITEM extra ${actual})
    endif()
    foreach(l missing extra)
      if("${${l}}" STREQUAL "")
        set(${l} "(none)")
      endif()
      string(REPLACE ";" "\n    " ${l} "${${l}}")
    endforeach()
    string(APPEND problems
      "The runner's cases differ from the TEST_CASE names read at configure time "
      "(a case defined through another macro, or a name that is not one plain string literal?).\n"
      "  in the runner, not registered with CTest:\n    ${missing}\n"
      "  registered with CTest, not in the runner:\n    ${extra}\n")
  endif()
  foreach(name IN LISTS expected)
    set(real_name "${name}")
    catch2_decode(real_name)
    catch2_spec(spec "${real_name}")
    catch2_list(selected "${spec}")
    if(NOT selected STREQUAL name)
      string(APPEND problems "The spec ${spec} selects [${selected}] instead of [${name}]\n")
    endif()
  endforeach()
  if(problems)
    catch2_decode(problems)
    message(FATAL_ERROR "${problems}")
  endif()
  list(LENGTH expected n)
  message(STATUS "${n} cases, each registered with CTest and selected by its spec alone")
endif()
