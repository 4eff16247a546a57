// SPDX-License-Identifier: MIT
// Internal: a call's arguments, checked at compile time against the parameters of the function
// it calls (count and conversions), and the mpirpc::timeout that may trail them.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mpirpc {

struct timeout; // rpc.hpp

namespace detail {

/// True when the last of Args is an mpirpc::timeout.
template <class... Args> struct last_is_timeout : std::false_type {};
template <class A> struct last_is_timeout<A> : std::is_same<std::decay_t<A>, timeout> {};
template <class A, class B, class... Rest>
struct last_is_timeout<A, B, Rest...> : last_is_timeout<B, Rest...> {};

/// One argument against its parameter; its name and template arguments show in the error.
template <std::size_t I, class Arg, class P> constexpr bool check_argument() {
  static_assert(std::is_convertible_v<Arg, std::decay_t<P>>,
                "mpirpc: an argument cannot be converted to the remote function's parameter "
                "type (see the check_argument<index, argument type, parameter type> below)");
  return true;
}

/// The types of the first arguments of a forwarded argument tuple (a trailing timeout cut).
template <class Tuple, class Seq> struct arguments_of_impl;
template <class Tuple, std::size_t... I>
struct arguments_of_impl<Tuple, std::index_sequence<I...>> {
  using type = std::tuple<std::tuple_element_t<I, Tuple>...>;
};
template <class Tuple, class Seq>
using arguments_of = typename arguments_of_impl<std::decay_t<Tuple>, Seq>::type;

/// Checks at compile time that the arguments fit the parameters (count and conversions);
/// true when they do.
template <class Params, class ArgTuple, std::size_t... I>
constexpr bool arguments_fit(std::index_sequence<I...>) {
  static_assert(std::tuple_size_v<Params> == sizeof...(I),
                "mpirpc: wrong number of arguments for this remote function");
  if constexpr (std::tuple_size_v<Params> == sizeof...(I)) {
    static_assert(
        (check_argument<I, std::tuple_element_t<I, ArgTuple>, std::tuple_element_t<I, Params>>() &&
         ... && true));
    return (std::is_convertible_v<std::tuple_element_t<I, ArgTuple>,
                                  std::decay_t<std::tuple_element_t<I, Params>>> &&
            ... && true);
  } else {
    return false;
  }
}

/// Calls f(arguments as a tuple, timeout in seconds, index sequence of the arguments), with a
/// trailing mpirpc::timeout taken off the arguments (-1: none given).
template <class F, class... Args> decltype(auto) split_timeout(F&& f, Args&&... args) {
  auto all = std::forward_as_tuple(std::forward<Args>(args)...);
  if constexpr (last_is_timeout<Args...>::value) {
    const double t = std::get<sizeof...(Args) - 1>(all).seconds;
    return f(std::move(all), t, std::make_index_sequence<sizeof...(Args) - 1>{});
  } else {
    return f(std::move(all), -1.0, std::make_index_sequence<sizeof...(Args)>{});
  }
}

} // namespace detail
} // namespace mpirpc
