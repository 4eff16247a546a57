// SPDX-License-Identifier: MIT
// The progress engine of one rank: the composition root that owns the parts of net/, core/
// and progress/ and wires their hooks (services such as rref/ are built on it, runtime.cpp); its
// own work is the background threads' loop (the leader's polls), a waiting thread's polls, and
// stopping. Internal. lib/README.md is the map.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <mpirpc/rpc.hpp>
#include <mpirpc/runtime.hpp>

#include "core/call_timeouts.hpp"
#include "core/lending.hpp"
#include "core/message_counter.hpp"
#include "core/outbox_set.hpp"
#include "core/pending_calls.hpp"
#include "core/quiescence.hpp"
#include "core/receiver.hpp"
#include "core/registry.hpp"
#include "core/replies.hpp"
#include "core/sender.hpp"
#include "core/server.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"
#include "core/waiting.hpp"
#include "net/segment_stream.hpp"
#include "net/transport.hpp"
#include "net/wire.hpp"
#include "progress/chores.hpp"
#include "progress/poll_baton.hpp"

namespace mpirpc::detail {

class engine final : public state_waiter, control_link, sender_hooks, server_hooks {
public:
  /// `spin_allowed`: whether pollers may spin while traffic flows (see options::busy_poll).
  /// `oversubscribed`: whether this node runs more of the ranks than it has cores (see wait()).
  /// `lending`: what replies being built borrow (the rref service's fork log).
  engine(const options& opts, std::unique_ptr<transport> t, std::vector<worker_info> workers,
         bool spin_allowed, bool oversubscribed, lending_log& lending);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Who serves the requests flagged on_rref or creates_rref and the service functions (the
  /// rref service); before start_threads.
  void serve_flagged_with(flagged_request_handler& handler) noexcept {
    _receiver.serve_flagged_with(handler);
  }
  void start_threads();

  // ---- the parts that services above the engine build on
  const session& identity() const noexcept { return _session; }
  sender& outgoing() noexcept { return _sender; }
  server& tasks() noexcept { return _server; }

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

  void log(const std::string& line) const noexcept { _session.log(line); }

  /// Blocks until `state` is done, polling for replies meanwhile.
  void wait(future_state_base& state) override;

  // ---- lifecycle (the thread that calls shutdown or barrier)
  /// Collective: returns once no call is in flight on any rank. Serves meanwhile. If any
  /// rank passes `deadline` first, every rank gives up in the same round and learns what was
  /// still busy where (worker names and counts). Every rank must quiesce for the same purpose.
  quiescence::outcome quiesce(quiet_purpose purpose,
                              std::chrono::steady_clock::time_point deadline =
                                  std::chrono::steady_clock::time_point::max());
  /// Stops accepting calls, fails every outstanding call with shutdown_error, stops threads
  /// and frees the communicators.
  void stop(const std::string& reason);
  /// stop() unless the engine has stopped already.
  void stop_if_running(const std::string& reason) {
    if (!_stopped.load()) stop(reason);
  }

  /// The engine's counters (the rref figures are left at zero: the rref service adds them).
  runtime_stats stats() const;

  /// True on the engine's own background threads (handlers run there).
  static bool on_engine_thread() noexcept;

private:
  friend struct testing_access; // the raw-message test seam (tests/support/seam)
  /// control_link: sends a message on the transport as one counted control message.
  void send_control(int dest, int tag, const char* data, std::size_t size) override;
  // sender_hooks
  bool batches_replies_to(int dest) const noexcept override;
  void batch_started() noexcept override;
  void call_sent() noexcept override;
  void thread_main();
  void lead();
  void run_queued() { _server.run_queued(); }
  // server_hooks
  void run_queued_request(incoming& message) override;
  void work_posted() noexcept override;
  static std::string function_name(std::uint64_t id) { return session::function_name(id); }

  // configuration and identity
  const int _num_handlers;
  const std::chrono::microseconds _idle_poll_interval;
  std::unique_ptr<transport> _transport;
  session _session;
  const std::chrono::microseconds _spin_window; ///< zero: never spin
  const bool _oversubscribed; ///< more ranks on this node than cores (paces waiters, wait())

  pending_calls _pending;

  // termination-detection counters (messages on the control communicator)
  message_counter _messages;

  statistics _stats;
  diagnostics _diagnostics{_session, _stats};

  // batching (core/outbox_set)
  one_way_window _one_way; ///< the sender's window of one-way calls, counted by the outboxes
  outbox_set _outboxes;

  // the send path (framing, flow control, admission), and the replies of this rank's handlers
  sender _sender;
  replies _replies; ///< lends through the lending_log it was given

  // handler slots and the requests and tasks waiting for one; the receive path (with the
  // in-order runs)
  server _server;
  receiver _receiver;

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
