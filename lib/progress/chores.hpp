// SPDX-License-Identifier: MIT
// What a thread that polls owes when it found no message. Internal.
#pragma once

#include <chrono>
#include <utility>

#include "core/call_timeouts.hpp"
#include "core/outbox_set.hpp"

namespace mpirpc::detail {

/// Failing expired calls and sending batches at least batch_delay old: the chores that the
/// leader and every waiting thread run after a poll that found nothing, through one call.
///
/// Either may block in MPI: a batch beyond the eager limit, or what a timed-out call's
/// continuation sends, waits until its receiver takes it. So a poller steps out of its role
/// while it runs them (the leader gives up the baton, a waiter stops counting as one), and
/// another thread of the rank can take over receiving meanwhile: two leaders flushing batches
/// to each other with a small eager limit deadlocked, and so did two ranks whose waiters
/// flushed reply batches to each other while their leaders looked only for requests.
class chores {
public:
  chores(call_timeouts& timeouts, outbox_set& outboxes)
      : _timeouts(timeouts), _outboxes(outboxes) {}

  /// Whether there is something to run at `now`.
  bool due(std::chrono::steady_clock::time_point now) const noexcept {
    return _timeouts.due(now) || _outboxes.any();
  }

  /// If something is due at `now`: calls `step_out()`, runs it, and returns `step_in()` (the
  /// leader: whether it got the baton back). Otherwise returns true at once.
  template <class StepOut, class StepIn>
  bool run(std::chrono::steady_clock::time_point now, StepOut&& step_out, StepIn&& step_in) {
    if (!due(now)) return true;
    std::forward<StepOut>(step_out)();
    _timeouts.expire(now);
    _outboxes.flush_aged(now);
    return std::forward<StepIn>(step_in)();
  }

private:
  call_timeouts& _timeouts;
  outbox_set& _outboxes;
};

} // namespace mpirpc::detail
