// SPDX-License-Identifier: MIT
#include "core/call_timeouts.hpp"

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <mpirpc/detail/future_state.hpp>
#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

void call_timeouts::expire(std::chrono::steady_clock::time_point t) noexcept {
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::int64_t due = _next_scan_ns.load(std::memory_order_relaxed);
  if (now < due) return;
  const std::int64_t next =
      now + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout_scan_interval).count();
  if (!_next_scan_ns.compare_exchange_strong(due, next)) return;
  if (_pending.size() == 0) return;
  std::vector<pending_call> expired = _pending.take_expired(t);
  if (expired.empty()) return;
  progress_callback_scope scope;
  for (pending_call& call : expired) {
    _counters.timeouts.fetch_add(1, std::memory_order_relaxed);
    const double elapsed = std::chrono::duration<double>(t - call.start).count();
    const double limit = std::chrono::duration<double>(call.deadline - call.start).count();
    char text[64];
    std::snprintf(text, sizeof text, "%.3f s (timeout %.3f s)", elapsed, limit);
    call.sink->on_error(std::make_exception_ptr(
        timeout_error("mpirpc: call to '" + session::function_name(call.function_id) + "' on " +
                      _session.name_of(call.dest) + " timed out after " + text)));
  }
}

} // namespace mpirpc::detail
