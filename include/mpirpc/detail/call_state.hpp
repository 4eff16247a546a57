// SPDX-License-Identifier: MIT
// Internal: the caller's side of one call: the state its reply completes, and taking the value
// out of it.
#pragma once

#include <exception>
#include <type_traits>
#include <utility>

#include <mpirpc/detail/future_state.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>

namespace mpirpc::detail {

/// Receives the reply of one call. Implemented by call_state; called by the runtime.
class reply_sink {
public:
  virtual ~reply_sink() = default;
  /// Decodes the value from `in` and completes the future. Throws if the value cannot be
  /// decoded, leaving the future incomplete: the runtime then fails it through on_error with a
  /// serialization_error that names the call.
  virtual void on_reply(reader& in) = 0;
  virtual void on_error(std::exception_ptr error) noexcept = 0;
};

/// The state of one call's future: the reply completes it, with the value or the error.
template <class T> class call_state final : public future_state<T>, public reply_sink {
public:
  void on_reply(reader& in) override {
    if constexpr (std::is_void_v<T>) {
      if (in.remaining() != 0) in.fail("unexpected bytes in a void reply");
      this->try_set_value();
    } else {
      T value{};
      codec<T>::load(in, value);
      if (in.remaining() != 0) in.fail("unexpected bytes after the result");
      this->try_set_value(std::move(value));
    }
  }
  void on_error(std::exception_ptr error) noexcept override {
    this->try_set_exception(std::move(error));
  }
};

/// Waits for a call's future and takes its value out (nobody else reads that state).
template <class T> T take_result(future<T>& f) {
  f.wait();
  if constexpr (!std::is_void_v<T>) return T(std::move(state_of(f)->stored_value()));
}

} // namespace mpirpc::detail
