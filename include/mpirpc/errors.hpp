// SPDX-License-Identifier: MIT
// mpirpc: the exception tree. Every error the library raises derives from mpirpc::error.
#pragma once

#include <stdexcept>
#include <string>

namespace mpirpc {

/// Root of every exception mpirpc throws. Catch this to catch them all.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A function executed on a remote worker threw. Carries the worker where the exception was
/// first raised (for a nested call that failed and was not caught, the innermost one), the dynamic
/// type name of what was thrown (demangled) and its `what()` text.
class remote_error : public error {
public:
  remote_error(std::string origin_worker, std::string remote_type, std::string remote_message);
  /// Name of the worker where the exception was first raised.
  const std::string& origin_worker() const noexcept { return _origin_worker; }
  /// Demangled dynamic type of the thrown object, e.g. "std::out_of_range".
  const std::string& remote_type() const noexcept { return _remote_type; }
  /// The thrown object's what(); for a thrown value not derived from std::exception, its text
  /// (a C string or std::string) or a note naming its type.
  const std::string& remote_message() const noexcept { return _remote_message; }

private:
  std::string _origin_worker;
  std::string _remote_type;
  std::string _remote_message;
};

/// A call did not complete within its timeout.
class timeout_error : public error {
public:
  using error::error;
};

/// The callee has no function registered under the requested name, or the caller tried to
/// call a function that was never registered.
class unknown_function_error : public error {
public:
  using error::error;
};

/// A destination (name, rank or worker_info) that names no worker of the running session.
class unknown_worker_error : public error {
public:
  using error::error;
};

/// The runtime is not running or is stopping: a call before init_rpc or after shutdown, a call
/// abandoned or refused because this rank or the callee shut down, shutdown() called from a
/// handler or continuation, or a barrier() on one rank met a shutdown() on another.
class shutdown_error : public error {
public:
  using error::error;
};

/// Start-up failed: MPI cannot provide MPI_THREAD_MULTIPLE, duplicate worker names, a second
/// runtime in the same process, bad options.
class init_error : public error {
public:
  using error::error;
};

/// A value could not be serialized or deserialized (on either side of a call).
class serialization_error : public error {
public:
  using error::error;
};

/// Misuse of a future: value() before it is done, a second set_result, waiting on the thread
/// that must make progress (also barrier() there).
class future_error : public error {
public:
  using error::error;
};

/// rref::local_value() was called away from the reference's owner; the message names the
/// owner and the caller.
class not_owner_error : public error {
public:
  using error::error;
};

/// An MPI call failed. Carries the MPI error code and MPI_Error_string's text.
class mpi_error : public error {
public:
  mpi_error(const std::string& call, int code, const std::string& text);
  int code() const noexcept { return _code; }

private:
  int _code;
};

} // namespace mpirpc
