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
// Free functions and static member functions of any signature whose parameters and result are
// serializable (see serialization.hpp) qualify; parameters are taken by value or by const
// reference. A function whose result type is mpirpc::future<T> runs asynchronously: see
// rpc.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <mpirpc/detail/invoke.hpp>

namespace mpirpc {

/// Registers `fn` under `name`. Thread: call before init_rpc (static registration does).
/// Registering the same function twice under one name is harmless; two different functions
/// under one name make init_rpc fail with init_error (on every rank) naming it.
template <class R, class... P> void register_function(std::string_view name, R (*fn)(P...)) {
  detail::check_function_signature<R, P...>();
  detail::register_raw_function(name, reinterpret_cast<detail::raw_function>(fn),
                                &detail::invoke_handler<R, P...>);
}
template <class R, class... P>
void register_function(std::string_view name, R (*fn)(P...) noexcept) {
  register_function(name, reinterpret_cast<R (*)(P...)>(fn));
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

/// Registers a function under an explicit name (for overloads or renames).
#define MPIRPC_REGISTER_AS(name, fn)                                                               \
  static const ::mpirpc::detail::registrar MPIRPC_DETAIL_CAT(mpirpc_registrar_, __COUNTER__) {     \
    name, fn                                                                                       \
  }
