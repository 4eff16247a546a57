// SPDX-License-Identifier: MIT
// Turning exceptions into wire errors and back. Internal.
#pragma once

#include <exception>
#include <string>

#include <mpirpc/errors.hpp>

#include "net/wire.hpp"

namespace mpirpc::detail {

/// Thrown on the callee when a request's arguments cannot be decoded.
class argument_error : public serialization_error {
public:
  using serialization_error::serialization_error;
};

/// Raised by the rref service on an owner that lacks the function a flagged request named (an
/// object that was never created): sent back as an unknown_function error reply with its own
/// text, so that the caller gets unknown_function_error; so does a handler that lets this
/// error escape (rref::to_here() on the owner rethrows it). A user's own
/// unknown_function_error that escapes a handler stays a remote_error, as every exception of a
/// handler does.
class unknown_rref_function_error : public unknown_function_error {
public:
  using unknown_function_error::unknown_function_error;
};

/// What an exception becomes on the wire.
struct exception_description {
  wire::error_code code = wire::error_code::remote_exception;
  std::string type;    ///< demangled dynamic type of the thrown object
  std::string message; ///< what(), or a rendering of a non-std::exception value
  std::string origin;  ///< worker it first came from, when known (a forwarded remote_error)
};

exception_description describe_exception(std::exception_ptr e) noexcept;

std::string demangle(const char* mangled);

} // namespace mpirpc::detail
