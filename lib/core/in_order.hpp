// SPDX-License-Identifier: MIT
// In-order runs: the batches and one-way calls from one source run in arrival order. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "core/outbox_set.hpp"
#include "core/sender.hpp"
#include "core/server.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"
#include "core/this_thread.hpp"
#include "net/transport.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

/// A two-way request's handler in an in-order run that has not finished within this time (at
/// most twice it) no longer holds back the messages behind it: a poller hands them to a server
/// thread, as a handler about to wait on a future does itself. (A burst of calls may hold a
/// handler that waits for another call of the same burst, by user synchronization.) Not for a
/// one-way handler, which the ones behind it must follow; and long enough that a thread merely
/// preempted on an oversubscribed node (a scheduler tick is 4 ms) is rarely taken for stalled.
inline constexpr std::chrono::milliseconds stalled_run_after{5};

/// What an in-order run asks of the receiver (core/receiver implements it).
class in_order_hooks {
public:
  /// Validates and handles one received message (a batch, a request, a reply).
  virtual void dispatch(incoming& message) noexcept = 0;
  /// Handles one request of a batch; `slot_held`: the run took a handler slot for it.
  virtual void handle_request(incoming& message, const wire::header& h, bool slot_held) = 0;
  /// Handles one reply of a batch.
  virtual void handle_reply(incoming& message, const wire::header& h) = 0;
  /// Receives the out-of-line buffers of a request that waits, so that its sender is released.
  /// False if they could not be received: the request has then been answered (or, one-way,
  /// logged and counted), and counted as received if `count_received`.
  virtual bool prefetch_deferred(incoming& message, bool count_received) noexcept = 0;

protected:
  ~in_order_hooks() = default;
};

/// Runs the requests from each source that must keep their order: batches and one-way calls,
/// and any request that arrives from that source while they run. One thread at a time runs a
/// source's run; a handler about to block (a wait, or no free handler slot) hands the rest to a
/// server thread (hand_off), and a poller takes over the rest of a run whose two-way handler
/// has stalled (rescue_stalled). The replies to a batch of requests are collected into one
/// reply batch while it runs (batches_replies_to). Thread-safe (a mutex per source).
class in_order_runs {
public:
  in_order_runs(int ranks, in_order_hooks& hooks, transport& t, server& srv, sender& snd,
                outbox_set& outboxes, const session& s, statistics& counters, diagnostics& diag);
  ~in_order_runs();
  in_order_runs(const in_order_runs&) = delete;
  in_order_runs& operator=(const in_order_runs&) = delete;

  enum class route { dispatch, in_order, deferred };
  /// The leader, holding the poll baton (so that requests from one source that must run in
  /// order are taken up in the order they arrived): whether `message` runs now (dispatch),
  /// starts an in-order run (then call run()), or waits behind the run of its source
  /// (deferred: `message` has been taken).
  route route_received(incoming& message);
  /// Runs `message` and then what waits behind it; `popped`: it was taken from the waiting.
  void run(incoming& message, bool popped = false);
  /// Handles a batch (requests in order, in this thread's run if any; or replies).
  void handle_batch(incoming& message, const wire::header& h);
  /// Gives the rest of the in-order work this thread runs to a server thread, because the
  /// handler it runs is about to block (or no handler slot is free). Sends the replies
  /// collected so far first.
  void hand_off() noexcept;
  /// Whether this thread is in one of these runs.
  bool runs_here() const noexcept;
  /// This thread is in a run (runs_here): keeps `message` (a request that found no handler
  /// slot, its buffers received) as the first of the rest, and hands the rest off.
  void hand_off_with(incoming& message) noexcept;
  /// A poller's idle turn: takes the rest of every run whose handler has run for
  /// stalled_run_after and posts it to a server thread (at most once per stalled_run_after).
  void rescue_stalled(std::chrono::steady_clock::time_point now) noexcept;
  /// Whether a reply to `dest` made on this thread joins the reply batch of the batch of
  /// requests from `dest` that this thread runs.
  bool batches_replies_to(int dest) const noexcept;
  /// Sets aside this thread's reply batch for the lifetime of the returned object (a thread
  /// that waits sends its replies at once).
  class reply_batch_pause;
  /// Refuses everything waiting (the runtime stops): shutting_down error replies, or, for
  /// one-way calls, logged and counted.
  void refuse_waiting() noexcept;
  /// Messages waiting behind runs (seq_cst: queued, for quiescence).
  std::uint64_t waiting() const noexcept { return _waiting.load(std::memory_order_seq_cst); }

private:
  struct source_run;
  using run_cursor = in_order_cursor;
  using reply_target = in_order_reply_target;
  static run_cursor*& current_cursor() noexcept;
  static reply_target& current_reply_target() noexcept;
  void continue_run(int source);
  void requeue_rest_locked(source_run& order, run_cursor& cursor);

  in_order_hooks& _hooks;
  transport& _transport;
  server& _server;
  sender& _sender;
  outbox_set& _outboxes;
  const session& _session;
  statistics& _counters;
  diagnostics& _diagnostics;
  std::vector<std::unique_ptr<source_run>> _runs; ///< by source rank
  std::atomic<std::uint64_t> _waiting{0};         ///< messages waiting in _runs
  std::atomic<std::int64_t> _next_rescue_ns{0};   ///< see rescue_stalled
  friend class reply_batch_pause;
};

class in_order_runs::reply_batch_pause {
public:
  reply_batch_pause() noexcept
      : _slot(current_reply_target()), _saved(std::exchange(_slot, reply_target{})) {}
  ~reply_batch_pause() { _slot = _saved; }
  reply_batch_pause(const reply_batch_pause&) = delete;
  reply_batch_pause& operator=(const reply_batch_pause&) = delete;

private:
  reply_target& _slot;
  reply_target _saved;
};

} // namespace mpirpc::detail
