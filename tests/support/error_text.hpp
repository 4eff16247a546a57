// SPDX-License-Identifier: MIT
// A helper of the tests that assert an error's message (needs Catch2 included first).
#pragma once

#include <exception>
#include <string>

namespace mpirpc_test {
/// The what() of the `Error` that `call` throws; a test failure if it throws nothing or
/// something else.
template <class Error, class Call> std::string error_text_of(Call&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("not the expected error type: " << e.what());
  }
  FAIL("no exception");
  return {};
}
} // namespace mpirpc_test
