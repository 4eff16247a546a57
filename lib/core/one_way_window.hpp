// SPDX-License-Identifier: MIT
// Flow control of one-way calls by bytes (options::max_one_way_bytes). Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include <mpirpc/detail/call_state.hpp>

#include "core/registry.hpp"

namespace mpirpc::detail {

/// How many bytes of one-way calls (rpc_ff) this rank has sent to each destination that the
/// destination has not yet started: the receiver's queued one-way data from this sender,
/// bounded by `limit`. One-way calls have no reply, so the sender asks for one now and then:
/// every `chunk()` bytes it sends a marker, a request of the runtime's own function
/// `mpirpc::one_way_mark`, after the calls it covers. Requests from one sender start after the
/// one-way calls sent before them, so the marker's reply says that all those calls have
/// started (left the receiver's queues); then their bytes are acknowledged. An application
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

  /// Counts `bytes` of a one-way call that has been handed to the send path for `dest` (after
  /// it, so that a marker never overtakes the calls it covers). Returns the bytes a marker
  /// must now cover, or zero when no marker is due; the caller then sends one (or, if that
  /// fails, acknowledges them itself).
  std::uint64_t sent(int dest, std::uint64_t bytes) noexcept;
  /// Bytes sent to `dest` and not yet acknowledged.
  std::uint64_t in_flight(int dest) const noexcept;
  bool has_room(int dest) const noexcept { return in_flight(dest) < _limit; }
  /// A marker's reply, or its failure (timeout, shutdown: a marker that cannot tell must not
  /// hold the window shut): its bytes are acknowledged and waiting senders are woken.
  void acknowledged(int dest, std::uint64_t bytes) noexcept;
  /// Sleeps until `dest` may have room or `until` passes (either may be spurious).
  void wait_for_room(int dest, std::chrono::steady_clock::time_point until);

  /// The sink of a marker's reply.
  std::shared_ptr<reply_sink> marker_sink(int dest, std::uint64_t bytes);

  /// The marker's function: registered on every rank alike by the receiver, which serves it
  /// with an empty reply (core/receiver.cpp).
  static constexpr const char* marker_name = "mpirpc::one_way_mark";
  static std::uint64_t marker_id() noexcept;

private:
  struct alignas(64) lane {
    std::atomic<std::uint64_t> in_flight{0};    ///< sent, not acknowledged
    std::atomic<std::uint64_t> since_marker{0}; ///< sent since the last marker
  };
  const std::uint64_t _limit;
  const std::uint64_t _chunk;
  std::unique_ptr<lane[]> _lanes;
  std::mutex _mutex;
  std::condition_variable _room;
  std::atomic<int> _waiters{0};
};

} // namespace mpirpc::detail
