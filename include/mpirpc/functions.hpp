// SPDX-License-Identifier: MIT
// Registering functions that other workers may call.
//
// A function is callable remotely once it is registered, one line per function, at namespace
// scope in any source file of the program:
//
//     int add(int a, int b) { return a + b; }
//     MPIRPC_REGISTER(add);                                // registered as "add"
//     MPIRPC_REGISTER(my_class::static_member);            // as "my_class::static_member"
//     MPIRPC_REGISTER_AS("add_f", static_cast<float (*)(float, float)>(add));  // overloads
//
// A function's identity on the wire is its registered name (hashed), the same on every rank
// by construction, whatever the static-initialisation order. init_rpc() compares the ranks'
// registries and warns about ranks whose registries differ; calling a function that the
// callee lacks fails with unknown_function_error naming it. Register before init_rpc():
// registering while a runtime runs throws init_error.
//
// Free functions and static member functions of any signature whose parameters are
// serializable (see serialization.hpp) qualify; parameters are taken by value or by const
// reference. rpc_sync and rpc_async also need a serializable result (checked where they are
// called); remote() does not, since the result stays on the callee (see rref.hpp).
// Member functions are called through an rref to the object (MPIRPC_REGISTER_METHOD), and
// constructors through remote() (MPIRPC_REGISTER_CONSTRUCTOR).
//
// Async execution (torch's @rpc.functions.async_execution). A function whose result type is
// mpirpc::future<T> runs asynchronously on the callee: the handler returns as soon as it has
// set up its work (typically a nested rpc_async and a then()), its server thread is free at
// once, and the reply is sent when the returned future completes, from that future's
// continuation; the caller's future holds T. The return type is what marks such a function, so
// C++ needs no decorator and no decorator-ordering rules: a static member function is simply
// a function, and there are no class methods. For code ported from torch, and to make the
// intent checked, mpirpc::async_execution(fn) and MPIRPC_REGISTER_ASYNC(fn) accept exactly
// the functions that return a future and reject others at compile time:
//
//     mpirpc::future<int> add_later(int to, int x, int y) {
//       return mpirpc::rpc_async(to, add, x, y).then([](mpirpc::future<int> f) { return f.value() +
//       1; });
//     }
//     MPIRPC_REGISTER_ASYNC(add_later);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <mpirpc/detail/invoke.hpp>
#include <mpirpc/detail/library.hpp>

namespace mpirpc {

/// Registers `fn` under `name`. Thread: call before init_rpc (static registration does).
/// Registering the same function twice under one name is harmless; two different functions
/// under one name make init_rpc fail with init_error (on every rank) naming it.
template <class R, class... P> void register_function(std::string_view name, R (*fn)(P...)) {
  detail::check_registration<R, P...>();
  detail::register_raw_function(name, reinterpret_cast<detail::raw_function>(fn),
                                &detail::invoke_handler<R, P...>,
                                &detail::bind_call<R (*)(P...), R, void, P...>);
}
template <class R, class... P>
void register_function(std::string_view name, R (*fn)(P...) noexcept) {
  register_function(name, reinterpret_cast<R (*)(P...)>(fn));
}

/// Marks `fn` as an async-execution function (see the header comment): returns `fn` itself,
/// after checking at compile time that it returns mpirpc::future<T>.
template <class R, class... P> constexpr auto async_execution(R (*fn)(P...)) {
  static_assert(detail::is_future_v<R>,
                "mpirpc::async_execution: the function must return mpirpc::future<T>; its "
                "reply is sent when that future completes");
  return fn;
}
template <class R, class... P> constexpr auto async_execution(R (*fn)(P...) noexcept) {
  static_assert(detail::is_future_v<R>,
                "mpirpc::async_execution: the function must return mpirpc::future<T>; its "
                "reply is sent when that future completes");
  return fn;
}

/// Constructs a T from `args`: the function that remote() runs to build an object on another
/// worker, torch's rpc.remote("worker1", SomeClass). Register each constructor signature used
/// remotely with MPIRPC_REGISTER_CONSTRUCTOR(T, P...), then
///
///     mpirpc::rref<counter> c = mpirpc::remote("worker1", mpirpc::construct<counter, int>, 5);
///
/// T must be move-constructible; it need not be serializable (it stays on its owner). An
/// aggregate without a matching constructor is brace-initialized: construct<point, int, int>.
template <class T, class... P> T construct(P... args) {
  if constexpr (std::is_constructible_v<T, P&&...>) {
    return T(std::move(args)...);
  } else {
    return T{std::move(args)...};
  }
}

/// The registered name of `fn`, or an empty string if it is not registered.
template <class F> std::string registered_name(F* fn) {
  return detail::registered_name_of(reinterpret_cast<detail::raw_function>(fn));
}

} // namespace mpirpc

#define MPIRPC_DETAIL_CAT2(a, b) a##b
#define MPIRPC_DETAIL_CAT(a, b) MPIRPC_DETAIL_CAT2(a, b)

/// Registers a free or static member function under its spelled name.
#define MPIRPC_REGISTER(fn) MPIRPC_REGISTER_AS(#fn, fn)

/// Registers an async-execution function (one returning mpirpc::future<T>) under its spelled
/// name; anything else fails to compile.
#define MPIRPC_REGISTER_ASYNC(fn) MPIRPC_REGISTER_AS(#fn, ::mpirpc::async_execution(fn))

/// Registers a member function, callable through an rref to an object of its class:
/// MPIRPC_REGISTER_METHOD(counter::add), then rref.rpc_sync(&counter::add, 5). Const and
/// non-const member functions qualify; one returning mpirpc::future<T> runs asynchronously.
#define MPIRPC_REGISTER_METHOD(method) MPIRPC_REGISTER_AS(#method, &method)

/// Registers the constructor T(P...) for remote(to, mpirpc::construct<T, P...>, args...):
/// MPIRPC_REGISTER_CONSTRUCTOR(counter) for the default constructor,
/// MPIRPC_REGISTER_CONSTRUCTOR(counter, int) for counter(int).
#define MPIRPC_REGISTER_CONSTRUCTOR(...)                                                           \
  static const ::mpirpc::detail::registrar MPIRPC_DETAIL_CAT(mpirpc_registrar_, __COUNTER__) {     \
    "mpirpc::construct<" #__VA_ARGS__ ">", &::mpirpc::construct<__VA_ARGS__>                       \
  }

/// Registers a function under an explicit name (for overloads or renames).
#define MPIRPC_REGISTER_AS(name, fn)                                                               \
  static const ::mpirpc::detail::registrar MPIRPC_DETAIL_CAT(mpirpc_registrar_, __COUNTER__) {     \
    name, fn                                                                                       \
  }
