// SPDX-License-Identifier: MIT
// Calling registered functions on other workers: rpc_sync and rpc_async, as in torch, and the
// one-way rpc_ff.
//
//     int r = mpirpc::rpc_sync("worker1", add, 1, 2);                 // blocks for the result
//     mpirpc::future<int> f = mpirpc::rpc_async(2, add, 1, 2);        // returns at once
//     mpirpc::rpc_ff("worker1", record, 42);                          // no reply at all
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
#include <cstdint>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include <mpirpc/detail/invoke.hpp>
#include <mpirpc/detail/library.hpp>
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
  /// Decodes the value from `in` and completes the future. Throws if the value cannot be
  /// decoded, leaving the future incomplete: the runtime then fails it through on_error with a
  /// serialization_error that names the call.
  virtual void on_reply(reader& in) = 0;
  virtual void on_error(std::exception_ptr error) noexcept = 0;
};

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

/// Thread-local scratch for building one request (begin_request, detail/library.hpp).
struct request_buffers {
  std::vector<char> payload;
  std::vector<segment> segments;
};

/// What a request calls: a registered function, or a registered member function (`member`
/// points at its member-function pointer of `member_size` bytes).
struct call_target {
  raw_function fn = nullptr;
  const void* member = nullptr;
  std::size_t member_size = 0;
};

/// Request flags (see docs/wire.md): before the arguments, the payload starts with the id and
/// weight of the object the call creates (creates_rref), then with the id of the object the
/// call runs on and the weight the call carries (on_rref).
inline constexpr std::uint16_t on_rref = 1;
inline constexpr std::uint16_t creates_rref = 2;

/// send_call for a free function, without flags.
inline void send_request(const destination& to, raw_function fn, request_buffers& request,
                         std::shared_ptr<reply_sink> sink, double timeout_s) {
  send_call(to, call_target{fn, nullptr, 0}, 0, request, std::move(sink), timeout_s);
}

/// Thrown while a message is built when an rref in it (an argument, a result, or the rref a
/// call goes through) has no reference weight left to give (rref.hpp): the message is built
/// again once `replenished` completes.
struct rref_weight_exhausted : serialization_error {
  explicit rref_weight_exhausted(future<void> f)
      : serialization_error("mpirpc: an rref has no reference weight left to give away; its "
                            "owner has been asked for more"),
        replenished(std::move(f)) {}
  future<void> replenished;
};

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

template <class P, class Arg> void save_argument(writer& w, Arg&& arg) {
  using V = std::decay_t<P>;
  if constexpr (std::is_same_v<std::decay_t<Arg>, V>) {
    codec<V>::save(w, arg);
  } else {
    // Converted from a const reference where possible: a request may be built twice (see
    // rref_weight_exhausted), so the argument must not be moved from.
    const V converted = [&]() -> V {
      if constexpr (std::is_convertible_v<const std::decay_t<Arg>&, V>) {
        return V(static_cast<const std::decay_t<Arg>&>(arg));
      } else {
        return V(std::forward<Arg>(arg));
      }
    }();
    // `converted` dies before the message is sent: nothing of it may travel out of line.
    const writer::inline_only guard(w);
    codec<V>::save(w, converted);
  }
}

/// Once a request has left (its out-of-line buffers included), an argument passed as an rvalue
/// of exactly the parameter's type, when that is a large vector of trivially copyable elements,
/// may be kept for reuse: the reply, or the next large vector of its type that this process
/// receives, goes into its storage without being zero-filled first (detail/spare_buffers.hpp).
/// The argument is then left empty. Lvalues and converted arguments are never touched.
template <class P, class Arg, class Stored> void offer_argument(Stored& arg) noexcept {
  using V = std::decay_t<P>;
  if constexpr (std::is_rvalue_reference_v<Arg> && !std::is_const_v<std::remove_reference_t<Arg>> &&
                std::is_same_v<std::decay_t<Arg>, V>) {
    offer_spare(arg);
  } else {
    (void)arg;
  }
}

/// What a request's `send` step returns to build_request: its result, and whether the
/// request left (false: it failed before it was sent, its error already in the result).
template <class R> struct request_outcome {
  R result;
  bool left = true;
};

/// Builds one request and passes it to `send(request)`, which returns a request_outcome whose
/// result this returns: `prefix(w)` writes what comes before the arguments (see the flags).
/// Builds it again when an rref in it had no weight left to give. Once the request has left,
/// offers its rvalue arguments for reuse (offer_argument). Precondition:
/// arguments_fit<Params, ArgTuple>.
template <class Params, class ArgTuple, class Prefix, class Send, std::size_t... I>
auto build_request(Prefix&& prefix, ArgTuple&& args, Send&& send, std::index_sequence<I...>) {
  for (;;) {
    try {
      request_buffers& request = begin_request();
      writer w(request.payload, &request.segments);
      prefix(w);
      (save_argument<std::tuple_element_t<I, Params>>(
           w, std::forward<std::tuple_element_t<I, std::decay_t<ArgTuple>>>(std::get<I>(args))),
       ...);
      auto outcome = send(request);
      if (outcome.left) {
        (offer_argument<std::tuple_element_t<I, Params>,
                        std::tuple_element_t<I, std::decay_t<ArgTuple>>>(std::get<I>(args)),
         ...);
      }
      return std::move(outcome.result);
    } catch (rref_weight_exhausted& e) {
      abandon_request();
      e.replenished.wait(); // then build the request again
    } catch (...) {
      abandon_request();
      throw;
    }
  }
}

/// Builds and sends one request whose reply holds a Result.
template <class Params, class Result, class ArgTuple, class Prefix, std::size_t... I>
future<Result> issue_call(const destination& to, const call_target& target, std::uint16_t flags,
                          Prefix&& prefix, ArgTuple&& args, double timeout_s,
                          std::index_sequence<I...> seq) {
  return build_request<Params>(
      std::forward<Prefix>(prefix), std::forward<ArgTuple>(args),
      [&](request_buffers& request) {
        auto state = std::make_shared<call_state<Result>>();
        const bool left = send_call(to, target, flags, request, state, timeout_s);
        return request_outcome<future<Result>>{
            make_future_from_state<Result>(std::shared_ptr<future_state<Result>>(std::move(state))),
            left};
      },
      seq);
}

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

} // namespace detail

/// Calls fn(args...) on `to` and returns a future of its result at once.
/// Precondition: the runtime is running (else shutdown_error); fn is registered.
/// Arguments are serialized before this returns; large std::vector/std::string buffers are sent
/// straight from their storage, which MPI has finished reading when this returns. A large
/// std::vector of trivially copyable elements passed as an rvalue of exactly the parameter's
/// type (rpc_async(to, f, std::move(v))) may then be kept, within
/// options::spare_buffer_bytes, so that a reply or another argument of that type is received
/// into it without being zero-filled first; v is left empty when it is kept and untouched when
/// it is not (its size, the budget and what is kept already decide; a call that fails before
/// it is sent keeps nothing). Do not use v after std::move(v) either way. Also rpc_sync,
/// rpc_ff, remote and the calls of an rref.
template <class Fn, class... Args> auto rpc_async(const destination& to, Fn fn, Args&&... args) {
  return detail::rpc_async_dispatch(to, fn, std::forward<Args>(args)...);
}

/// Calls fn(args...) on `to` without waiting and without a reply (fire-and-forget, as UPC++'s
/// rpc_ff; torch has no such call). Returns once the request is handed to MPI or added to a
/// batch of this rank's messages to `to` (lib/batching.cpp). A batch leaves when it is full
/// (about 4 KB), when any thread of this rank waits for a future, before a message to `to`
/// that is not batched, or else from the polling thread, which looks at least every 200 us
/// while a batch is being built (sooner while it spins; later only while it runs a handler).
///
/// Order: the one-way calls from one sender to one destination run one after another, in the
/// order they were sent, and a call of any kind made after them starts after they have run;
/// a one-way handler that blocks waiting for a future lets the ones behind it go on (other
/// blocking holds them back, and with them every request from that sender).
/// Failures: what can be checked here throws here, as for rpc_async (unknown_worker_error,
/// unknown_function_error, shutdown_error, serialization_error; mpi_error when the request is
/// sent at once). On the callee, a function that throws, arguments it cannot decode, a
/// function it has not registered, or a stop before the call ran: each is logged on the
/// callee's stderr and counted in its stats().one_way_failed; nothing comes back. A batch that
/// MPI fails to send later is logged on the sender.
/// Shutdown: a graceful shutdown waits until every one-way call sent has run, including the
/// asynchronous part of a function that returns a future (a future that never completes holds
/// it up: use shutdown(true, timeout)). A non-graceful one drops what was not yet sent (the
/// sender logs how many) or run (the callee logs each); calls still in transit are lost.
/// There is no flow control for one-way calls and no timeout argument (nothing waits).
template <class Fn, class... Args> void rpc_ff(const destination& to, Fn fn, Args&&... args) {
  static_assert(detail::function_traits<Fn>::is_function,
                "mpirpc: the function argument must be a registered free function or static "
                "member function (a function pointer)");
  static_assert(!detail::last_is_timeout<Args...>::value,
                "mpirpc: rpc_ff takes no timeout: a one-way call has no reply to wait for");
  detail::call_one_way(to, fn, std::forward_as_tuple(std::forward<Args>(args)...),
                       std::index_sequence_for<Args...>{});
}

/// Calls fn(args...) on `to` and waits for the result; rethrows the call's error.
template <class Fn, class... Args> auto rpc_sync(const destination& to, Fn fn, Args&&... args) {
  auto f = detail::rpc_async_dispatch(to, fn, std::forward<Args>(args)...);
  // No other handle reads this state any more (the runtime's own reference only completes
  // it): the value is taken instead of copied.
  return detail::take_result(f);
}

} // namespace mpirpc
