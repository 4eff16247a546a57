// SPDX-License-Identifier: MIT
#include "core/one_way_window.hpp"

#include <algorithm>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

namespace {} // namespace

one_way_window::one_way_window(int ranks, std::uint64_t limit)
    : _limit(limit), _chunk(std::max<std::uint64_t>(limit / 4, 1)),
      _lanes(std::make_unique<lane[]>(static_cast<std::size_t>(ranks))) {}

std::uint64_t one_way_window::marker_id() noexcept {
  static const std::uint64_t id = function_id_of(marker_name);
  return id;
}

std::uint64_t one_way_window::ack_id() noexcept {
  static const std::uint64_t id = function_id_of(ack_name);
  return id;
}

void one_way_window::sent(int dest, std::uint64_t bytes) noexcept {
  lane& l = _lanes[static_cast<std::size_t>(dest)];
  l.in_flight.fetch_add(bytes, std::memory_order_relaxed);
  const std::uint64_t since = l.since_marker.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (since < _chunk) return;
  // Every byte is in since_marker, in due, or in exactly one marker sent.
  const std::uint64_t taken = l.since_marker.exchange(0, std::memory_order_relaxed);
  if (taken > 0) l.due.fetch_add(taken, std::memory_order_relaxed);
}

std::uint64_t one_way_window::take_due_marker(int dest) noexcept {
  lane& l = _lanes[static_cast<std::size_t>(dest)];
  if (l.due.load(std::memory_order_relaxed) == 0) return 0;
  return l.due.exchange(0, std::memory_order_relaxed);
}

std::uint64_t one_way_window::in_flight(int dest) const noexcept {
  return _lanes[static_cast<std::size_t>(dest)].in_flight.load(std::memory_order_relaxed);
}

void one_way_window::acknowledged(int dest, std::uint64_t bytes) noexcept {
  // Never below zero, whatever a (forged or repeated) acknowledgement says.
  std::atomic<std::uint64_t>& in_flight = _lanes[static_cast<std::size_t>(dest)].in_flight;
  std::uint64_t now = in_flight.load(std::memory_order_relaxed);
  while (!in_flight.compare_exchange_weak(now, now - std::min(now, bytes),
                                          std::memory_order_seq_cst)) {
  }
  if (_waiters.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(_mutex);
    _room.notify_all();
  }
}

void one_way_window::wait_for_room(int dest, std::chrono::steady_clock::time_point until) {
  std::unique_lock<std::mutex> lock(_mutex);
  _waiters.fetch_add(1, std::memory_order_seq_cst);
  if (!has_room(dest)) _room.wait_until(lock, until);
  _waiters.fetch_sub(1, std::memory_order_seq_cst);
}

} // namespace mpirpc::detail
