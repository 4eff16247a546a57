// SPDX-License-Identifier: MIT
#include "core/sender.hpp"

#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <string>

#include <mpirpc/detail/future_state.hpp>
#include <mpirpc/errors.hpp>

#include "core/this_thread.hpp"

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;

/// steady_clock (CLOCK_MONOTONIC) read at the kernel tick's resolution, plus one tick: never
/// earlier than the fine clock, and at most a tick (1-4 ms) later. 4 ns a read here instead of
/// 30, which was a fifth of what a one-way call costs its caller.
clock::time_point coarse_now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
  static const clock::duration tick = [] {
    timespec r{};
    return clock_getres(CLOCK_MONOTONIC_COARSE, &r) == 0
               ? std::chrono::duration_cast<clock::duration>(std::chrono::seconds(r.tv_sec) +
                                                             std::chrono::nanoseconds(r.tv_nsec))
               : clock::duration::max();
  }();
  timespec ts{};
  if (tick < std::chrono::milliseconds(10) && clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0) {
    return clock::time_point(std::chrono::duration_cast<clock::duration>(
               std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec))) +
           tick;
  }
#endif
  return clock::now();
}

/// Stores `ns` unless `at` holds a later time already (a coarse reading must not move a fine
/// one back). Storing only when the time moved also keeps the line in this core's cache.
void store_later(std::atomic<std::int64_t>& at, std::int64_t ns) noexcept {
  if (at.load(std::memory_order_relaxed) < ns) at.store(ns, std::memory_order_relaxed);
}
} // namespace

sender::sender(transport& t, message_counter& messages, outbox_set& outboxes,
               pending_calls& pending, const session& s, statistics& counters, sender_hooks& hooks,
               limits l, one_way_window& one_way)
    : _transport(t), _messages(messages), _outboxes(outboxes), _pending(pending), _session(s),
      _counters(counters), _hooks(hooks), _limits(l), _one_way(one_way) {}

clock::time_point sender::deadline_of(clock::time_point start, double timeout_s) noexcept {
  // A timeout too large for the clock (or infinite) means none.
  constexpr double max_timeout_s = 1e9; // about 31 years
  return timeout_s > 0 && timeout_s < max_timeout_s
             ? start + std::chrono::duration_cast<clock::duration>(
                           std::chrono::duration<double>(timeout_s))
             : clock::time_point::max();
}

void sender::send_message(int dest, int tag, std::vector<char>& buffer, wire::kind kind,
                          std::uint64_t call_id, std::uint64_t function_id,
                          const std::vector<segment>& segments, std::uint16_t flags,
                          clock::time_point now) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(kind);
  h.flags = flags;
  h.segment_count = static_cast<std::uint32_t>(segments.size());
  h.data_tag = segments.empty() ? 0 : _transport.next_data_tag();
  h.call_id = call_id;
  h.function_id = function_id;
  h.payload_size = buffer.size() - sizeof(wire::header);
  // Limits are checked before anything is sent, so that a refused message leaves nothing
  // half-sent behind (wire::validate enforces the same limits on receipt).
  if (segments.size() > wire::max_segments) {
    throw serialization_error("mpirpc: a message may carry at most " +
                              std::to_string(wire::max_segments) + " large buffers, not " +
                              std::to_string(segments.size()));
  }
  if (buffer.size() + segments.size() * sizeof(std::uint64_t) >
      static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw serialization_error("mpirpc: a message's inline part of " +
                              std::to_string(buffer.size()) +
                              " bytes exceeds MPI's limit; pass large data as std::vector or "
                              "std::string so that it travels out of line");
  }
  std::memcpy(buffer.data(), &h, sizeof h);
  if (segments.empty()) {
    if (tag == wire::tag_request) {
      // Batched while earlier calls to dest are in flight, and always when one-way; order is
      // kept with the batch either way (core/outbox_set).
      const bool may_batch = (flags & wire::request_one_way) != 0 || in_burst(dest, now);
      if (_outboxes.put(dest, buffer, call_id, may_batch)) _hooks.batch_started();
      return;
    }
    if (_hooks.batches_replies_to(dest) && _outboxes.put_reply(dest, buffer)) return;
  } else if (tag == wire::tag_request) {
    _outboxes.flush(dest); // what was batched for dest leaves first
  }
  for (const segment& s : segments) {
    const std::uint64_t n = s.bytes;
    const char* p = reinterpret_cast<const char*>(&n);
    buffer.insert(buffer.end(), p, p + sizeof n);
  }
  _messages.send([&](bool* control_sent) {
    _transport.send(dest, tag, buffer.data(), buffer.size(), segments, h.data_tag, control_sent);
  });
}

bool sender::wait_for_room(int dest, clock::time_point deadline) {
  _counters.calls_delayed.fetch_add(1, std::memory_order_relaxed);
  _outboxes.flush(dest); // the calls that hold the room may still be in the batch
  _room_waiters.fetch_add(1, std::memory_order_relaxed);
  struct leave {
    std::atomic<int>& n;
    ~leave() { n.fetch_sub(1, std::memory_order_relaxed); }
  } left{_room_waiters};
  // Only an application thread gets here (send_request): never one in an in-order run, which
  // would have to be handed on first. This thread only sleeps: the replies that make room are
  // received by the leader or by a thread in wait(). It must not dispatch anything itself, since
  // the request it is about to send sits in its thread-local buffers.
  constexpr auto recheck = std::chrono::milliseconds(1); // also bounds a missed wake-up
  for (;;) {
    if (!_gate.open()) {
      throw shutdown_error("mpirpc: the RPC runtime is shutting down; the call was not sent");
    }
    if (_pending.try_reserve(dest, _limits.max_outstanding)) return true;
    const auto now = clock::now();
    if (now >= deadline) return false;
    _pending.wait_for_room(dest, _limits.max_outstanding, std::min(deadline, now + recheck));
  }
}

void sender::note_one_way_call() noexcept {
  // Read by pacing at the scale of milliseconds (recent_call_window), or to tell whether an
  // application thread calls at all (caller_window, 100 us): a one-way call counts there up to
  // a tick longer than a request does, which errs on the side of a quieter leader.
  const std::int64_t now = coarse_now().time_since_epoch().count();
  store_later(_last_call_ns, now);
  if (!this_thread().on_engine_thread) store_later(_last_user_call_ns, now);
}

void sender::note_call(clock::time_point now) noexcept {
  _last_call_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  if (!this_thread().on_engine_thread) {
    _last_user_call_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }
}

bool sender::send_request(int dest, const function_entry& fn, std::uint16_t flags,
                          request_buffers& request, std::shared_ptr<reply_sink> sink,
                          double timeout_s) {
  const function_entry* entry = &fn;
  if (timeout_s < 0) timeout_s = _limits.default_timeout_s;
  pending_call call;
  call.function_id = entry->id;
  call.dest = dest;
  call.start = clock::now();
  call.deadline = deadline_of(call.start, timeout_s);
  // Flow control, for application threads only. A handler or a progress-path continuation must
  // not block the threads that serve and receive the calls the window waits for (a chain of
  // async-execution calls deeper than the window would hold them for good), so its calls
  // never wait for room.
  const bool may_wait = !in_progress_callback() && !this_thread().on_engine_thread;
  const bool room = _pending.try_reserve(dest, may_wait ? _limits.max_outstanding : 0);
  if (!room && !wait_for_room(dest, call.deadline)) {
    _counters.timeouts.fetch_add(1, std::memory_order_relaxed);
    const double elapsed = std::chrono::duration<double>(clock::now() - call.start).count();
    char text[96];
    std::snprintf(text, sizeof text, "%.3f s (timeout %.3f s)", elapsed, timeout_s);
    const std::string& callee = _session.name_of(dest);
    sink->on_error(std::make_exception_ptr(timeout_error(
        "mpirpc: call to '" + entry->name + "' on " + callee + " timed out after " + text +
        " before it could be sent: " + std::to_string(_pending.outstanding(dest)) +
        " earlier calls to " + callee +
        " still awaited their replies (options::max_outstanding_calls = " +
        std::to_string(_limits.max_outstanding) + ")")));
    return false;
  }
  const admission_gate::pass admitted(_gate);
  if (!admitted) {
    _pending.unreserve(dest);
    throw shutdown_error("mpirpc: the RPC runtime has shut down; no further calls can be made");
  }
  call.sink = std::move(sink);
  note_call(call.start);
  // The start is still "now" for the burst rule unless the call waited for room: one clock
  // read per call instead of two (34 ns each here).
  const clock::time_point sent_at = room ? call.start : clock::time_point{};
  const std::uint64_t id = _pending.insert(std::move(call));
  try {
    send_message(dest, wire::tag_request, request.payload, wire::kind::request, id, entry->id,
                 request.segments, flags, sent_at);
  } catch (...) {
    _pending.take(id);
    throw;
  }
  _counters.requests_sent.fetch_add(1, std::memory_order_relaxed);
  _hooks.call_sent();
  return true;
}

void sender::message_received() noexcept {
  this_thread().last_request.dest = -1;
}

bool sender::in_burst(int dest, clock::time_point at) noexcept {
  // A burst: this thread called dest a moment ago and has received nothing since. Calls that
  // each follow a message (a chain of nested calls, or calls made from replies' continuations)
  // are not a burst, however many are outstanding.
  const std::int64_t now =
      (at == clock::time_point{} ? clock::now() : at).time_since_epoch().count();
  thread_state::sent_request& last = this_thread().last_request;
  const bool burst =
      last.sender == this && last.dest == dest &&
      now - last.ns < std::chrono::duration_cast<clock::duration>(batch_burst).count() &&
      _pending.outstanding(dest) >= batch_from_outstanding;
  last = {this, dest, now};
  return burst;
}

void sender::send_one_way(int dest, const function_entry& fn, request_buffers& request) {
  std::uint64_t bytes = 0;
  if (_one_way.enabled()) {
    bytes = request.payload.size();
    for (const segment& s : request.segments)
      bytes += s.bytes;
    // As for max_outstanding_calls, only application threads wait (see send_request).
    if (!_one_way.has_room(dest) && !in_progress_callback() && !this_thread().on_engine_thread) {
      wait_for_one_way_room(dest);
    }
  }
  {
    const admission_gate::pass admitted(_gate);
    if (!admitted) {
      throw shutdown_error("mpirpc: the RPC runtime has shut down; no further calls can be made");
    }
    note_one_way_call();
    send_message(dest, wire::tag_request, request.payload, wire::kind::request, 0, fn.id,
                 request.segments, wire::request_one_way);
  }
  _counters.one_way_sent.fetch_add(1, std::memory_order_relaxed);
  if (_one_way.enabled()) {
    // A batched call is counted when its batch leaves (outbox_set); one sent on its own (too
    // large for a batch, or with out-of-line buffers) is counted here.
    if (!request.segments.empty() ||
        request.payload.size() + sizeof(wire::header) > wire::max_batch_bytes) {
      _one_way.sent(dest, bytes);
    }
    if (_one_way.marker_due(dest)) send_due_marker(dest);
  }
}

void sender::send_due_marker(int dest) noexcept {
  if (const std::uint64_t covered = _one_way.take_due_marker(dest)) {
    send_one_way_marker(dest, covered);
  }
}

void sender::wait_for_one_way_room(int dest) {
  _counters.one_way_delayed.fetch_add(1, std::memory_order_relaxed);
  // What is batched leaves and is counted, then the marker due for it leaves too.
  _outboxes.flush(dest);
  send_due_marker(dest);
  _outboxes.flush(dest);
  // Acknowledgements are awaited now (replies_awaited): the leader polls for them.
  _one_way_waiters.fetch_add(1, std::memory_order_relaxed);
  struct leave {
    std::atomic<int>& n;
    ~leave() { n.fetch_sub(1, std::memory_order_relaxed); }
  } left{_one_way_waiters};
  _hooks.call_sent();
  // As long as a call may wait for its reply (options::rpc_timeout).
  const auto start = clock::now();
  const auto deadline = deadline_of(start, _limits.default_timeout_s);
  constexpr auto recheck = std::chrono::milliseconds(1); // also bounds a missed wake-up
  for (;;) {
    if (!_gate.open()) {
      throw shutdown_error("mpirpc: the RPC runtime is shutting down; the call was not sent");
    }
    if (_one_way.has_room(dest)) return;
    const auto now = clock::now();
    if (now >= deadline) {
      const double elapsed = std::chrono::duration<double>(now - start).count();
      char text[64];
      std::snprintf(text, sizeof text, "%.3f s", elapsed);
      throw timeout_error("mpirpc: a one-way call to " + _session.name_of(dest) +
                          " was not sent: for " + text + ", " +
                          std::to_string(_one_way.in_flight(dest)) +
                          " bytes of earlier one-way calls to it had not started there "
                          "(options::max_one_way_bytes = " +
                          std::to_string(_one_way.limit()) + ")");
    }
    _one_way.wait_for_room(dest, std::min(deadline, now + recheck));
  }
}

void sender::send_one_way_marker(int dest, std::uint64_t bytes) noexcept {
  try {
    send_window_message(dest, one_way_window::marker_id(), bytes);
  } catch (const std::exception& e) {
    // Not sent: its bytes are acknowledged, so that the window does not stay shut.
    _one_way.acknowledged(dest, bytes);
    _session.log(std::string("could not send a one-way window marker: ") + e.what());
  }
}

void sender::acknowledge_one_way(int source, std::uint64_t bytes) noexcept {
  try {
    send_window_message(source, one_way_window::ack_id(), bytes);
  } catch (const std::exception& e) {
    _session.log(std::string("could not acknowledge one-way calls: ") + e.what());
  }
}

void sender::send_window_message(int dest, std::uint64_t function_id, std::uint64_t bytes) {
  // One-way. A marker travels in the batches and in-order runs of the calls it follows; an
  // acknowledgement needs no order and leaves at once, on its own, so that it never waits
  // behind calls (it is applied on receipt, see receiver::handle_request). Neither counts in
  // the window (outbox_set leaves markers out): they are what moves it.
  std::vector<char> buffer(sizeof(wire::header) + sizeof bytes);
  std::memcpy(buffer.data() + sizeof(wire::header), &bytes, sizeof bytes);
  const admission_gate::pass admitted(_gate);
  if (!admitted) throw shutdown_error("mpirpc: the RPC runtime has shut down");
  if (function_id == one_way_window::ack_id()) {
    wire::header h{};
    h.magic = wire::magic;
    h.version = wire::version;
    h.kind = static_cast<std::uint8_t>(wire::kind::request);
    h.flags = wire::request_one_way;
    h.function_id = function_id;
    h.payload_size = sizeof bytes;
    std::memcpy(buffer.data(), &h, sizeof h);
    _messages.send([&](bool* control_sent) {
      _transport.send(dest, wire::tag_request, buffer.data(), buffer.size(), {}, 0, control_sent);
    });
    return;
  }
  send_message(dest, wire::tag_request, buffer, wire::kind::request, 0, function_id, {},
               wire::request_one_way);
}

void sender::send_error_reply(int dest, std::uint64_t call_id, std::uint64_t function_id,
                              wire::error_code code, const std::string& type,
                              const std::string& message, const std::string& origin) noexcept {
  try {
    std::vector<char>& buffer = this_thread().reply_buffer;
    const trim_on_exit trim{buffer};
    buffer.resize(sizeof(wire::header));
    writer w(buffer);
    w.write_plain(static_cast<std::uint8_t>(code));
    save(w, origin);
    save(w, type);
    save(w, message);
    send_message(dest, wire::tag_reply, buffer, wire::kind::reply_error, call_id, function_id, {});
  } catch (const std::exception& e) {
    _session.log(std::string("could not send an error reply: ") + e.what());
  }
}

} // namespace mpirpc::detail
