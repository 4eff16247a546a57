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
