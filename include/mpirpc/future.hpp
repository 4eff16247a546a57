// SPDX-License-Identifier: MIT
// mpirpc::future<T>: the result of an asynchronous call, shaped like torch.futures.Future.
//
// A future is a shared handle: copies refer to the same state, which is completed once, with
// a value (set_result) or an error (set_exception). Futures come from rpc_async(), from then(),
// or are created empty by the application and completed later from any thread.
//
// Threads. A continuation registered with then() or add_done_callback() runs exactly once:
//  - at once, on the registering thread, if the future is already done;
//  - otherwise on the thread that completes the future. For a future returned by rpc_async()
//    that is one of mpirpc's progress threads or an application thread that is waiting on a
//    future and polling for replies meanwhile; for a future completed by set_result() it is
//    the thread that called set_result(); for a call abandoned by shutdown it is the thread
//    that called shutdown().
// Continuations that run on the progress path must not block: wait() on an incomplete future
// there throws future_error naming the fix (chain with then() instead). Calling rpc_async()
// from a continuation is fine.
//
// wait() on a thread outside the progress path blocks until done; while a runtime is running
// the waiting thread polls MPI for replies itself (no thread hand-off on the critical path)
// and backs off to sleeping when the reply takes long.
//
// Deviations from torch: value() on an incomplete future throws future_error instead of being
// undefined; wait()/value() return a reference into the shared state (copy it if it must
// outlive every handle); set_result/set_exception on a done future throw future_error (torch
// raises RuntimeError).
#pragma once

#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include <mpirpc/detail/future_state.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/errors.hpp>

namespace mpirpc {

template <class T> class future;

namespace detail {
template <class T> struct is_future : std::false_type {};
template <class T> struct is_future<future<T>> : std::true_type {};
template <class T> inline constexpr bool is_future_v = is_future<T>::value;

template <class T> struct unwrap_future { using type = T; };
template <class T> struct unwrap_future<future<T>> { using type = T; };
template <class T> using unwrap_future_t = typename unwrap_future<T>::type;

template <class T> future<T> make_future_from_state(std::shared_ptr<future_state<T>> state);
template <class T> const std::shared_ptr<future_state<T>>& state_of(const future<T>& f);
} // namespace detail

/// A handle to a value that becomes available later. Copying a future copies the handle.
/// Thread-safe: any thread may wait, add callbacks or complete it.
template <class T> class future {
  static_assert(!std::is_reference_v<T>, "mpirpc::future<T>: T must not be a reference");

public:
  using value_type = T;

  /// Creates an empty, incomplete future to be completed by set_result/set_exception.
  future() : _state(std::make_shared<detail::future_state<T>>()) {}

  /// True once a value or an error is set. Never blocks.
  bool done() const noexcept { return _state->done(); }

  /// Blocks until done, then returns the value or rethrows the error.
  /// Throws future_error when called, on an incomplete future, inside a progress-path
  /// continuation (see the header comment).
  decltype(auto) wait() const {
    _state->wait();
    return value();
  }

  /// The value of a completed future; rethrows its error.
  /// Precondition: done(); otherwise throws future_error.
  decltype(auto) value() const {
    if (!_state->done()) {
      throw future_error("mpirpc: future::value() called before the future completed; call "
                         "wait() first or read the value inside then()");
    }
    if (auto e = _state->error()) std::rethrow_exception(e);
    if constexpr (std::is_void_v<T>) {
      return;
    } else {
      return static_cast<const T&>(_state->stored_value());
    }
  }

  /// Completes the future with a value and runs its callbacks on this thread. const: a future
  /// is a handle, and a copy captured by a lambda completes the same state.
  /// Throws future_error if it is already done.
  template <class U = T, class = std::enable_if_t<!std::is_void_v<U>>>
  void set_result(U value) const {
    if (!_state->try_set_value(std::move(value))) throw_already_done("set_result");
  }
  template <class U = T, class = std::enable_if_t<std::is_void_v<U>>> void set_result() const {
    if (!_state->try_set_value()) throw_already_done("set_result");
  }

  /// Completes the future with an error. Throws future_error if it is already done.
  void set_exception(std::exception_ptr error) const {
    if (!error) throw future_error("mpirpc: future::set_exception() needs a non-null exception");
    if (!_state->try_set_exception(std::move(error))) throw_already_done("set_exception");
  }
  template <class E, class = std::enable_if_t<!std::is_same_v<std::decay_t<E>, std::exception_ptr>>>
  void set_exception(E&& error) const {
    set_exception(std::make_exception_ptr(std::forward<E>(error)));
  }

  /// Registers `callback(future<T>)` to run once when the future completes (see the header
  /// comment for the thread). An exception escaping the callback is swallowed and reported
  /// on stderr, as torch logs it.
  template <class F> void add_done_callback(F&& callback) const {
    static_assert(std::is_invocable_v<F&, future<T>>,
                  "mpirpc: add_done_callback(f) needs f callable as f(mpirpc::future<T>)");
    // The callback holds the state weakly: a future that never completes must not keep
    // itself alive through its own callback list. Whoever completes it holds it.
    _state->add_callback([weak = std::weak_ptr<detail::future_state<T>>(_state),
                          cb = std::forward<F>(callback)]() mutable {
      auto strong = weak.lock();
      if (!strong) return;
      try {
        cb(future<T>(std::move(strong)));
      } catch (...) {
        report_callback_exception(std::current_exception());
      }
    });
  }

  /// Returns a future of f's result, where f(future<T>) runs once this future completes.
  /// f receives the completed future, so values and errors travel one path: f calls wait()
  /// or value() to read it (rethrowing the error). If f returns a future<U>, the result is
  /// flattened to future<U>. If f throws, the returned future holds the exception.
  template <class F> auto then(F&& callback) const {
    static_assert(std::is_invocable_v<F&, future<T>>,
                  "mpirpc: then(f) needs f callable as f(mpirpc::future<T>)");
    using raw_result = std::invoke_result_t<F&, future<T>>;
    using result_type = detail::unwrap_future_t<raw_result>;
    future<result_type> next;
    _state->add_callback([weak = std::weak_ptr<detail::future_state<T>>(_state), next,
                          cb = std::forward<F>(callback)]() mutable {
      auto strong = weak.lock();
      if (!strong) return;
      const future<T> self(std::move(strong));
      try {
        if constexpr (detail::is_future_v<raw_result>) {
          raw_result inner = cb(self);
          inner.add_done_callback(
              [next](const raw_result& done) mutable { forward_completion(done, next); });
        } else if constexpr (std::is_void_v<raw_result>) {
          cb(self);
          next.set_result();
        } else {
          next.set_result(cb(self));
        }
      } catch (...) {
        next._state->try_set_exception(std::current_exception());
      }
    });
    return next;
  }

private:
  template <class U> friend class future;
  template <class U>
  friend future<U> detail::make_future_from_state(std::shared_ptr<detail::future_state<U>>);
  template <class U>
  friend const std::shared_ptr<detail::future_state<U>>& detail::state_of(const future<U>&);

  explicit future(std::shared_ptr<detail::future_state<T>> state) : _state(std::move(state)) {}

  [[noreturn]] static void throw_already_done(const char* what) {
    throw future_error(std::string("mpirpc: future::") + what +
                       "() called on a future that is already completed (a future is "
                       "completed at most once)");
  }

  template <class U> static void forward_completion(const future<U>& from, future<U>& to) {
    if (auto e = from._state->error()) {
      to._state->try_set_exception(e);
    } else if constexpr (std::is_void_v<U>) {
      to._state->try_set_value();
    } else {
      to._state->try_set_value(from._state->stored_value());
    }
  }

  static void report_callback_exception(std::exception_ptr e) noexcept;

  std::shared_ptr<detail::future_state<T>> _state;
};

namespace detail {
template <class T> future<T> make_future_from_state(std::shared_ptr<future_state<T>> state) {
  return future<T>(std::move(state));
}
template <class T> const std::shared_ptr<future_state<T>>& state_of(const future<T>& f) {
  return f._state;
}
} // namespace detail

template <class T> void future<T>::report_callback_exception(std::exception_ptr e) noexcept {
  detail::report_callback_exception(e);
}

/// Returns a future that completes when every future in `futures` has completed (with a
/// value or an error); its value is the list of those futures, in order. Never fails itself:
/// errors stay inside the listed futures (torch.futures.collect_all).
template <class T> future<std::vector<future<T>>> collect_all(std::vector<future<T>> futures) {
  future<std::vector<future<T>>> all;
  if (futures.empty()) {
    all.set_result({});
    return all;
  }
  struct shared {
    std::vector<future<T>> futures;
    std::atomic<std::size_t> remaining;
    future<std::vector<future<T>>> all;
  };
  auto s = std::make_shared<shared>();
  s->remaining.store(futures.size());
  s->futures = futures;
  s->all = all;
  for (auto& f : futures) {
    f.add_done_callback([s](const future<T>&) {
      if (s->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        s->all.set_result(std::move(s->futures));
      }
    });
  }
  return all;
}

/// Waits for the futures in list order and returns their values; the first failed future met
/// in that order rethrows its error at once, without waiting for the rest
/// (torch.futures.wait_all).
template <class T> auto wait_all(const std::vector<future<T>>& futures) {
  if constexpr (std::is_void_v<T>) {
    for (const auto& f : futures)
      f.wait();
  } else {
    std::vector<T> values;
    values.reserve(futures.size());
    for (const auto& f : futures)
      values.push_back(f.wait());
    return values;
  }
}

} // namespace mpirpc
