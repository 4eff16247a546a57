// SPDX-License-Identifier: MIT
// Shared state behind mpirpc::future<T>. Internal: use mpirpc/future.hpp.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include <mpirpc/detail/library.hpp>
#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

class future_state_base {
public:
  future_state_base() = default;
  future_state_base(const future_state_base&) = delete;
  future_state_base& operator=(const future_state_base&) = delete;
  virtual ~future_state_base() = default;

  bool done() const noexcept { return _done.load(std::memory_order_acquire); }

  void wait() {
    if (done()) return;
    if (in_progress_callback()) {
      throw future_error(
          "mpirpc: wait() on an incomplete future inside a continuation that runs on mpirpc's "
          "progress path would stall progress; chain the work with then() or "
          "add_done_callback() instead of waiting");
    }
    wait_for_state(*this);
  }

  /// Blocks on the condition variable until done or `deadline`; returns done().
  template <class Clock, class Duration>
  bool sleep_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    std::unique_lock<std::mutex> lock(_mutex);
    _sleepers.fetch_add(1, std::memory_order_seq_cst);
    while (!_done.load(std::memory_order_acquire)) {
      if (_cv.wait_until(lock, deadline) == std::cv_status::timeout) break;
    }
    _sleepers.fetch_sub(1, std::memory_order_relaxed);
    return _done.load(std::memory_order_acquire);
  }

  void sleep_until_done() {
    std::unique_lock<std::mutex> lock(_mutex);
    _sleepers.fetch_add(1, std::memory_order_seq_cst);
    _cv.wait(lock, [&] { return _done.load(std::memory_order_acquire); });
    _sleepers.fetch_sub(1, std::memory_order_relaxed);
  }

  std::exception_ptr error() const noexcept { return done() ? _error : nullptr; }

  /// Completes the state with an error. Returns false (and changes nothing) if already done.
  bool try_set_exception(std::exception_ptr e) {
    std::unique_lock<std::mutex> lock(_mutex);
    if (_done.load(std::memory_order_relaxed)) return false;
    _error = std::move(e);
    complete(lock);
    return true;
  }

  /// Runs `callback` once the state is done: at once on this thread if it already is,
  /// otherwise later on the thread that completes it.
  void add_callback(std::function<void()> callback) {
    {
      std::lock_guard<std::mutex> lock(_mutex);
      if (!_done.load(std::memory_order_relaxed)) {
        _callbacks.push_back(std::move(callback));
        return;
      }
    }
    callback();
  }

protected:
  /// Marks done, wakes sleepers, then runs the callbacks outside the lock, each exactly once.
  void complete(std::unique_lock<std::mutex>& lock) {
    _done.store(true, std::memory_order_release);
    std::vector<std::function<void()>> callbacks;
    callbacks.swap(_callbacks);
    const bool wake = _sleepers.load(std::memory_order_seq_cst) > 0;
    lock.unlock();
    if (wake) _cv.notify_all();
    for (auto& cb : callbacks)
      cb();
  }

  std::mutex _mutex;

private:
  std::condition_variable _cv;
  std::atomic<bool> _done{false};
  std::atomic<int> _sleepers{0};
  std::exception_ptr _error;
  std::vector<std::function<void()>> _callbacks;
};

template <class T> class future_state : public future_state_base {
public:
  template <class U> bool try_set_value(U&& value) {
    std::unique_lock<std::mutex> lock(_mutex);
    if (done()) return false;
    _value.emplace(std::forward<U>(value));
    complete(lock);
    return true;
  }
  /// Precondition: done() and no error.
  T& stored_value() noexcept { return *_value; }

private:
  std::optional<T> _value;
};

template <> class future_state<void> : public future_state_base {
public:
  bool try_set_value() {
    std::unique_lock<std::mutex> lock(_mutex);
    if (done()) return false;
    complete(lock);
    return true;
  }
};

} // namespace mpirpc::detail
