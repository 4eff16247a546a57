// SPDX-License-Identifier: MIT
// Calling registered functions on other workers: rpc_sync and rpc_async, as in torch.
//
//     int r = mpirpc::rpc_sync("worker1", add, 1, 2);                 // blocks for the result
//     mpirpc::future<int> f = mpirpc::rpc_async(2, add, 1, 2);        // returns at once
//     auto g = mpirpc::rpc_async(info, add, 1, 2, mpirpc::timeout(5s)); // per-call timeout
//
// `to` is a worker name, a rank or a worker_info; `fn` a registered free or static member
// function; `args` are checked against fn's parameters at compile time (count, convertibility,
// serializability) and converted to the parameter types before they are sent.
//
// Threads: any thread may call, including handlers and continuations. rpc_async sends before
// it returns and never waits for the callee (large buffers excepted: a buffer sent out of line,
// see serialization.hpp, is streamed from the caller's storage before rpc_async returns).
// rpc_sync waits like future::wait().
//
// Errors: unknown_worker_error / unknown_function_error (function not registered here),
// shutdown_error (runtime not running), serialization_error (an argument could not be
// serialized, or the message is too large) and mpi_error are thrown at the call site. Everything
// that happens after the request left arrives through the future: remote_error (the remote function
// threw; carries the worker, type name and message), unknown_function_error (the callee lacks the
// function), serialization_error, timeout_error, shutdown_error.
//
// A function whose result type is mpirpc::future<T> is executed asynchronously on the callee:
// its reply is sent when the returned future completes, and the caller's future holds T.
#pragma once

#include <chrono>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mpirpc/detail/invoke.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>
#include <mpirpc/worker.hpp>

namespace mpirpc {

/// A per-call timeout, passed as the last argument of rpc_sync / rpc_async. Zero means no
/// timeout; a negative value, like no timeout argument at all, means the runtime's default
/// (options::rpc_timeout).
struct timeout {
  explicit timeout(std::chrono::duration<double> d) : seconds(d.count()) {}
  double seconds;
};

namespace detail {

template <class F> struct function_traits { static constexpr bool is_function = false; };
template <class R, class... P> struct function_traits<R (*)(P...)> {
  static constexpr bool is_function = true;
  using result_type = R;
  using parameters = std::tuple<P...>;
  static constexpr std::size_t arity = sizeof...(P);
};
template <class R, class... P>
struct function_traits<R (*)(P...) noexcept> : function_traits<R (*)(P...)> {};

/// Receives the reply of one call. Implemented by call_state; called by the runtime.
class reply_sink {
public:
  virtual ~reply_sink() = default;
  /// Decodes the value from `in` and completes the future (or fails it on a decode error).
  virtual void on_reply(reader& in) noexcept = 0;
  virtual void on_error(std::exception_ptr error) noexcept = 0;
};

template <class T> class call_state final : public future_state<T>, public reply_sink {
public:
  void on_reply(reader& in) noexcept override {
    try {
      if constexpr (std::is_void_v<T>) {
        if (in.remaining() != 0) in.fail("unexpected bytes in a void reply");
        this->try_set_value();
      } else {
        T value{};
        codec<T>::load(in, value);
        if (in.remaining() != 0) in.fail("unexpected bytes after the result");
        this->try_set_value(std::move(value));
      }
    } catch (...) {
      this->try_set_exception(std::current_exception());
    }
  }
  void on_error(std::exception_ptr error) noexcept override {
    this->try_set_exception(std::move(error));
  }
};

/// Thread-local scratch for building one request; implemented in lib/.
struct request_buffers {
  std::vector<char> payload;
  std::vector<segment> segments;
};
request_buffers& begin_request();
/// Resolves the destination and function, then sends. Throws at the call site for an unknown
/// worker or function or a stopped runtime. `timeout_s` < 0 means the runtime's default.
void send_request(const destination& to, raw_function fn, request_buffers& request,
                  std::shared_ptr<reply_sink> sink, double timeout_s);

template <class... Args> struct last_is_timeout : std::false_type {};
template <class A> struct last_is_timeout<A> : std::is_same<std::decay_t<A>, timeout> {};
template <class A, class B, class... Rest>
struct last_is_timeout<A, B, Rest...> : last_is_timeout<B, Rest...> {};

template <std::size_t I, class Arg, class P> constexpr bool check_argument() {
  static_assert(std::is_convertible_v<Arg, std::decay_t<P>>,
                "mpirpc: an argument cannot be converted to the remote function's parameter "
                "type (see the check_argument<index, argument type, parameter type> below)");
  return true;
}

template <class P, class Arg> void save_argument(writer& w, Arg&& arg) {
  using V = std::decay_t<P>;
  if constexpr (std::is_same_v<std::decay_t<Arg>, V>) {
    codec<V>::save(w, arg);
  } else {
    const V converted(std::forward<Arg>(arg));
    // `converted` dies before the message is sent: nothing of it may travel out of line.
    const writer::inline_only guard(w);
    codec<V>::save(w, converted);
  }
}

template <class Fn, class ArgTuple, std::size_t... I>
auto call_async(const destination& to, Fn fn, ArgTuple&& args, double timeout_s,
                std::index_sequence<I...>) {
  using traits = function_traits<Fn>;
  using params = typename traits::parameters;
  using R = typename traits::result_type;
  using T = unwrap_future_t<R>;
  static_assert(traits::arity == sizeof...(I),
                "mpirpc: wrong number of arguments for this remote function");
  if constexpr (traits::arity == sizeof...(I)) {
    static_assert((check_argument<I, std::tuple_element_t<I, std::decay_t<ArgTuple>>,
                                  std::tuple_element_t<I, params>>() &&
                   ... && true));
    constexpr bool convertible =
        (std::is_convertible_v<std::tuple_element_t<I, std::decay_t<ArgTuple>>,
                               std::decay_t<std::tuple_element_t<I, params>>> &&
         ... && true);
    check_function_signature<R>();
    if constexpr (!convertible) {
      return future<T>(); // unreachable: the static_assert above already failed
    } else {
      request_buffers& request = begin_request();
      writer w(request.payload, &request.segments);
      (save_argument<std::tuple_element_t<I, params>>(
           w, std::forward<std::tuple_element_t<I, std::decay_t<ArgTuple>>>(std::get<I>(args))),
       ...);
      auto state = std::make_shared<call_state<T>>();
      send_request(to, reinterpret_cast<raw_function>(fn), request, state, timeout_s);
      return make_future_from_state<T>(std::shared_ptr<future_state<T>>(std::move(state)));
    }
  } else {
    return future<T>();
  }
}

template <class Fn, class... Args>
auto rpc_async_dispatch(const destination& to, Fn fn, Args&&... args) {
  static_assert(function_traits<Fn>::is_function,
                "mpirpc: the function argument must be a registered free function or static "
                "member function (a function pointer)");
  auto all = std::forward_as_tuple(std::forward<Args>(args)...);
  if constexpr (last_is_timeout<Args...>::value) {
    const double t = std::get<sizeof...(Args) - 1>(all).seconds;
    return call_async(to, fn, std::move(all), t, std::make_index_sequence<sizeof...(Args) - 1>{});
  } else {
    return call_async(to, fn, std::move(all), -1.0, std::make_index_sequence<sizeof...(Args)>{});
  }
}

} // namespace detail

/// Calls fn(args...) on `to` and returns a future of its result at once.
/// Precondition: the runtime is running (else shutdown_error); fn is registered.
template <class Fn, class... Args> auto rpc_async(const destination& to, Fn fn, Args&&... args) {
  return detail::rpc_async_dispatch(to, fn, std::forward<Args>(args)...);
}

/// Calls fn(args...) on `to` and waits for the result; rethrows the call's error.
template <class Fn, class... Args> auto rpc_sync(const destination& to, Fn fn, Args&&... args) {
  auto f = detail::rpc_async_dispatch(to, fn, std::forward<Args>(args)...);
  using T = typename decltype(f)::value_type;
  f.wait();
  if constexpr (std::is_void_v<T>) {
    return;
  } else {
    // No other handle reads this state any more (the runtime's own reference only completes
    // it): take the value instead of copying it.
    return T(std::move(detail::state_of(f)->stored_value()));
  }
}

} // namespace mpirpc
