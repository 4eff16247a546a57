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
#include <utility>

#include <mpirpc/detail/arguments.hpp>
#include <mpirpc/detail/call.hpp>
#include <mpirpc/detail/call_state.hpp>
#include <mpirpc/detail/callable_traits.hpp>
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
/// batch of this rank's messages to `to` (lib/core/outbox_set.cpp). A batch leaves when it is full
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
/// Flow control, by bytes (options::max_one_way_bytes, 4 MiB per destination by default): an
/// application thread waits here while that much of its rank's earlier one-way calls to `to`
/// have not yet started there, and throws timeout_error (the call not sent) after
/// options::rpc_timeout; a handler or a progress-path continuation never waits. There is no
/// timeout argument. To wait until every call anywhere has run, use barrier().
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
