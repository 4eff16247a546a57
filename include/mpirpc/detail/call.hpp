// SPDX-License-Identifier: MIT
// Internal: the calls behind rpc_async, rpc_sync and rpc_ff: the function and its arguments
// checked at compile time, then one request built and sent.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mpirpc/detail/arguments.hpp>
#include <mpirpc/detail/callable_traits.hpp>
#include <mpirpc/detail/invoke.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/detail/request.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>
#include <mpirpc/worker.hpp>

namespace mpirpc::detail {

/// rpc_ff(to, fn, args...): checks, then sends one one-way request.
template <class Fn, class ArgTuple, std::size_t... I>
void call_one_way(const destination& to, Fn fn, ArgTuple&& args, std::index_sequence<I...> seq) {
  using traits = function_traits<Fn>;
  using params = typename traits::parameters;
  using Args = std::decay_t<ArgTuple>;
  // The result stays on the callee, so it need not travel; the parameters must.
  check_one_way_signature(fn);
  if constexpr (arguments_fit<params, Args>(seq)) {
    build_request<params>(
        [](writer&) {}, std::forward<ArgTuple>(args),
        [&](request_buffers& request) {
          send_one_way(to, call_target{reinterpret_cast<raw_function>(fn), nullptr, 0}, request);
          return request_outcome<int>{0, true}; // a one-way call that was not sent throws
        },
        seq);
  }
}

/// rpc_async(to, fn, args...) once a trailing timeout is split off: checks, then issues the
/// call.
template <class Fn, class ArgTuple, std::size_t... I>
auto call_async(const destination& to, Fn fn, ArgTuple&& args, double timeout_s,
                std::index_sequence<I...> seq) {
  using traits = function_traits<Fn>;
  using params = typename traits::parameters;
  using R = typename traits::result_type;
  using T = unwrap_future_t<R>;
  using Args = arguments_of<ArgTuple, std::index_sequence<I...>>;
  check_function_signature<R>();
  if constexpr (!arguments_fit<params, Args>(seq)) {
    return future<T>(); // unreachable: a static_assert above already failed
  } else {
    return issue_call<params, T>(
        to, call_target{reinterpret_cast<raw_function>(fn), nullptr, 0}, 0, [](writer&) {},
        std::forward<ArgTuple>(args), timeout_s, seq);
  }
}

/// rpc_async and rpc_sync: fn must be a function pointer; the arguments may end in a timeout.
template <class Fn, class... Args>
auto rpc_async_dispatch(const destination& to, Fn fn, Args&&... args) {
  static_assert(function_traits<Fn>::is_function,
                "mpirpc: the function argument must be a registered free function or static "
                "member function (a function pointer)");
  return split_timeout(
      [&](auto&& all, double t, auto seq) {
        return call_async(to, fn, std::forward<decltype(all)>(all), t, seq);
      },
      std::forward<Args>(args)...);
}

} // namespace mpirpc::detail
