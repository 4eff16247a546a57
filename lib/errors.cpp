// SPDX-License-Identifier: MIT
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <cxxabi.h>

#include <mpirpc/errors.hpp>
#include <mpirpc/future.hpp>

#include "errors_internal.hpp"

namespace mpirpc {

namespace {
std::string remote_what(const std::string& origin, const std::string& type,
                        const std::string& message) {
  std::string text = "mpirpc: remote function on " + origin + " raised " + type;
  if (!message.empty()) text += ": " + message;
  return text;
}
} // namespace

remote_error::remote_error(std::string origin_worker, std::string remote_type,
                           std::string remote_message)
    : error(remote_what(origin_worker, remote_type, remote_message)),
      _origin_worker(std::move(origin_worker)), _remote_type(std::move(remote_type)),
      _remote_message(std::move(remote_message)) {}

mpi_error::mpi_error(const std::string& call, int code, const std::string& text)
    : error("mpirpc: " + call + " failed with MPI error " + std::to_string(code) + ": " + text),
      _code(code) {}

namespace detail {

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  std::string name = status == 0 && out ? std::string(out.get()) : std::string(mangled);
  // Make the standard library's inline namespace disappear from type names.
  const std::string cxx11 = "std::__cxx11::";
  for (std::size_t at; (at = name.find(cxx11)) != std::string::npos;) {
    name.replace(at, cxx11.size(), "std::");
  }
  return name;
}

exception_description describe_exception(std::exception_ptr e) noexcept {
  exception_description d;
  try {
    const std::type_info* type = nullptr;
    try {
      std::rethrow_exception(e);
    } catch (...) {
      type = abi::__cxa_current_exception_type();
    }
    d.type = type ? demangle(type->name()) : "unknown";
    try {
      std::rethrow_exception(e);
    } catch (const remote_error& r) {
      // A nested call failed and the handler let it escape: keep where it came from.
      d.type = r.remote_type();
      d.message = r.remote_message();
      d.origin = r.origin_worker();
    } catch (const argument_error& a) {
      d.code = wire::error_code::serialization;
      d.message = a.what();
    } catch (const unknown_rref_function_error& u) {
      d.code = wire::error_code::unknown_function;
      d.message = u.what();
    } catch (const std::exception& x) {
      d.message = x.what();
    } catch (const char* s) {
      d.message = s ? s : "";
    } catch (const std::string& s) {
      d.message = s;
    } catch (...) {
      d.message = "(a value of type " + d.type + ", not derived from std::exception)";
    }
  } catch (...) {
    d.type = "unknown";
  }
  return d;
}

std::exception_ptr unserializable_result_error(const char* type_name) {
  return std::make_exception_ptr(serialization_error(
      "mpirpc: the result type " + demangle(type_name) +
      " is not serializable and cannot be sent back; keep such results on the callee with "
      "remote()"));
}

[[noreturn]] void rethrow_argument_error() {
  try {
    throw;
  } catch (const std::exception& e) {
    throw argument_error(e.what());
  } catch (...) {
    throw argument_error("an argument's deserialization raised a non-standard exception");
  }
}

void report_callback_exception(std::exception_ptr e) noexcept {
  const exception_description d = describe_exception(e);
  std::fprintf(stderr, "mpirpc: a future's done-callback raised %s: %s (ignored)\n", d.type.c_str(),
               d.message.c_str());
}

} // namespace detail
} // namespace mpirpc
