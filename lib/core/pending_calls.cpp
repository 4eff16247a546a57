// SPDX-License-Identifier: MIT
#include "core/pending_calls.hpp"

#include <algorithm>

namespace mpirpc::detail {

pending_calls::pending_calls(int ranks)
    : _per_dest(new std::atomic<int>[static_cast<std::size_t>(ranks > 0 ? ranks : 1)]),
      _wake_at(new std::atomic<int>[static_cast<std::size_t>(ranks > 0 ? ranks : 1)]),
      _room_waiters(new std::atomic<int>[static_cast<std::size_t>(ranks > 0 ? ranks : 1)]) {
  for (int i = 0; i < (ranks > 0 ? ranks : 1); ++i) {
    _per_dest[static_cast<std::size_t>(i)] = 0;
    _wake_at[static_cast<std::size_t>(i)] = 0;
    _room_waiters[static_cast<std::size_t>(i)] = 0;
  }
}

bool pending_calls::try_reserve(int dest, int limit) noexcept {
  std::atomic<int>& n = _per_dest[static_cast<std::size_t>(dest)];
  if (limit <= 0) {
    n.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  int current = n.load(std::memory_order_relaxed);
  while (current < limit) {
    if (n.compare_exchange_weak(current, current + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void pending_calls::unreserve(int dest) noexcept {
  released(dest);
}

void pending_calls::released(int dest) noexcept {
  const int left =
      _per_dest[static_cast<std::size_t>(dest)].fetch_sub(1, std::memory_order_seq_cst) - 1;
  if (_room_waiters[static_cast<std::size_t>(dest)].load(std::memory_order_seq_cst) > 0 &&
      left <= _wake_at[static_cast<std::size_t>(dest)].load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(_room_mutex); // no lost wake-up
    _room_cv.notify_all();
  }
}

void pending_calls::wait_for_room(int dest, int limit,
                                  std::chrono::steady_clock::time_point until) {
  if (limit <= 0) return;
  const std::size_t d = static_cast<std::size_t>(dest);
  const int wake_at = limit - std::max(1, limit / 4);
  std::unique_lock<std::mutex> lock(_room_mutex);
  // Every waiter for dest passes the same limit (options::max_outstanding_calls); set before
  // the waiter is counted, so that a release that sees the waiter sees its threshold.
  _wake_at[d].store(wake_at, std::memory_order_relaxed);
  _room_waiters[d].fetch_add(1, std::memory_order_seq_cst);
  if (_per_dest[d].load(std::memory_order_seq_cst) >= limit) {
    _room_cv.wait_until(lock, until,
                        [&] { return _per_dest[d].load(std::memory_order_seq_cst) <= wake_at; });
  }
  _room_waiters[d].fetch_sub(1, std::memory_order_seq_cst);
}

std::uint64_t pending_calls::insert(pending_call call) {
  std::lock_guard<std::mutex> lock(_mutex);
  std::uint32_t index;
  if (!_free.empty()) {
    index = _free.back();
    _free.pop_back();
  } else {
    index = static_cast<std::uint32_t>(_slots.size());
    _slots.emplace_back();
  }
  slot& s = _slots[index];
  s.generation += 1;
  s.used = true;
  s.call = std::move(call);
  _size.fetch_add(1, std::memory_order_seq_cst);
  return (std::uint64_t(s.generation) << 32) | index;
}

std::optional<pending_call> pending_calls::take(std::uint64_t id) {
  const auto index = static_cast<std::uint32_t>(id & 0xffffffffu);
  const auto generation = static_cast<std::uint32_t>(id >> 32);
  std::unique_lock<std::mutex> lock(_mutex);
  if (index >= _slots.size()) return std::nullopt;
  slot& s = _slots[index];
  if (!s.used || s.generation != generation) return std::nullopt;
  s.used = false;
  std::optional<pending_call> out(std::move(s.call));
  s.call = pending_call{};
  _free.push_back(index);
  _size.fetch_sub(1, std::memory_order_relaxed);
  lock.unlock();
  released(out->dest);
  return out;
}

std::vector<pending_call> pending_calls::take_expired(std::chrono::steady_clock::time_point now) {
  std::vector<pending_call> out;
  std::unique_lock<std::mutex> lock(_mutex);
  for (std::uint32_t i = 0; i < _slots.size(); ++i) {
    slot& s = _slots[i];
    if (s.used && s.call.deadline <= now) {
      s.used = false;
      out.push_back(std::move(s.call));
      s.call = pending_call{};
      _free.push_back(i);
      _size.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  lock.unlock();
  for (const pending_call& call : out)
    released(call.dest);
  return out;
}

std::vector<pending_call> pending_calls::take_all() {
  return take_expired(std::chrono::steady_clock::time_point::max());
}

} // namespace mpirpc::detail
