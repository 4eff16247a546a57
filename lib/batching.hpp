// SPDX-License-Identifier: MIT
// The state behind the engine's batching and in-order delivery (lib/batching.cpp). Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "engine.hpp"

namespace mpirpc::detail {

/// The requests from one source that run in arrival order: batches and one-way calls (and any
/// request that arrives while they run). One thread at a time runs them (`busy`).
struct engine::in_order {
  std::mutex mutex;
  std::atomic<bool> busy{
      false}; ///< set by the leader (holding the poll baton), cleared under mutex
  std::deque<incoming> waiting;
  in_order_cursor* runner = nullptr; ///< the thread running them now, if any (under mutex)
};

/// The in-order run this thread is in: what it has not started yet, so that the rest can be
/// handed to another thread when a handler blocks, or taken by a poller when a handler has run
/// for long (rescue_stalled_runs). The fields below `source` are guarded by the in_order's
/// mutex once the run is under way.
struct engine::in_order_cursor {
  engine* owner = nullptr;
  int source = -1;
  const char* rest = nullptr; ///< the batch's messages not started yet: [rest, end)
  const char* end = nullptr;
  incoming* whole = nullptr;   ///< a request that could not start at all (no handler slot)
  bool handed_off = false;     ///< the rest went to another thread (by this one or a poller)
  bool in_handler = false;     ///< a message of the run is being handled
  bool rescuable = false;      ///< ... and it is a two-way request (see rescue_stalled_runs)
  std::uint64_t step = 0;      ///< messages started
  std::uint64_t seen_step = 0; ///< `step` at a poller's last look (rescue_stalled_runs)
};

/// A two-way request's handler in an in-order run that has not finished within this time (at
/// most twice it) no longer holds back the messages behind it: a poller hands them to a server
/// thread, as a handler about to wait on a future does itself. (A burst of calls may hold a
/// handler that waits for another call of the same burst, by user synchronization.) Not for a
/// one-way handler, which the ones behind it must follow; and long enough that a thread merely
/// preempted on an oversubscribed node (a scheduler tick is 4 ms) is rarely taken for stalled.
inline constexpr std::chrono::milliseconds stalled_run_after{5};

} // namespace mpirpc::detail
