// SPDX-License-Identifier: MIT
// Internal: the signatures of the callables that calls name: function pointers
// (function_traits) and member-function pointers (member_traits).
#pragma once

#include <cstddef>
#include <tuple>

namespace mpirpc::detail {

/// The signature of a function pointer.
template <class F> struct function_traits { static constexpr bool is_function = false; };
template <class R, class... P> struct function_traits<R (*)(P...)> {
  static constexpr bool is_function = true;
  using result_type = R;
  using parameters = std::tuple<P...>;
  static constexpr std::size_t arity = sizeof...(P);
};
template <class R, class... P>
struct function_traits<R (*)(P...) noexcept> : function_traits<R (*)(P...)> {};

/// The signature of a member-function pointer.
template <class M> struct member_traits { static constexpr bool is_member = false; };
template <class R, class C, class... P> struct member_traits<R (C::*)(P...)> {
  static constexpr bool is_member = true;
  using class_type = C;
  using result_type = R;
  using parameters = std::tuple<P...>;
  static constexpr std::size_t arity = sizeof...(P);
};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) const> : member_traits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) noexcept> : member_traits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct member_traits<R (C::*)(P...) const noexcept> : member_traits<R (C::*)(P...)> {};

} // namespace mpirpc::detail
