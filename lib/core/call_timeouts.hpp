// SPDX-License-Identifier: MIT
// Failing the calls whose deadline has passed. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "core/pending_calls.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"

namespace mpirpc::detail {

/// How often the pending calls are scanned for expired ones.
inline constexpr std::chrono::milliseconds timeout_scan_interval{1};

/// Scans the pending calls for expired ones at most once per timeout_scan_interval
/// and fails them with timeout_error. Thread-safe: of the pollers that find a scan due at the
/// same time, one scans. The sinks' continuations run on the scanning thread, inside a
/// progress_callback_scope.
class call_timeouts {
public:
  call_timeouts(pending_calls& pending, const session& s, statistics& counters)
      : _pending(pending), _session(s), _counters(counters) {}

  /// Whether a scan would run at `now` (calls are out and a scan is due).
  bool due(std::chrono::steady_clock::time_point now) const noexcept {
    const std::int64_t t =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    return t >= _next_scan_ns.load(std::memory_order_relaxed) && _pending.size() > 0;
  }
  /// Fails the calls expired at `now`, if a scan is due and no other thread took it.
  void expire(std::chrono::steady_clock::time_point now) noexcept;

private:
  pending_calls& _pending;
  const session& _session;
  statistics& _counters;
  std::atomic<std::int64_t> _next_scan_ns{0};
};

} // namespace mpirpc::detail
