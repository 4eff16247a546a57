// SPDX-License-Identifier: MIT
// The table of calls that await a reply, keyed by call id. Internal.
#pragma once

#include <atomic>
#include <chrono>
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
class pending_calls {
public:
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
  std::mutex _mutex;
  std::vector<slot> _slots;
  std::vector<std::uint32_t> _free;
  std::atomic<std::size_t> _size{0};
};

} // namespace mpirpc::detail
