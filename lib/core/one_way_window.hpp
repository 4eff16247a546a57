// SPDX-License-Identifier: MIT
// Flow control of one-way calls by bytes (options::max_one_way_bytes). Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "core/registry.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

/// How many bytes of one-way calls (rpc_ff) this rank has sent to each destination that the
/// destination has not yet started: the receiver's queued one-way data from this sender,
/// bounded by `limit`. One-way calls have no reply, so the sender asks for one now and then:
/// every `chunk()` bytes that leave (counted per batch by the outbox_set, so a flood pays no
/// atomic per call) it sends a marker, a one-way message of the runtime's own, after the
/// calls it covers. One-way messages from one sender are taken up in order, so when the
/// marker comes up, all those calls have started (left the receiver's queues), and the
/// receiver acknowledges their bytes with a one-way message back. An application
/// thread whose call finds `limit` bytes unacknowledged waits (sender::send_one_way);
/// handlers and progress-path continuations never wait, as for max_outstanding_calls.
/// Thread-safe; counting is lock-free, waiting uses one mutex.
class one_way_window {
public:
  /// `limit` in bytes per destination; zero: no limit, nothing counted, no markers.
  one_way_window(int ranks, std::uint64_t limit);

  bool enabled() const noexcept { return _limit > 0; }
  std::uint64_t limit() const noexcept { return _limit; }
  /// Bytes a marker covers at least: a quarter of the limit, so that the window keeps
  /// flowing while a marker's reply travels.
  std::uint64_t chunk() const noexcept { return _chunk; }

  /// Counts `bytes` of one-way calls that have left for `dest` (a batch, or a call sent on
  /// its own). Once a chunk has left since the last marker, a marker is due: the next one-way
  /// call to `dest` sends it (take_due_marker), behind the calls it covers.
  void sent(int dest, std::uint64_t bytes) noexcept;
  /// The bytes a due marker to `dest` must cover, taken (zero when none is due). Whoever
  /// takes them sends the marker or, if that fails, acknowledges them.
  std::uint64_t take_due_marker(int dest) noexcept;
  /// Whether a marker to `dest` is due (relaxed: a hint, checked after each one-way call).
  bool marker_due(int dest) const noexcept {
    return _lanes[static_cast<std::size_t>(dest)].due.load(std::memory_order_relaxed) > 0;
  }
  /// Bytes sent to `dest` and not yet acknowledged.
  std::uint64_t in_flight(int dest) const noexcept;
  bool has_room(int dest) const noexcept { return in_flight(dest) < _limit; }
  /// An acknowledgement came (or a marker could not be sent, which must not hold the window
  /// shut): `bytes` are acknowledged and waiting senders are woken.
  void acknowledged(int dest, std::uint64_t bytes) noexcept;
  /// Sleeps until `dest` may have room or `until` passes (either may be spurious).
  void wait_for_room(int dest, std::chrono::steady_clock::time_point until);

  /// The window's own one-way messages, registered on every rank alike and served by the
  /// receiver (core/receiver.cpp): a marker (`mpirpc::one_way_mark`), sent after the calls it
  /// covers, carries their byte count; when it comes up in order at the receiver, the
  /// receiver sends that count back in an acknowledgement (`mpirpc::one_way_ack`). Neither is
  /// counted in a window nor in the one-way statistics.
  static constexpr const char* marker_name = "mpirpc::one_way_mark";
  static constexpr const char* ack_name = "mpirpc::one_way_ack";
  static std::uint64_t marker_id() noexcept;
  static std::uint64_t ack_id() noexcept;
  static bool is_window_message(std::uint64_t function_id) noexcept {
    return function_id == marker_id() || function_id == ack_id();
  }
  /// Whether a received message is an acknowledgement, which is applied on receipt, outside
  /// any order (in_order_runs::route_received routes it to receiver::handle_request).
  static bool is_acknowledgement(const wire::header& h) noexcept {
    return h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
           (h.flags & wire::request_one_way) != 0 && h.function_id == ack_id() &&
           h.segment_count == 0;
  }

private:
  struct alignas(64) lane {
    std::atomic<std::uint64_t> in_flight{0};    ///< sent, not acknowledged
    std::atomic<std::uint64_t> since_marker{0}; ///< sent, not yet covered by a marker
    std::atomic<std::uint64_t> due{0};          ///< covered by a marker not yet sent
  };
  const std::uint64_t _limit;
  const std::uint64_t _chunk;
  std::unique_ptr<lane[]> _lanes;
  std::mutex _mutex;
  std::condition_variable _room;
  std::atomic<int> _waiters{0};
};

} // namespace mpirpc::detail
