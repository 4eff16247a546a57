// SPDX-License-Identifier: MIT
// Collective termination detection for a graceful shutdown and for barrier(). Internal.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "core/message_counter.hpp"
#include "core/session.hpp"
#include "net/transport.hpp"

namespace mpirpc::detail {

/// What one rank still has to do (core/quiescence).
struct busy_counts {
  std::uint64_t pending = 0; ///< its calls awaiting a reply
  std::uint64_t running = 0; ///< handlers running, one-way calls still running asynchronously
  std::uint64_t queued = 0;  ///< requests and tasks waiting for a handler or an in-order run
};

/// Why the ranks wait for quiet. Every rank of a wave must wait for the same reason: a wave
/// that pairs one rank's shutdown with another's barrier fails on every rank.
enum class quiet_purpose : std::uint64_t { shutdown = 1, barrier = 2 };

/// Repeated non-blocking all-reductions of (sent, received, busy) on the collective
/// communicator until two consecutive waves see every message received, nothing busy and the
/// same totals (the four-counter method): then no message is in flight and none can appear.
/// A fourth entry counts the ranks past their deadline: one is enough for every rank to give
/// up in the same wave; a fifth adds up the purposes. Collective; the thread that calls
/// shutdown or barrier runs it.
class quiescence {
public:
  quiescence(transport& t, const session& s, const message_counter& messages)
      : _transport(t), _session(s), _messages(messages) {}

  /// How the waiting ended: quiet, a rank passed its deadline first (`unfinished` says what
  /// every rank still had to do), or the ranks waited for different purposes.
  struct outcome {
    enum class kind { quiet, timed_out, mismatched } what = kind::quiet;
    std::string unfinished; ///< timed_out: the report; mismatched: who waited for what
  };

  /// Runs waves until quiet or until a rank passes `deadline`. Before each wave `before_wave`
  /// runs (it sends this rank's batches: batched calls count once they are sent), then `busy`
  /// reads this rank's state. Busy must be read along the pipeline (queued before running), so
  /// that a request moving from a queue to a handler between two reads is counted twice rather
  /// than not at all. Messages are counted received once handled (core/receiver), so what a
  /// message's handling sends is seen before the message is.
  outcome wait_until_quiet(quiet_purpose purpose, std::chrono::steady_clock::time_point deadline,
                           const std::function<void()>& before_wave,
                           const std::function<busy_counts()>& busy);

private:
  /// Collective: what every rank still had to do when the deadline passed.
  std::string describe_unfinished(quiet_purpose purpose, const busy_counts& mine,
                                  std::uint64_t in_flight, double elapsed_s);

  transport& _transport;
  const session& _session;
  const message_counter& _messages;
};

} // namespace mpirpc::detail
