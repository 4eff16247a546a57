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

/// A call is batched when it is part of a burst: the calling thread's previous call went to the
/// same destination less than batch_burst ago, the thread has dispatched no message since, and
/// this many calls to the destination await their replies (counting this one), so that the
/// batch leaves before they are all answered. A lone call, and a chain of nested calls (each
/// made after a message arrived), goes at once.
inline constexpr int batch_from_outstanding = 4;
/// The batching rules' times (batch_burst, and how old a batch is before a poller sends it,
/// lib/batching.cpp) stand for "back to back" and "a moment" in optimized code, where a loop's
/// calls are 1-2 us apart. ThreadSanitizer runs the same code 5-15 times slower (a loop's calls
/// are 10-50 us apart), so there they are ten times as long: a TSan build batches what a normal
/// build batches, and the race detector checks the batched paths (in-order runs, reply batches).
#if defined(__SANITIZE_THREAD__)
inline constexpr int batch_time_scale = 10;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr int batch_time_scale = 10;
#else
inline constexpr int batch_time_scale = 1;
#endif
#else
inline constexpr int batch_time_scale = 1;
#endif
inline constexpr std::chrono::nanoseconds batch_burst{10000 * batch_time_scale};
/// Longest leader sleep while a batch is being built that nobody waits for (a thread that
/// waits sends its batches first; a spinning leader sends one once it is 20 us old).
inline constexpr std::chrono::microseconds batch_poll_interval{200};

/// Requests to one destination collected into one MPI message (a wire::kind::batch). Guarded
/// by `mutex`, which is held while the batch is sent, so that messages leave in the order they
/// were added, before any later message to the same destination.
struct engine::outbox {
  std::mutex mutex;
  std::vector<char> bytes;          ///< batch header, then each message
  std::vector<std::uint64_t> calls; ///< call id of each request in it; 0 for a one-way call
  std::atomic<std::uint32_t> count{0};
  std::chrono::steady_clock::time_point since; ///< when its first message was added
};

/// The requests from one source that run in arrival order: batches and one-way calls (and any
/// request that arrives while they run). One thread at a time runs them (`busy`).
struct engine::in_order {
  std::mutex mutex;
  std::atomic<bool> busy{false}; ///< set by the leader (under _poll_mutex), cleared under mutex
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
  incoming* whole = nullptr; ///< a request that could not start at all (no handler slot)
  bool handed_off = false;   ///< the rest went to another thread (by this one or a poller)
  bool in_handler = false;   ///< a message of the run is being handled
  bool rescuable = false;    ///< ... and it is a two-way request (see rescue_stalled_runs)
  std::uint64_t step = 0;    ///< messages started
  std::uint64_t seen_step = 0; ///< `step` at a poller's last look (rescue_stalled_runs)
};

/// A two-way request's handler in an in-order run that has not finished within this time (at
/// most twice it) no longer holds back the messages behind it: a poller hands them to a server
/// thread, as a handler about to wait on a future does itself. (A burst of calls may hold a
/// handler that waits for another call of the same burst, by user synchronization.) Not for a
/// one-way handler, which the ones behind it must follow; and long enough that a thread merely
/// preempted on an oversubscribed node (a scheduler tick is 4 ms) is rarely taken for stalled.
inline constexpr std::chrono::milliseconds stalled_run_after{5};

/// The replies to one source's batched requests, collected into one MPI message (a
/// wire::kind::batch on the reply tag). Owned by the engine, one per destination and guarded by
/// `mutex` (held while it is sent), so that a poller can send replies whose handler thread has
/// gone on to a handler that blocks: they leave when the batch that made them is done, when its
/// thread is about to wait, or once batch_delay old.
struct engine::reply_batch {
  std::mutex mutex;
  std::vector<char> bytes; ///< batch header, then each reply
  std::uint32_t count = 0;
  std::chrono::steady_clock::time_point since; ///< when its first reply was added
};

} // namespace mpirpc::detail
