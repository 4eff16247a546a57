// SPDX-License-Identifier: MIT
// Internal: the function registry seam, compile-time signature checks and the handler
// invoker that decodes arguments, calls a registered function and sends its reply.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>

namespace mpirpc::detail {

using raw_function = void (*)();

/// Identifies the request a reply answers. Copyable; a continuation may keep it.
struct reply_token {
  int source = -1;
  std::uint64_t call_id = 0;
  std::uint64_t function_id = 0;
  void* owner = nullptr; ///< the runtime (engine) the request arrived at
  bool held = false;     ///< true once hold_reply() made the reply outlive the handler
};

using save_fn = void (*)(writer&, const void*);
using invoker_fn = void (*)(raw_function, reader&, reply_token&);

// Implemented in lib/.
void register_raw_function(std::string_view name, raw_function fn, invoker_fn invoke);
std::string registered_name_of(raw_function fn);
void send_reply_value(reply_token& token, save_fn save, const void* value) noexcept;
void send_reply_error(reply_token& token, std::exception_ptr error) noexcept;
/// Called by an async-execution handler: the reply will be sent later, from a continuation.
void hold_reply(reply_token& token) noexcept;
/// Rethrows the current exception as the error "the arguments could not be deserialized".
[[noreturn]] void rethrow_argument_error();

template <class T> void save_erased(writer& w, const void* value) {
  codec<T>::save(w, *static_cast<const T*>(value));
}

template <class P> struct check_parameter {
  using value_type = std::decay_t<P>;
  static_assert(!(std::is_lvalue_reference_v<P> && !std::is_const_v<std::remove_reference_t<P>>),
                "mpirpc: a remote function's parameters must be taken by value or by const "
                "reference; a non-const reference cannot write back to the caller");
  static_assert(!std::is_pointer_v<value_type>,
                "mpirpc: a remote function cannot take a raw pointer: its value means nothing "
                "on another rank; pass the pointed-to value");
  static_assert(is_serializable_v<value_type>,
                "mpirpc: a parameter type of this remote function is not serializable; make it "
                "trivially copyable, or give it a Boost.Serialization serialize() function (see "
                "mpirpc/serialization.hpp)");
  static_assert(std::is_default_constructible_v<value_type>,
                "mpirpc: a remote function's parameter types must be default-constructible "
                "(the callee builds each argument, then reads it from the message)");
  static constexpr bool ok = true;
};

template <class R> struct check_result {
  using value_type = unwrap_future_t<R>;
  static_assert(!std::is_reference_v<R> && !std::is_pointer_v<R>,
                "mpirpc: a remote function must return a value (or void, or mpirpc::future<T>), "
                "not a reference or pointer");
  static_assert(std::is_void_v<value_type> || is_serializable_v<value_type>,
                "mpirpc: the result type of this remote function is not serializable; make it "
                "trivially copyable, or give it a Boost.Serialization serialize() function (see "
                "mpirpc/serialization.hpp)");
  static_assert(std::is_void_v<value_type> || std::is_default_constructible_v<value_type>,
                "mpirpc: a remote function's result type must be default-constructible");
  static constexpr bool ok = true;
};

template <class R, class... P> constexpr void check_function_signature() {
  static_assert(check_result<R>::ok && (check_parameter<P>::ok && ... && true));
}

template <class T>
void reply_with_future_outcome(reply_token& token, const future<T>& done) noexcept {
  if (auto e = state_of(done)->error()) {
    send_reply_error(token, e);
  } else if constexpr (std::is_void_v<T>) {
    send_reply_value(token, nullptr, nullptr);
  } else {
    send_reply_value(token, &save_erased<T>, &state_of(done)->stored_value());
  }
}

/// The reply an async-execution handler owes. If the future it returned is destroyed without
/// ever completing, its callback (which owns this) is destroyed unrun: the destructor then
/// answers the caller with an error instead of leaving it waiting.
struct async_reply {
  explicit async_reply(const reply_token& t) : token(t) {}
  async_reply(const async_reply&) = delete;
  async_reply& operator=(const async_reply&) = delete;
  ~async_reply() {
    if (!sent) {
      send_reply_error(token, std::make_exception_ptr(future_error(
                                  "mpirpc: the future returned by this async-execution function "
                                  "was destroyed before it completed; keep it (or whatever "
                                  "completes it) alive until it is completed")));
    }
  }
  reply_token token;
  bool sent = false;
};

/// Decodes the arguments, calls the function and replies (now, or from the continuation of
/// the future the function returns). Exceptions escape to the runtime, which replies with
/// the error.
template <class R, class... P>
void invoke_handler(raw_function raw, reader& in, reply_token& token) {
  auto fn = reinterpret_cast<R (*)(P...)>(raw);
  std::tuple<std::decay_t<P>...> args;
  try {
    std::apply([&](auto&... a) { (codec<std::decay_t<decltype(a)>>::load(in, a), ...); }, args);
    if (in.remaining() != 0) {
      in.fail(std::to_string(in.remaining()) + " unexpected bytes after the arguments");
    }
  } catch (...) {
    rethrow_argument_error();
  }
  if constexpr (std::is_void_v<R>) {
    std::apply(fn, std::move(args));
    send_reply_value(token, nullptr, nullptr);
  } else if constexpr (is_future_v<R>) {
    R result = std::apply(fn, std::move(args));
    hold_reply(token);
    auto reply = std::make_shared<async_reply>(token);
    result.add_done_callback([reply](const R& done) {
      reply->sent = true;
      reply_with_future_outcome(reply->token, done);
    });
  } else {
    const R result = std::apply(fn, std::move(args));
    send_reply_value(token, &save_erased<R>, &result);
  }
}

/// Static registration helper behind MPIRPC_REGISTER.
struct registrar {
  template <class R, class... P> registrar(std::string_view name, R (*fn)(P...)) {
    check_function_signature<R, P...>();
    while (!name.empty() && (name.front() == '&' || name.front() == ' '))
      name.remove_prefix(1);
    register_raw_function(name, reinterpret_cast<raw_function>(fn), &invoke_handler<R, P...>);
  }
  template <class R, class... P>
  registrar(std::string_view name, R (*fn)(P...) noexcept)
      : registrar(name, reinterpret_cast<R (*)(P...)>(fn)) {}
};

} // namespace mpirpc::detail
