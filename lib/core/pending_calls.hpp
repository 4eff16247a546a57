// SPDX-License-Identifier: MIT
// The table of calls that await a reply, keyed by call id. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <mpirpc/rpc.hpp>

namespace mpirpc::detail {

struct pending_call {
  std::shared_ptr<reply_sink> sink;
  std::uint64_t function_id = 0;
  int dest = -1;
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::time_point deadline; ///< max() when the call has no timeout
};

/// Slots reused through a free list; a call id is (generation << 32 | slot), so a reply for a
/// call that already timed out never matches the slot's next occupant. Thread-safe.
///
/// Also counts the calls awaiting a reply per destination, for flow control: a caller reserves
/// room for a call (try_reserve) before it inserts it, and the room is given back when the
/// entry is removed, however (reply, timeout, stop), or by unreserve if it is never inserted.
class pending_calls {
public:
  /// `ranks`: the number of destinations (ranks of the communicator).
  explicit pending_calls(int ranks);

  /// Reserves room for one call to `dest` if fewer than `limit` await a reply from it; a limit
  /// of zero or less reserves unconditionally. Lock-free.
  bool try_reserve(int dest, int limit) noexcept;
  /// Gives back a reservation whose call was never inserted.
  void unreserve(int dest) noexcept;
  /// Sleeps until room for a quarter of `limit` calls to `dest` has come back (at most
  /// limit - max(1, limit / 4) await a reply) or `until` passes (either may be spurious). Woken
  /// once per quarter rather than by every reply: a caller that floods a full window then sends
  /// a burst, which is batched, instead of one call per wake-up (W7 with rpc_async).
  /// Precondition: every waiter for `dest` passes the same `limit` (options::
  /// max_outstanding_calls); a limit of zero or less returns at once (no limit).
  void wait_for_room(int dest, int limit, std::chrono::steady_clock::time_point until);
  /// Calls to `dest` that hold a reservation.
  int outstanding(int dest) const noexcept {
    return _per_dest[static_cast<std::size_t>(dest)].load(std::memory_order_relaxed);
  }

  /// Inserts a call whose destination's room was reserved.
  std::uint64_t insert(pending_call call);
  /// Removes and returns the call, or nothing if the id is unknown (late or bogus reply).
  std::optional<pending_call> take(std::uint64_t id);
  /// Removes and returns every call whose deadline is at or before `now`.
  std::vector<pending_call> take_expired(std::chrono::steady_clock::time_point now);
  std::vector<pending_call> take_all();
  std::size_t size() const noexcept { return _size.load(std::memory_order_seq_cst); }

private:
  struct slot {
    std::uint32_t generation = 0;
    bool used = false;
    pending_call call;
  };
  void released(int dest) noexcept;

  std::mutex _mutex;
  std::vector<slot> _slots;
  std::vector<std::uint32_t> _free;
  std::atomic<std::size_t> _size{0};

  std::unique_ptr<std::atomic<int>[]> _per_dest;
  std::unique_ptr<std::atomic<int>[]> _wake_at;      ///< per destination: wake room waiters at this
  std::unique_ptr<std::atomic<int>[]> _room_waiters; ///< per destination
  std::mutex _room_mutex;
  std::condition_variable _room_cv;
};

} // namespace mpirpc::detail
