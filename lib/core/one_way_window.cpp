// SPDX-License-Identifier: MIT
#include "core/one_way_window.hpp"

#include <algorithm>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

namespace {

class marker_reply final : public reply_sink {
public:
  marker_reply(one_way_window& w, int dest, std::uint64_t bytes)
      : _window(w), _dest(dest), _bytes(bytes) {}
  void on_reply(reader&) override { _window.acknowledged(_dest, _bytes); }
  void on_error(std::exception_ptr) noexcept override { _window.acknowledged(_dest, _bytes); }

private:
  one_way_window& _window;
  const int _dest;
  const std::uint64_t _bytes;
};

} // namespace

one_way_window::one_way_window(int ranks, std::uint64_t limit)
    : _limit(limit), _chunk(std::max<std::uint64_t>(limit / 4, 1)),
      _lanes(std::make_unique<lane[]>(static_cast<std::size_t>(ranks))) {}

std::uint64_t one_way_window::marker_id() noexcept {
  static const std::uint64_t id = function_id_of(marker_name);
  return id;
}

std::uint64_t one_way_window::sent(int dest, std::uint64_t bytes) noexcept {
  lane& l = _lanes[static_cast<std::size_t>(dest)];
  l.in_flight.fetch_add(bytes, std::memory_order_relaxed);
  const std::uint64_t since = l.since_marker.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (since < _chunk) return 0;
  // The thread that takes the count sends the marker; every byte is in since_marker or in
  // exactly one marker.
  const std::uint64_t taken = l.since_marker.exchange(0, std::memory_order_relaxed);
  if (taken >= _chunk) return taken;
  if (taken > 0) l.since_marker.fetch_add(taken, std::memory_order_relaxed);
  return 0;
}

std::uint64_t one_way_window::in_flight(int dest) const noexcept {
  return _lanes[static_cast<std::size_t>(dest)].in_flight.load(std::memory_order_relaxed);
}

void one_way_window::acknowledged(int dest, std::uint64_t bytes) noexcept {
  _lanes[static_cast<std::size_t>(dest)].in_flight.fetch_sub(bytes, std::memory_order_seq_cst);
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

std::shared_ptr<reply_sink> one_way_window::marker_sink(int dest, std::uint64_t bytes) {
  return std::make_shared<marker_reply>(*this, dest, bytes);
}

} // namespace mpirpc::detail
