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

#include "pending_calls.hpp"
#include "registry.hpp"
#include "rref_table.hpp"
#include "transport.hpp"
#include "wire.hpp"

namespace mpirpc::detail {

class engine {
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
  const worker_info& self() const noexcept { return _workers[static_cast<std::size_t>(_rank)]; }
  const std::vector<worker_info>& workers() const noexcept { return _workers; }
  /// The rank of a destination; throws unknown_worker_error.
  int resolve(const destination& to) const;

  // ---- calls (any thread)
  /// Sends a request for `fn` with the given wire flags (see rpc.hpp's on_rref/creates_rref).
  /// False if the call timed out waiting for room and was never sent (`sink` has the error).
  bool send_request(int dest, const function_entry& fn, std::uint16_t flags,
                    request_buffers& request, std::shared_ptr<reply_sink> sink, double timeout_s);
  /// Sends a one-way request (rpc_ff): batched with this rank's other messages to `dest`, in
  /// the order of the calls (lib/batching.cpp).
  void send_one_way(int dest, const function_entry& fn, request_buffers& request);
  /// Sends every batch still being built. Called before a thread waits, by pollers for batches
  /// older than batch_delay, and by quiesce().
  void flush_outboxes() noexcept;
  /// False only if sending the value failed part way: MPI may then still read its buffers.
  bool send_reply_value(reply_token& token, save_fn save, const void* value) noexcept;
  void send_reply_error(reply_token& token, std::exception_ptr error) noexcept;
  void hold_reply(reply_token& token) noexcept;

  /// Runs `task` on a server thread (a handler slot), after the requests already queued.
  /// Dropped unrun if the engine stops first.
  void post(std::function<void()> task);

  /// The remote references of this session.
  rref_table& rrefs() noexcept { return *_rrefs; }

  void log(const std::string& line) const noexcept;

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
  /// How long a waiter that found no reply sleeps before it polls again, `waited` into its
  /// wait (after its spin): paced_sleep, and on an oversubscribed node at least an eighth of
  /// `waited`.
  std::chrono::microseconds waiter_sleep(std::chrono::steady_clock::duration waited) const noexcept;
  friend struct testing_access; // lib/testing.cpp: the raw-message test seam
  struct segment_stream;
  class admission;
  // Batching and in-order delivery (lib/batching.cpp).
  struct outbox;   ///< requests to one destination, built into one batch
  struct in_order; ///< requests from one source that must run in arrival order
  struct in_order_cursor;
  struct reply_batch;
  enum class route { dispatch, in_order, deferred };
  /// Sends a message built in `buffer` (header filled in, no segments) to `dest`, batched if
  /// `may_batch` or if a batch to `dest` is being built (order is kept either way).
  void send_or_batch(int dest, std::vector<char>& buffer, std::uint64_t call_id, bool may_batch);
  /// Sends the outbox's batch; the caller holds its mutex. Calls of a batch that could not be
  /// sent are failed by the caller after unlocking (`failed`).
  void flush_locked(int dest, outbox& box, std::vector<std::uint64_t>& failed,
                    std::exception_ptr& failure) noexcept;
  void fail_unsent(const std::vector<std::uint64_t>& ids, const std::exception_ptr& failure,
                   int dest) noexcept;
  void flush_outbox(int dest) noexcept;
  void flush_aged_outboxes(std::chrono::steady_clock::time_point now) noexcept;
  /// Sends a message on the raw transport as one counted control message (no segments).
  void send_counted(int dest, int tag, const char* data, std::size_t size);
  /// Seals `bytes` (a batch header's room, then `count` >= 2 messages) and sends it, counted in
  /// batches_sent and messages_batched before it leaves.
  void send_batch(int dest, int tag, std::vector<char>& bytes, std::uint32_t count);
  /// Leader, holding _poll_mutex: whether a received message runs now, in order, or waits
  /// behind the requests from its source that run already.
  route route_received(incoming& message);
  /// Runs `message` and then what waits behind it; `popped`: it was taken from `waiting`.
  void run_in_order(incoming& message, bool popped = false);
  /// Receives the out-of-line buffers of a request that waits behind an in-order run, so that
  /// its sender is released (leader, under _poll_mutex; rare: a large-argument request).
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
  /// Sends the replies collected for `dest` (none: nothing).
  void flush_reply_batch(int dest) noexcept;
  void flush_reply_batch_locked(int dest, reply_batch& batch) noexcept;
  /// Adds a reply (header filled in, no segments) to the reply batch for `dest` if this thread
  /// runs a batch of requests from `dest`; false if the reply must be sent on its own.
  bool append_to_reply_batch(int dest, const std::vector<char>& message);
  /// A one-way call's failure: logged and counted, since nobody waits for it.
  void one_way_failed(const std::string& what) noexcept;
  void refuse_in_order() noexcept;
  void drop_outboxes() noexcept;
  void wake_idle_leader() noexcept;
  /// Whether a caller drives this rank's progress now (see lead()): a thread waits for a
  /// reply, or a thread of the user's sent a call within caller_window of `now`.
  bool caller_drives(std::chrono::steady_clock::time_point now) const noexcept;
  /// Whether a request to `dest` now is part of a burst to a busy destination (then batched).
  bool in_burst(int dest, std::chrono::steady_clock::time_point now) noexcept;
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
  bool follow();
  void lead();
  void run_queued();
  bool try_take_slot() noexcept;
  void dispatch(incoming& message) noexcept;
  /// `slot_held`: the caller has taken a handler slot for this request already.
  void handle_request(incoming& message, const wire::header& h, bool slot_held = false);
  void run_request(const incoming& message, const wire::header& h, const function_entry& fn);
  void handle_reply(incoming& message, const wire::header& h);
  void send_error_reply(int dest, std::uint64_t call_id, std::uint64_t function_id,
                        wire::error_code code, const std::string& type, const std::string& message,
                        const std::string& origin) noexcept;
  /// `now`: the caller's reading of the clock, if it has one (a request's start), else epoch.
  void send_message(int dest, int tag, std::vector<char>& buffer, wire::kind kind,
                    std::uint64_t call_id, std::uint64_t function_id,
                    const std::vector<segment>& segments, std::uint16_t flags = 0,
                    std::chrono::steady_clock::time_point now = {});
  /// Flow control: waits until a call to `dest` fits under options::max_outstanding_calls and
  /// reserves its room; false if `deadline` passes first. Throws shutdown_error if stopping.
  bool wait_for_room(int dest, std::chrono::steady_clock::time_point deadline);
  std::exception_ptr decode_error_reply(const char* payload, std::size_t size,
                                        const pending_call& call) const;
  /// Whether check_timeouts would scan the table now (calls are out and a scan is due).
  bool timeouts_due(std::chrono::steady_clock::time_point now) const noexcept;
  /// Whether a poller has sends or timeouts to run now: timeouts_due, or a batch is being
  /// built. Either may block in MPI (see lead() and wait()).
  bool sends_or_timeouts_due(std::chrono::steady_clock::time_point now) const noexcept;
  /// Fails expired calls; scans the table at most once per timeout_scan_interval.
  void check_timeouts(std::chrono::steady_clock::time_point now) noexcept;
  void refuse_queued() noexcept;
  /// Collective: what every rank still had to do when a shutdown's deadline passed.
  std::string describe_unfinished(const std::uint64_t (&mine)[4], std::uint64_t in_flight,
                                  double elapsed_s);
  std::string function_name(std::uint64_t id) const;

  // configuration and identity
  const int _num_handlers;
  const int _max_outstanding; ///< per destination; zero: no limit
  const double _default_timeout_s;
  const std::chrono::microseconds _idle_poll_interval;
  std::unique_ptr<transport> _transport;
  std::vector<worker_info> _workers;
  std::unordered_map<std::string, int> _rank_of_name;
  int _rank;
  const std::chrono::microseconds _spin_window; ///< zero: never spin
  const bool _oversubscribed; ///< more ranks on this node than cores (paces waiters, wait())

  pending_calls _pending;
  std::unique_ptr<rref_table> _rrefs;

  // termination-detection counters (messages on the control communicator)
  std::atomic<std::uint64_t> _sent{0};
  std::atomic<std::uint64_t> _received{0};
  std::atomic<int> _running_handlers{0};
  std::atomic<int> _held_replies{0};

  // statistics
  std::atomic<std::uint64_t> _requests_sent{0};
  std::atomic<std::uint64_t> _requests_served{0};
  std::atomic<std::uint64_t> _replies_received{0};
  std::atomic<std::uint64_t> _late_replies{0};
  std::atomic<std::uint64_t> _malformed{0};
  std::atomic<std::uint64_t> _timeouts{0};
  std::atomic<std::uint64_t> _calls_delayed{0};
  std::atomic<std::uint64_t> _one_way_sent{0};
  std::atomic<std::uint64_t> _one_way_run{0};
  std::atomic<std::uint64_t> _one_way_failed{0};
  std::atomic<std::uint64_t> _batches_sent{0};
  std::atomic<std::uint64_t> _messages_batched{0};

  // batching (lib/batching.cpp)
  std::vector<std::unique_ptr<outbox>> _outboxes;   ///< by destination rank
  std::vector<std::unique_ptr<in_order>> _in_order; ///< by source rank
  std::atomic<int> _outboxes_filled{0};             ///< outboxes holding a batch
  std::vector<std::unique_ptr<reply_batch>> _reply_batches; ///< by destination rank
  std::atomic<int> _reply_batches_filled{0};        ///< reply batches holding replies
  std::atomic<std::uint64_t> _ordered_waiting{0};   ///< messages waiting in _in_order
  std::atomic<std::int64_t> _next_rescue_ns{0};     ///< see rescue_stalled_runs
  std::atomic<int> _held_one_way{0}; ///< one-way async-execution calls not yet complete

  // requests waiting for a handler slot
  std::mutex _queue_mutex;
  std::deque<incoming> _queue;
  std::deque<std::function<void()>> _tasks; ///< posted work, run like queued requests
  std::atomic<int> _queued{0};
  std::atomic<bool> _warned_pool_exhausted{false};

  // leader/followers
  std::vector<std::thread> _threads;
  std::atomic<bool> _stop_threads{false};
  std::mutex _poll_mutex; ///< held by the thread that polls MPI for any message
  std::atomic<std::uint64_t> _dispatch_seq{0};
  std::atomic<bool> _leader_idle{false};
  std::atomic<std::int64_t> _last_call_ns{0};       ///< when this rank last sent a request
  /// When a thread that is not one of this engine's sent a request or a one-way call last.
  std::atomic<std::int64_t> _last_user_call_ns{0};
  std::atomic<std::int64_t> _leader_wakes_at_ns{0}; ///< when the sleeping leader looks again
  std::mutex _leader_sleep_mutex;
  std::condition_variable _leader_cv;
  std::mutex _follow_mutex;
  std::condition_variable _follow_cv;
  std::condition_variable _standby_cv;
  bool _has_standby = false;
  std::atomic<bool> _standby_deep{false};
  std::atomic<int> _spinning_waiters{0};
  std::atomic<int> _waiters{0}; ///< threads in wait(), each polling for replies itself

  // timeouts
  std::atomic<std::int64_t> _next_timeout_check_ns{0};

  // call admission
  std::atomic<bool> _accepting{true};
  std::atomic<int> _callers_inside{0};
  std::atomic<bool> _stopped{false};
};

/// The engine of the running session; throws shutdown_error when none runs (runtime.cpp).
engine& running_engine();

} // namespace mpirpc::detail
