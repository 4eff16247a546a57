// SPDX-License-Identifier: MIT
// Handler slots and the work waiting for one: the server side's thread budget. Internal.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>

#include "core/session.hpp"
#include "net/transport.hpp"

namespace mpirpc::detail {

/// Who runs what the server takes from its queue, and who learns that work was posted. The
/// engine implements it: a request runs through the receiver, a post wakes a follower.
class server_hooks {
public:
  /// Runs a queued request; the caller holds a handler slot for it.
  virtual void run_queued_request(incoming& message) = 0;
  /// A task was posted: a thread should come and run it.
  virtual void work_posted() noexcept = 0;

protected:
  ~server_hooks() = default;
};

/// At most `slots` handlers run at once (options::num_worker_threads). A request that finds
/// no slot waits in a queue (unbounded), its out-of-line buffers already received; posted
/// tasks (work that must run on a server thread) wait beside the requests and run after them.
/// Thread-safe: a slot is taken with a compare-and-swap, the queue is under one mutex.
///
/// Who runs what: run_queued() runs on whichever thread calls it (a background thread after
/// a handler, or after it polled); the hooks run there too.
class server {
public:
  /// Failures of posted tasks are logged to `s`.
  server(int slots, server_hooks& hooks, const session& s)
      : _slots(slots), _hooks(hooks), _session(s) {}
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  int slots() const noexcept { return _slots; }
  /// Takes a handler slot if one is free.
  bool try_take_slot() noexcept {
    int n = _running.load(std::memory_order_relaxed);
    while (n < _slots) {
      if (_running.compare_exchange_weak(n, n + 1, std::memory_order_seq_cst)) return true;
    }
    return false;
  }
  /// Gives back a slot taken with try_take_slot (or lent back by take_back_slot).
  void release_slot() noexcept { _running.fetch_sub(1, std::memory_order_seq_cst); }
  /// Counts a slot as taken again without checking the limit (a posted task that gave its
  /// slot away while it ran requests that took their own, and now hands it back to
  /// run_queued, which releases it).
  void take_back_slot() noexcept { _running.fetch_add(1, std::memory_order_seq_cst); }

  /// Handlers running now (seq_cst: read by quiescence).
  int running() const noexcept { return _running.load(std::memory_order_seq_cst); }
  /// Requests and tasks waiting for a slot (seq_cst: read by quiescence).
  int queued() const noexcept { return _queued.load(std::memory_order_seq_cst); }
  /// Whether queued work would find a free slot now.
  bool work_for_a_free_slot() const noexcept {
    return _queued.load() > 0 && _running.load() < _slots;
  }

  /// Queues a request that found no slot. True the first time only (the caller then warns that
  /// the pool is exhausted).
  bool queue(incoming&& message);
  /// Runs `task` on a server thread, after the requests already queued. Dropped unrun if the
  /// runtime stops first (take_all).
  void post(std::function<void()> task);
  /// Runs queued requests, then tasks, while there are some and a slot is free. Exceptions of
  /// tasks are logged, never thrown.
  void run_queued();
  /// Takes everything queued (the runtime stops): the requests, to be answered; the tasks are
  /// dropped.
  std::deque<incoming> take_all() noexcept;

private:
  const int _slots;
  server_hooks& _hooks;
  const session& _session;
  std::atomic<int> _running{0};
  std::mutex _mutex;
  std::deque<incoming> _queue;
  std::deque<std::function<void()>> _tasks;
  std::atomic<int> _queued{0};
  std::atomic<bool> _warned{false};
};

} // namespace mpirpc::detail
