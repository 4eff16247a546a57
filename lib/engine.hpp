// SPDX-License-Identifier: MIT
// The progress engine of one rank: threads, pending calls, dispatch, quiescence. Internal.
// lib/README.md describes how its threads cooperate.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <mpirpc/rpc.hpp>
#include <mpirpc/runtime.hpp>

#include "core/call_timeouts.hpp"
#include "core/message_counter.hpp"
#include "core/outbox_set.hpp"
#include "core/pending_calls.hpp"
#include "core/registry.hpp"
#include "core/replies.hpp"
#include "core/sender.hpp"
#include "core/server.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"
#include "net/segment_stream.hpp"
#include "net/transport.hpp"
#include "net/wire.hpp"
#include "progress/chores.hpp"
#include "progress/poll_baton.hpp"
#include "rref/rref_table.hpp"

namespace mpirpc::detail {

/// Sees a reply that names no pending call before it is dropped as late; true if it took the
/// reply. Null in production: only the test seam (tests/support/seam) installs one, to
/// receive the replies to the raw messages it sends.
using late_reply_hook = bool (*)(const incoming& message);
extern std::atomic<late_reply_hook> g_late_reply_hook;

class engine final : control_link, sender_hooks, server_hooks {
public:
  /// `spin_allowed`: whether pollers may spin while traffic flows (see options::busy_poll).
  /// `oversubscribed`: whether this node runs more of the ranks than it has cores (see wait()).
  engine(const options& opts, std::unique_ptr<transport> t, std::vector<worker_info> workers,
         bool spin_allowed, bool oversubscribed = false);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  void start_threads();

  // ---- identity
  const worker_info& self() const noexcept { return _session.self(); }
  const std::vector<worker_info>& workers() const noexcept { return _session.workers(); }
  /// The rank of a destination; throws unknown_worker_error.
  int resolve(const destination& to) const { return _session.resolve(to); }

  // ---- calls (any thread)
  /// Sends a request (core/sender): false if it timed out waiting for room and was never
  /// sent (`sink` has the error).
  bool send_request(int dest, const function_entry& fn, std::uint16_t flags,
                    request_buffers& request, std::shared_ptr<reply_sink> sink, double timeout_s) {
    return _sender.send_request(dest, fn, flags, request, std::move(sink), timeout_s);
  }
  /// Sends a one-way request (rpc_ff), in the order of the calls (core/sender).
  void send_one_way(int dest, const function_entry& fn, request_buffers& request) {
    _sender.send_one_way(dest, fn, request);
  }
  /// Sends every batch still being built. Called before a thread waits, by pollers for batches
  /// older than batch_delay, and by quiesce().
  void flush_outboxes() noexcept { _outboxes.flush_all(); }
  /// False only if sending the value failed part way: MPI may then still read its buffers.
  bool send_reply_value(reply_token& token, save_fn save, const void* value) noexcept {
    return _replies.send_value(token, save, value);
  }
  void send_reply_error(reply_token& token, std::exception_ptr error) noexcept {
    _replies.send_error(token, std::move(error));
  }
  void hold_reply(reply_token& token) noexcept { _replies.hold(token); }

  /// Runs `task` on a server thread (a handler slot), after the requests already queued.
  /// Dropped unrun if the engine stops first.
  void post(std::function<void()> task) { _server.post(std::move(task)); }

  /// The remote references of this session.
  rref_table& rrefs() noexcept { return *_rrefs; }

  void log(const std::string& line) const noexcept { _session.log(line); }

  /// Blocks until `state` is done, polling for replies meanwhile.
  void wait(future_state_base& state);

  // ---- lifecycle (the thread that calls shutdown)
  /// Collective: returns once no call is in flight on any rank. Serves meanwhile. If any
  /// rank passes `deadline` first, every rank gives up in the same round and returns what was
  /// still busy where (worker names and counts); an empty string means quiet.
  std::string quiesce(std::chrono::steady_clock::time_point deadline =
                          std::chrono::steady_clock::time_point::max());
  /// Stops accepting calls, fails every outstanding call with shutdown_error, stops threads
  /// and frees the communicators.
  void stop(const std::string& reason);

  runtime_stats stats() const;

  /// True on the engine's own background threads (handlers run there).
  static bool on_engine_thread() noexcept;

private:
  friend struct testing_access; // the raw-message test seam (tests/support/seam)
  // Batching and in-order delivery (lib/batching.cpp).
  struct in_order; ///< requests from one source that must run in arrival order
  struct in_order_cursor;
  enum class route { dispatch, in_order, deferred };
  /// control_link: sends a message on the transport as one counted control message.
  void send_control(int dest, int tag, const char* data, std::size_t size) override;
  // sender_hooks
  bool batches_replies_to(int dest) const noexcept override;
  void batch_started() noexcept override;
  void call_sent() noexcept override;
  void before_waiting_for_room() noexcept override;
  void request_dropped() noexcept override;
  /// Leader, holding the poll baton: whether a received message runs now, in order, or waits
  /// behind the requests from its source that run already.
  route route_received(incoming& message);
  /// Runs `message` and then what waits behind it; `popped`: it was taken from `waiting`.
  void run_in_order(incoming& message, bool popped = false);
  /// Receives the out-of-line buffers of a request that waits behind an in-order run, so that
  /// its sender is released (leader, holding the poll baton; rare: a large-argument request).
  /// False if they could not be received: the request has then been answered (or, one-way,
  /// logged and counted), and counted as received if `count_received`.
  bool prefetch_deferred(incoming& message, bool count_received = true) noexcept;
  void continue_in_order(int source);
  /// Takes the rest of every in-order run whose handler has run for stalled_run_after and
  /// posts it to a server thread (a poller's idle turn, at most once per stalled_run_after).
  void rescue_stalled_runs(std::chrono::steady_clock::time_point now) noexcept;
  /// Moves the unstarted rest of `cursor`'s batch (or its request that found no slot) to the
  /// front of `order.waiting`; the caller holds order.mutex.
  void requeue_rest_locked(in_order& order, in_order_cursor& cursor);
  /// Gives the rest of the in-order work this thread runs to a server thread, because the
  /// handler it runs is about to block (or no handler slot is free).
  void hand_off_in_order() noexcept;
  void handle_batch(incoming& message, const wire::header& h);
  void refuse_in_order() noexcept;
  /// This thread's in-order run and reply batch, if any (thread-local; lib/batching.cpp).
  static in_order_cursor*& current_cursor() noexcept;
  /// The engine and source of the batch of requests this thread runs (its replies are
  /// batched), if any.
  struct reply_target {
    const engine* owner = nullptr;
    int dest = -1;
  };
  static reply_target& current_reply_target() noexcept;

  void thread_main();
  void lead();
  void run_queued() { _server.run_queued(); }
  // server_hooks
  void run_queued_request(incoming& message) override;
  void work_posted() noexcept override;
  void dispatch(incoming& message) noexcept;
  /// `slot_held`: the caller has taken a handler slot for this request already.
  void handle_request(incoming& message, const wire::header& h, bool slot_held = false);
  void run_request(const incoming& message, const wire::header& h, const function_entry& fn);
  void handle_reply(incoming& message, const wire::header& h);
  std::exception_ptr decode_error_reply(const char* payload, std::size_t size,
                                        const pending_call& call) const;
  void refuse_queued() noexcept;
  static std::string function_name(std::uint64_t id) { return session::function_name(id); }

  // configuration and identity
  const int _num_handlers;
  const std::chrono::microseconds _idle_poll_interval;
  std::unique_ptr<transport> _transport;
  session _session;
  const std::chrono::microseconds _spin_window; ///< zero: never spin
  const bool _oversubscribed; ///< more ranks on this node than cores (paces waiters, wait())

  pending_calls _pending;
  std::unique_ptr<rref_table> _rrefs;

  // termination-detection counters (messages on the control communicator)
  message_counter _messages;

  statistics _stats;
  diagnostics _diagnostics{_session, _stats};

  // batching (core/outbox_set) and in-order delivery (lib/batching.cpp)
  outbox_set _outboxes;
  std::vector<std::unique_ptr<in_order>> _in_order; ///< by source rank
  std::atomic<std::uint64_t> _ordered_waiting{0};   ///< messages waiting in _in_order
  std::atomic<std::int64_t> _next_rescue_ns{0};     ///< see rescue_stalled_runs

  // the send path (framing, flow control, admission), and the replies of this rank's handlers
  fork_lending _lending; ///< what messages borrow from remote references
  sender _sender;
  replies _replies;

  // handler slots and the requests and tasks waiting for one
  server _server;

  // what pollers owe after an empty poll: timeouts and aged batches
  call_timeouts _timeouts;
  chores _chores;

  // leader/followers
  std::vector<std::thread> _threads;
  std::atomic<bool> _stop_threads{false};
  poll_baton _baton; ///< who polls (leader, standby, followers), and the leader's sleep
  std::atomic<int> _spinning_waiters{0};
  std::atomic<int> _waiters{0}; ///< threads in wait(), each polling for replies itself

  std::atomic<bool> _stopped{false};
};

/// The engine of the running session; throws shutdown_error when none runs (runtime.cpp).
engine& running_engine();

} // namespace mpirpc::detail
