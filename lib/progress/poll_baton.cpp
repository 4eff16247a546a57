// SPDX-License-Identifier: MIT
#include "progress/poll_baton.hpp"

namespace mpirpc::detail {

bool poll_baton::sleep(clock::time_point now, std::chrono::microseconds sleep, bool idle,
                       const std::function<bool()>& call_since, const std::atomic<bool>& stop) {
  std::unique_lock<std::mutex> lock(_sleep_mutex);
  _leader_idle.store(idle, std::memory_order_seq_cst);
  // A call sent between the caller's checks and the store: the caller inserted it before it
  // read the flag (both seq_cst), so one of the two sides sees the other.
  if (idle && call_since()) {
    _leader_idle.store(false, std::memory_order_seq_cst);
    return false;
  }
  _wakes_at_ns.store((now + sleep).time_since_epoch().count(), std::memory_order_relaxed);
  if (idle) {
    _leader_cv.wait_for(
        lock, sleep, [&] { return !_leader_idle.load() || stop.load(std::memory_order_acquire); });
  } else {
    _leader_cv.wait_for(lock, sleep);
  }
  return true;
}

void poll_baton::wake_idle() noexcept {
  // Only the first call after idleness pays for the wake-up.
  if (_leader_idle.load(std::memory_order_seq_cst)) {
    std::lock_guard<std::mutex> lock(_sleep_mutex); // no lost wake-up
    if (_leader_idle.exchange(false)) _leader_cv.notify_one();
  }
}

void poll_baton::wake_if_asleep_past(clock::time_point by) noexcept {
  if (_leader_idle.load(std::memory_order_seq_cst) ||
      _wakes_at_ns.load(std::memory_order_relaxed) > by.time_since_epoch().count()) {
    std::lock_guard<std::mutex> lock(_sleep_mutex); // no lost wake-up
    _leader_idle.store(false, std::memory_order_seq_cst);
    _leader_cv.notify_one();
  }
}

void poll_baton::work_posted() noexcept {
  std::lock_guard<std::mutex> lock(_follow_mutex);
  _follow_cv.notify_one();
  _standby_cv.notify_one();
}

bool poll_baton::follow(const std::function<bool()>& has_work,
                        const std::function<bool()>& may_take_over, const std::atomic<bool>& stop) {
  std::unique_lock<std::mutex> lock(_follow_mutex);
  bool standby = false;
  if (!_has_standby) {
    _has_standby = true;
    standby = true;
  }
  std::uint64_t seen = _sequence.load(std::memory_order_relaxed);
  while (!stop.load(std::memory_order_acquire)) {
    if (has_work()) break;
    if (!standby) {
      _follow_cv.wait(lock);
      if (!_has_standby) {
        _has_standby = true;
        standby = true;
        seen = _sequence.load(std::memory_order_relaxed);
      }
      continue;
    }
    if (_leader_idle.load(std::memory_order_acquire)) {
      _standby_deep.store(true, std::memory_order_seq_cst);
      // Bounded: a wake-up lost to a race costs at most this long.
      if (_leader_idle.load(std::memory_order_seq_cst)) {
        _standby_cv.wait_for(lock, pacing::deep_standby_interval);
      }
      _standby_deep.store(false, std::memory_order_relaxed);
    } else {
      _standby_cv.wait_for(lock, pacing::promote_interval);
    }
    const std::uint64_t now_seq = _sequence.load(std::memory_order_relaxed);
    const bool leader_stuck = now_seq == seen;
    seen = now_seq;
    if (leader_stuck && may_take_over() && _mutex.try_lock()) {
      _has_standby = false;
      _follow_cv.notify_one(); // another follower becomes the standby
      return true;
    }
  }
  if (standby) {
    _has_standby = false;
    _follow_cv.notify_one();
  }
  return false;
}

void poll_baton::wake_all() noexcept {
  {
    std::lock_guard<std::mutex> lock(_follow_mutex);
    _follow_cv.notify_all();
    _standby_cv.notify_all();
  }
  std::lock_guard<std::mutex> lock(_sleep_mutex);
  _leader_cv.notify_all();
}

} // namespace mpirpc::detail
