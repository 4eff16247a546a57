// SPDX-License-Identifier: MIT
// The send path: framing, limits, batching or not, flow control, admission. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <mpirpc/rpc.hpp>

#include "core/admission.hpp"
#include "core/message_counter.hpp"
#include "core/one_way_window.hpp"
#include "core/outbox_set.hpp"
#include "core/pending_calls.hpp"
#include "core/registry.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"
#include "net/transport.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

/// A call is batched when it is part of a burst: the calling thread's previous call went to the
/// same destination less than batch_burst ago, the thread has dispatched no message since, and
/// this many calls to the destination await their replies (counting this one), so that the
/// batch leaves before they are all answered. A lone call, and a chain of nested calls (each
/// made after a message arrived), goes at once.
inline constexpr int batch_from_outstanding = 4;
/// Scaled under ThreadSanitizer (batch_time_scale, core/outbox_set.hpp).
inline constexpr std::chrono::nanoseconds batch_burst{10000 * batch_time_scale};

/// What the sender tells the layers above it, and asks of them. The engine implements it.
class sender_hooks {
public:
  /// Whether a reply to `dest` made on this thread joins a reply batch (the thread runs a
  /// batch of requests from `dest`; core/in_order).
  virtual bool batches_replies_to(int dest) const noexcept = 0;
  /// A request batch was started: it should be sent within pacing's batch_poll_interval.
  virtual void batch_started() noexcept = 0;
  /// A two-way call was sent: its reply should be noticed soon.
  virtual void call_sent() noexcept = 0;

protected:
  ~sender_hooks() = default;
};

/// Sends this rank's messages (any thread): requests, one-way calls, replies. Control messages
/// without out-of-line buffers go through the outbox_set (batched, or at once), every other
/// through the transport, counted by the message counter. Thread-safe.
class sender {
public:
  struct limits {
    int max_outstanding = 0;             ///< per destination; zero: no limit
    double default_timeout_s = 0;        ///< options::rpc_timeout; zero: none
    std::uint64_t max_one_way_bytes = 0; ///< per destination; zero: no limit
  };
  /// `one_way`: the window of one-way calls, shared with `outboxes` (which count what leaves
  /// in batches); its limit is limits::max_one_way_bytes.
  sender(transport& t, message_counter& messages, outbox_set& outboxes, pending_calls& pending,
         const session& s, statistics& counters, sender_hooks& hooks, limits l,
         one_way_window& one_way);

  admission_gate& gate() noexcept { return _gate; }

  /// Fills in the header of `buffer` (room for it, then the payload), checks the limits before
  /// anything is sent, and sends it to `dest` with its `segments` (batched where it may be,
  /// see sender_hooks and the burst rule). `now`: the caller's reading of the clock, if it has
  /// one (a request's start), else epoch. Throws serialization_error (a limit) or mpi_error.
  void send_message(int dest, int tag, std::vector<char>& buffer, wire::kind kind,
                    std::uint64_t call_id, std::uint64_t function_id,
                    const std::vector<segment>& segments, std::uint16_t flags = 0,
                    std::chrono::steady_clock::time_point now = {});
  /// Sends a request for `fn` with the given wire flags (see rpc.hpp's on_rref/creates_rref),
  /// its reply to go to `sink`. Waits for room under max_outstanding (not on the progress
  /// path). False if the call timed out waiting for room and was never sent (`sink` has the
  /// error). Throws shutdown_error once the gate is closed.
  bool send_request(int dest, const function_entry& fn, std::uint16_t flags,
                    request_buffers& request, std::shared_ptr<reply_sink> sink, double timeout_s);
  /// Sends a one-way request (rpc_ff): batched with this rank's other messages to `dest`, in
  /// the order of the calls. An application thread first waits while max_one_way_bytes of
  /// earlier one-way calls to `dest` have not started there (one_way_window); throws
  /// timeout_error if that lasts the default timeout, shutdown_error once the gate is closed.
  void send_one_way(int dest, const function_entry& fn, request_buffers& request);
  /// Sends an error reply; a failure is logged.
  void send_error_reply(int dest, std::uint64_t call_id, std::uint64_t function_id,
                        wire::error_code code, const std::string& type, const std::string& message,
                        const std::string& origin) noexcept;

  /// When this rank last sent a request (relaxed, for pacing).
  std::chrono::steady_clock::time_point last_call() const noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(_last_call_ns.load(std::memory_order_relaxed)));
  }
  /// When a thread that is not one of the engine's sent a request or one-way call last.
  std::chrono::steady_clock::time_point last_user_call() const noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(_last_user_call_ns.load(std::memory_order_relaxed)));
  }
  /// What this thread sends next follows a message it received: not a burst.
  static void message_received() noexcept;
  /// Whether an application thread sleeps in wait_for_room now (relaxed).
  bool waiting_for_room() const noexcept {
    return _room_waiters.load(std::memory_order_relaxed) > 0;
  }
  /// Whether an answer is awaited: a call's reply, or, while a thread waits for the one-way
  /// window, an acknowledgement (relaxed, for pacing).
  bool replies_awaited() const noexcept {
    return _pending.size() > 0 || _one_way_waiters.load(std::memory_order_relaxed) > 0;
  }

  // ---- the one-way window's messages (one_way_window), served by the receiver
  /// A marker from `source` has come up in order: the one-way calls it sent before it have
  /// started here. Answers with an acknowledgement of `bytes`, a one-way message itself.
  void acknowledge_one_way(int source, std::uint64_t bytes) noexcept;
  /// An acknowledgement from `source`: `bytes` of this rank's one-way calls to it started.
  void one_way_acknowledged(int source, std::uint64_t bytes) noexcept {
    _one_way.acknowledged(source, bytes);
  }

private:
  bool wait_for_room(int dest, std::chrono::steady_clock::time_point deadline);
  /// Waits until one_way_window has room for `dest` (an application thread's one-way call).
  void wait_for_one_way_room(int dest);
  /// Sends the marker due to `dest`, if any (one_way_window::take_due_marker).
  void send_due_marker(int dest) noexcept;
  /// Sends a marker covering `bytes` of one-way calls to `dest` (one_way_window); never waits.
  void send_one_way_marker(int dest, std::uint64_t bytes) noexcept;
  /// Sends one of the window's own one-way messages (a marker or an acknowledgement),
  /// carrying `bytes`, outside the window.
  void send_window_message(int dest, std::uint64_t function_id, std::uint64_t bytes);
  /// The deadline of a call that starts at `start` with `timeout_s` (max(): none).
  static std::chrono::steady_clock::time_point
  deadline_of(std::chrono::steady_clock::time_point start, double timeout_s) noexcept;
  bool in_burst(int dest, std::chrono::steady_clock::time_point now) noexcept;
  void note_call(std::chrono::steady_clock::time_point now) noexcept;
  /// note_call for a one-way call, at the clock tick's resolution (see coarse_now).
  void note_one_way_call() noexcept;

  transport& _transport;
  message_counter& _messages;
  outbox_set& _outboxes;
  pending_calls& _pending;
  const session& _session;
  statistics& _counters;
  sender_hooks& _hooks;
  const limits _limits;
  admission_gate _gate;
  one_way_window& _one_way;
  std::atomic<int> _one_way_waiters{0}; ///< threads in wait_for_one_way_room
  std::atomic<int> _room_waiters{0};    ///< threads in wait_for_room
  std::atomic<std::int64_t> _last_call_ns{0};
  std::atomic<std::int64_t> _last_user_call_ns{0};
};

} // namespace mpirpc::detail
