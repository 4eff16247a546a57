// SPDX-License-Identifier: MIT
// Who polls MPI for any message, and how that role passes between a rank's threads. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "progress/pacing.hpp"

namespace mpirpc::detail {

/// The leader/followers hand-over of one rank's background threads (lib/README.md, "Threads").
///
/// - The **leader** holds the baton: it polls for any message. On a message it calls
///   took_message(), then gives the baton up for the dispatch (release_for_dispatch), so that
///   another thread may poll while the handler runs, and tries to take it back afterwards.
///   Between polls that found nothing it sleeps in sleep(), deeply idle or not.
/// - At most one follower is the **standby**: it wakes every promote_interval (or up to
///   deep_standby_interval while the leader is deeply idle) and takes the baton if no message
///   was taken since its last look and the caller's `may_take_over` agrees, so that a handler
///   that runs long loses the poll role after one to two intervals.
/// - **Other followers** block until asked to become the standby, or until work is posted.
///
/// Thread-safe. Every thread of the rank may be a follower; one at a time is the leader.
class poll_baton {
public:
  using clock = std::chrono::steady_clock;

  // ---- the leader
  /// Takes the baton if it is free (never waits).
  bool try_take() noexcept { return _mutex.try_lock(); }
  /// Gives the baton up (the leader leaves, or steps out to send).
  void release() noexcept { _mutex.unlock(); }
  /// The leader took a message: not idle, and the standby sees it move. Holding the baton.
  void took_message() noexcept {
    _leader_idle.store(false, std::memory_order_seq_cst);
    _sequence.fetch_add(1, std::memory_order_relaxed);
  }
  /// Gives the baton up to dispatch what it took, waking a deeply sleeping standby.
  void release_for_dispatch() noexcept {
    _mutex.unlock();
    if (_standby_deep.load(std::memory_order_seq_cst)) _standby_cv.notify_one();
  }
  /// Sleeps for `sleep` from `now`, holding the baton. `idle`: deeply idle; then a wake_idle()
  /// or `stop` ends the sleep early. Before it sleeps idle, `call_since()` is asked again, and
  /// if it says a call came in meanwhile the leader does not sleep (false is returned).
  bool sleep(clock::time_point now, std::chrono::microseconds sleep, bool idle,
             const std::function<bool()>& call_since, const std::atomic<bool>& stop);
  /// The leader leaves for good (stopping): not idle, the baton released.
  void leave() noexcept {
    _leader_idle.store(false, std::memory_order_relaxed);
    _mutex.unlock();
  }

  // ---- any thread
  /// Whether the leader sleeps deeply idle.
  bool leader_idle() const noexcept { return _leader_idle.load(std::memory_order_seq_cst); }
  /// Wakes a deeply idle leader (a call was sent: its reply should be noticed soon).
  void wake_idle() noexcept;
  /// Wakes the leader if it is idle or sleeps until later than `by` (a batch was started that
  /// it should send once old enough).
  void wake_if_asleep_past(clock::time_point by) noexcept;
  /// Work was posted: a follower should come and look.
  void work_posted() noexcept;

  // ---- followers
  /// Blocks as a follower. True: this thread took the baton (it is the leader now). False: it
  /// should run what `has_work()` found, or `stop` was set. `may_take_over()` is asked before a
  /// stuck leader's baton is taken (false while the leader moves a buffer within its spin
  /// budget: it is not stuck).
  bool follow(const std::function<bool()>& has_work, const std::function<bool()>& may_take_over,
              const std::atomic<bool>& stop);
  /// Wakes every follower and the leader (stopping).
  void wake_all() noexcept;

  /// How many messages leaders have taken (what the standby watches).
  std::uint64_t sequence() const noexcept { return _sequence.load(std::memory_order_relaxed); }

private:
  std::mutex _mutex;                       ///< held by the leader
  std::atomic<std::uint64_t> _sequence{0}; ///< messages the leaders took
  std::atomic<bool> _leader_idle{false};
  std::atomic<std::int64_t> _wakes_at_ns{0}; ///< when the sleeping leader looks again
  std::mutex _sleep_mutex;
  std::condition_variable _leader_cv;
  std::mutex _follow_mutex;
  std::condition_variable _follow_cv;
  std::condition_variable _standby_cv;
  bool _has_standby = false; ///< under _follow_mutex
  std::atomic<bool> _standby_deep{false};
};

} // namespace mpirpc::detail
