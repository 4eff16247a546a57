// SPDX-License-Identifier: MIT
// Internal: compile-time signature checks, the handler invoker that decodes arguments, calls a
// registered function and sends its reply, and the static registrar (the registry itself is in
// lib/: detail/library.hpp).
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <mpirpc/detail/bound_call.hpp>
#include <mpirpc/detail/callable_traits.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>

namespace mpirpc::detail {

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

/// What every registered function's result must be: a value (or void, or a future).
template <class R> struct check_result_shape {
  using value_type = unwrap_future_t<R>;
  static_assert(!std::is_reference_v<R> && !std::is_pointer_v<R>,
                "mpirpc: a remote function must return a value (or void, or mpirpc::future<T>), "
                "not a reference or pointer");
  static constexpr bool ok = true;
};

/// What a result must be to travel back to a caller (rpc_sync, rpc_async). A function whose
/// result does not travel can still be registered and run by remote(), which keeps the result
/// on the callee.
template <class R> struct check_result {
  using value_type = unwrap_future_t<R>;
  static_assert(check_result_shape<R>::ok);
  static_assert(std::is_void_v<value_type> || is_serializable_v<value_type>,
                "mpirpc: the result type of this remote function is not serializable; make it "
                "trivially copyable, or give it a Boost.Serialization serialize() function (see "
                "mpirpc/serialization.hpp), or keep the result where it is made with remote()");
  static_assert(std::is_void_v<value_type> || std::is_default_constructible_v<value_type>,
                "mpirpc: a remote function's result type must be default-constructible");
  static constexpr bool ok = true;
};

/// The checks of a call that brings the result back (rpc_sync, rpc_async).
template <class R, class... P> constexpr void check_function_signature() {
  static_assert(check_result<R>::ok && (check_parameter<P>::ok && ... && true));
}
/// The checks of a registration: parameters must travel, the result need not.
template <class R, class... P> constexpr void check_registration() {
  static_assert(check_result_shape<R>::ok && (check_parameter<P>::ok && ... && true));
}

/// The checks of a one-way call (rpc_ff): those of a registration, since the result stays on
/// the callee.
template <class R, class... P> constexpr void check_one_way_signature(R (*)(P...)) {
  check_registration<R, P...>();
}

/// Decodes the arguments, calls the function and replies (now, or from the continuation of
/// the future the function returns). Exceptions escape to the runtime, which replies with
/// the error.
template <class R, class... P>
void invoke_handler(raw_function raw, reader& in, reply_token& token) {
  auto fn = reinterpret_cast<R (*)(P...)>(raw);
  std::tuple<std::decay_t<P>...> args;
  decode_arguments(in, args);
  run_and_reply<R>([&]() -> R { return std::apply(fn, std::move(args)); }, token);
  // What the function did not take (a parameter by const reference) may receive the next
  // argument of its type.
  std::apply([](auto&... a) { (offer_spare(a), ...); }, args);
}

/// Static registration helper behind MPIRPC_REGISTER and MPIRPC_REGISTER_METHOD.
struct registrar {
  template <class R, class... P> registrar(std::string_view name, R (*fn)(P...)) {
    check_registration<R, P...>();
    register_raw_function(trim(name), reinterpret_cast<raw_function>(fn), &invoke_handler<R, P...>,
                          &bind_call<R (*)(P...), R, void, P...>);
  }
  template <class R, class... P>
  registrar(std::string_view name, R (*fn)(P...) noexcept)
      : registrar(name, reinterpret_cast<R (*)(P...)>(fn)) {}

  template <class M, std::enable_if_t<member_traits<M>::is_member, int> = 0>
  registrar(std::string_view name, M method) {
    register_method(trim(name), method,
                    static_cast<typename member_traits<M>::parameters*>(nullptr));
  }

private:
  static std::string_view trim(std::string_view name) {
    while (!name.empty() && (name.front() == '&' || name.front() == ' '))
      name.remove_prefix(1);
    return name;
  }
  template <class M, class... P>
  static void register_method(std::string_view name, M method, std::tuple<P...>*) {
    using traits = member_traits<M>;
    using R = typename traits::result_type;
    using C = typename traits::class_type;
    check_registration<R, P...>();
    register_raw_method(name, &method, sizeof method, &method_without_object,
                        &bind_call<M, R, C, P...>, typeid(C));
  }
};

} // namespace mpirpc::detail
