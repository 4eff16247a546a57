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
inline constexpr std::chrono::nanoseconds batch_burst{10000};
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
};

/// The in-order run this thread is in: what it has not started yet, so that the rest can be
/// handed to another thread when a handler blocks.
struct engine::in_order_cursor {
  engine* owner = nullptr;
  int source = -1;
  const char* rest = nullptr; ///< the batch's messages not started yet: [rest, end)
  const char* end = nullptr;
  incoming* whole = nullptr; ///< a request that could not start at all (no handler slot)
  bool handed_off = false;
};

/// The replies made while one received batch of requests runs: sent as one batch when it is
/// done, or earlier when a handler is about to block.
struct engine::reply_batch {
  engine* owner = nullptr;
  int dest = -1;
  std::vector<char> bytes;
  std::uint32_t count = 0;
};

} // namespace mpirpc::detail
