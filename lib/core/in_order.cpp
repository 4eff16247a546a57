// SPDX-License-Identifier: MIT
// In-order runs (lib/README.md, "Queues and tables"): batches and one-way requests from one source
// run one after another, in the order they arrived, so that rpc_ff calls run in the order sent and
// a call made after them runs after them. A handler that is about to block hands the rest to a
// server thread.
#include "core/in_order.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include <mpirpc/errors.hpp>

#include "core/one_way_window.hpp"
#include "net/segment_stream.hpp"

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;

/// Whether a message (header first) is a two-way request: one that a stalled run may leave
/// behind (rescue_stalled); a batch is looked at request by request.
bool two_way_request(const char* data, std::size_t size) {
  if (size < sizeof(wire::header)) return false;
  wire::header h;
  std::memcpy(&h, data, sizeof h);
  return h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
         !(h.flags & wire::request_one_way);
}

} // namespace

/// The requests from one source that run in arrival order: batches and one-way calls (and any
/// request that arrives while they run). One thread at a time runs them (`busy`).
struct in_order_runs::source_run {
  std::mutex mutex;
  std::atomic<bool> busy{
      false}; ///< set by the leader (holding the poll baton), cleared under mutex
  std::deque<incoming> waiting;
  run_cursor* runner = nullptr; ///< the thread running them now, if any (under mutex)
};

/// The in-order run this thread is in: what it has not started yet, so that the rest can be
/// handed to another thread when a handler blocks, or taken by a poller when a handler has run
/// for long (rescue_stalled). The fields below `source` are guarded by the source_run's mutex
/// once the run is under way.
struct in_order_cursor {
  const in_order_runs* owner = nullptr;
  int source = -1;
  const char* rest = nullptr; ///< the batch's messages not started yet: [rest, end)
  const char* end = nullptr;
  incoming* whole = nullptr;   ///< a request that could not start at all (no handler slot)
  bool handed_off = false;     ///< the rest went to another thread (by this one or a poller)
  bool in_handler = false;     ///< a message of the run is being handled
  bool rescuable = false;      ///< ... and it is a two-way request (see rescue_stalled)
  std::uint64_t step = 0;      ///< messages started
  std::uint64_t seen_step = 0; ///< `step` at a poller's last look (rescue_stalled)
};

in_order_runs::in_order_runs(int ranks, in_order_hooks& hooks, transport& t, server& srv,
                             sender& snd, outbox_set& outboxes, const session& s,
                             statistics& counters, diagnostics& diag)
    : _hooks(hooks), _transport(t), _server(srv), _sender(snd), _outboxes(outboxes), _session(s),
      _counters(counters), _diagnostics(diag) {
  for (int r = 0; r < ranks; ++r)
    _runs.push_back(std::make_unique<source_run>());
}

in_order_runs::~in_order_runs() = default;

bool in_order_runs::runs_here() const noexcept {
  const run_cursor* c = current_cursor();
  return c && c->owner == this;
}

bool in_order_runs::batches_replies_to(int dest) const noexcept {
  const reply_target& target = current_reply_target();
  return target.owner == this && target.dest == dest;
}

void in_order_runs::hand_off_with(incoming& message) noexcept {
  run_cursor* c = current_cursor();
  {
    std::lock_guard<std::mutex> lock(_runs[static_cast<std::size_t>(c->source)]->mutex);
    c->whole = &message;
  }
  hand_off();
}

in_order_runs::run_cursor*& in_order_runs::current_cursor() noexcept {
  return this_thread().in_order_run;
}

in_order_runs::reply_target& in_order_runs::current_reply_target() noexcept {
  return this_thread().reply_batch;
}

// ---------------------------------------------------------------------------------------------
// Receiving in order

in_order_runs::route in_order_runs::route_received(incoming& message) {
  if (message.tag != wire::tag_request || message.bytes.size() < sizeof(wire::header) ||
      !message.problem.empty()) {
    return route::dispatch;
  }
  source_run& order = *_runs[static_cast<std::size_t>(message.source)];
  wire::header h;
  std::memcpy(&h, message.bytes.data(), sizeof h);
  // A one-way window acknowledgement needs no order and must not wait behind a run (its
  // sender's calls may be what the run waits for): receiver::handle_request applies it.
  if (one_way_window::is_acknowledgement(h)) return route::dispatch;
  const bool ordered = h.kind == static_cast<std::uint8_t>(wire::kind::batch) ||
                       (h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
                        (h.flags & wire::request_one_way));
  if (!ordered && !order.busy.load(std::memory_order_acquire)) return route::dispatch;
  std::lock_guard<std::mutex> lock(order.mutex);
  if (order.busy.load(std::memory_order_relaxed)) {
    // Its sender must not wait for it (it might be what the run waits for): its out-of-line
    // buffers are received now, as for a request queued for a handler slot.
    if (h.segment_count > 0 && !_hooks.prefetch_deferred(message, true)) {
      message = incoming();
      return route::deferred; // answered already
    }
    order.waiting.push_back(std::move(message));
    _waiting.fetch_add(1, std::memory_order_seq_cst);
    message = incoming();
    return route::deferred;
  }
  if (!ordered) return route::dispatch;
  order.busy.store(true, std::memory_order_relaxed);
  return route::in_order;
}

void in_order_runs::run(incoming& message, bool popped) {
  const int source = message.source;
  source_run& order = *_runs[static_cast<std::size_t>(source)];
  run_cursor cursor;
  cursor.owner = this;
  cursor.source = source;
  run_cursor*& slot = current_cursor();
  run_cursor* const outer = slot;
  slot = &cursor;
  {
    std::lock_guard<std::mutex> lock(order.mutex);
    order.runner = &cursor;
    cursor.in_handler = true;
    cursor.rescuable = two_way_request(message.bytes.data(), message.bytes.size());
    ++cursor.step;
  }
  for (;;) {
    _hooks.dispatch(message);
    // A message taken from `waiting` counts there until it has run (or has been handed on,
    // where it counts again), so that quiesce never sees it nowhere.
    if (popped) _waiting.fetch_sub(1, std::memory_order_seq_cst);
    std::lock_guard<std::mutex> lock(order.mutex);
    cursor.in_handler = false;
    cursor.whole = nullptr;
    cursor.rest = cursor.end = nullptr;
    if (cursor.handed_off) break; // another thread runs the rest (busy stays set for it)
    if (order.waiting.empty()) {
      order.busy.store(false, std::memory_order_release);
      break;
    }
    message = std::move(order.waiting.front());
    order.waiting.pop_front();
    popped = true;
    cursor.in_handler = true;
    cursor.rescuable = two_way_request(message.bytes.data(), message.bytes.size());
    ++cursor.step;
  }
  {
    std::lock_guard<std::mutex> lock(order.mutex);
    if (order.runner == &cursor) order.runner = nullptr;
  }
  slot = outer;
}

void in_order_runs::continue_run(int source) {
  // Runs as a posted task, which holds a handler slot; the requests it runs take their own.
  _server.release_slot();
  struct retake {
    server& s;
    ~retake() { s.take_back_slot(); } // run_queued gives it back
  } slot_back{_server};
  source_run& order = *_runs[static_cast<std::size_t>(source)];
  incoming message;
  {
    std::lock_guard<std::mutex> lock(order.mutex);
    if (order.waiting.empty()) {
      order.busy.store(false, std::memory_order_release);
      return;
    }
    message = std::move(order.waiting.front());
    order.waiting.pop_front();
  }
  run(message, true);
}

void in_order_runs::requeue_rest_locked(source_run& order, run_cursor& cursor) {
  if (cursor.whole) {
    // A request that could not start (no handler slot was free): it goes first.
    incoming rest = std::move(*cursor.whole);
    rest.continuation = true;
    order.waiting.push_front(std::move(rest));
    _waiting.fetch_add(1, std::memory_order_seq_cst);
    cursor.whole = nullptr;
  } else if (cursor.rest && cursor.rest < cursor.end) {
    incoming rest;
    rest.source = cursor.source;
    rest.tag = wire::tag_request;
    rest.continuation = true;
    const auto size = static_cast<std::size_t>(cursor.end - cursor.rest);
    rest.bytes.resize(sizeof(wire::header) + size); // room for the header, then the rest
    std::memcpy(rest.bytes.data() + sizeof(wire::header), cursor.rest, size);
    seal_batch(rest.bytes, 0); // the count is not known here; nothing relies on it
    order.waiting.push_front(std::move(rest));
    _waiting.fetch_add(1, std::memory_order_seq_cst);
  }
  cursor.rest = cursor.end; // nothing more of the batch runs on the cursor's thread
}

void in_order_runs::hand_off() noexcept {
  // Replies made so far must not wait behind a blocked handler.
  if (current_reply_target().owner == this) _outboxes.flush_replies(current_reply_target().dest);
  run_cursor* cursor = current_cursor();
  if (!cursor || cursor->owner != this) return;
  source_run& order = *_runs[static_cast<std::size_t>(cursor->source)];
  bool more = false;
  try {
    std::lock_guard<std::mutex> lock(order.mutex);
    if (cursor->handed_off) {
      // A poller took the run while this thread's request looked for a handler slot: the
      // request goes first among those waiting; whoever runs them takes it next.
      if (!cursor->whole) return;
      requeue_rest_locked(order, *cursor);
      if (!order.busy.load(std::memory_order_relaxed)) { // that run is over: start another
        order.busy.store(true, std::memory_order_relaxed);
        more = true;
      }
    } else {
      cursor->handed_off = true;
      requeue_rest_locked(order, *cursor);
      more = !order.waiting.empty();
      if (!more) order.busy.store(false, std::memory_order_release);
    }
  } catch (const std::exception& e) { // no memory for the copy
    _session.log(std::string("could not hand on the rest of a batch: ") + e.what());
    std::lock_guard<std::mutex> lock(order.mutex);
    more = !order.waiting.empty();
    if (!more) order.busy.store(false, std::memory_order_release);
  }
  if (more) {
    try {
      _server.post([this, source = cursor->source] { continue_run(source); });
    } catch (const std::exception& e) {
      _session.log(std::string("could not hand on in-order requests: ") + e.what());
    }
  }
}

void in_order_runs::rescue_stalled(clock::time_point now) noexcept {
  const std::int64_t t = now.time_since_epoch().count();
  std::int64_t due = _next_rescue_ns.load(std::memory_order_relaxed);
  if (t < due) return;
  const std::int64_t next =
      t + std::chrono::duration_cast<clock::duration>(stalled_run_after).count();
  if (!_next_rescue_ns.compare_exchange_strong(due, next)) return;
  for (std::size_t s = 0; s < _runs.size(); ++s) {
    source_run& order = *_runs[s];
    if (!order.busy.load(std::memory_order_acquire)) continue;
    bool more = false;
    try {
      std::lock_guard<std::mutex> lock(order.mutex);
      run_cursor* cursor = order.runner;
      if (!cursor || !cursor->in_handler || !cursor->rescuable || cursor->handed_off) continue;
      if (cursor->step != cursor->seen_step) { // it moved on since the last look
        cursor->seen_step = cursor->step;
        continue;
      }
      const bool rest = cursor->whole || (cursor->rest && cursor->rest < cursor->end);
      if (!rest && order.waiting.empty()) continue; // nothing waits behind it
      // The same handler for a whole interval: what waits behind it goes on elsewhere, as if
      // it had started to wait on a future (its thread finishes that handler and stops).
      cursor->handed_off = true;
      requeue_rest_locked(order, *cursor);
      order.runner = nullptr;
      more = true;
    } catch (const std::exception& e) { // no memory for the copy
      _session.log(std::string("could not hand on the rest of a stalled batch: ") + e.what());
      continue;
    }
    if (more) {
      try {
        _server.post([this, source = static_cast<int>(s)] { continue_run(source); });
      } catch (const std::exception& e) {
        _session.log(std::string("could not hand on in-order requests: ") + e.what());
      }
    }
  }
}

void in_order_runs::handle_batch(incoming& message, const wire::header& h) {
  const bool requests = message.tag == wire::tag_request;
  run_cursor* cursor = requests ? current_cursor() : nullptr;
  if (cursor && cursor->owner != this) cursor = nullptr;
  // The replies to these requests leave together when the batch is done (or earlier: see
  // reply_batch).
  reply_target& reply_slot = current_reply_target();
  const reply_target outer = reply_slot;
  if (requests) reply_slot = reply_target{this, message.source};
  struct restore {
    in_order_runs& e;
    bool requests;
    int source;
    reply_target& slot;
    reply_target outer;
    ~restore() {
      if (!requests) return;
      e._outboxes.flush_replies(source);
      slot = outer;
    }
  } done{*this, requests, message.source, reply_slot, outer};

  const char* p = message.bytes.data() + sizeof(wire::header);
  const char* const end = p + h.payload_size;
  incoming one;
  std::uint64_t index = 0;
  while (p < end) {
    wire::header sub;
    std::size_t size = 0;
    const std::string problem =
        wire::validate_batched(p, static_cast<std::size_t>(end - p), message.tag, sub, size);
    if (!problem.empty()) {
      _session.log("dropped the rest of a malformed batch from rank " +
                   std::to_string(message.source) + " (message " + std::to_string(index + 1) +
                   "): " + problem);
      _counters.malformed.fetch_add(1, std::memory_order_seq_cst);
      break;
    }
    const char* const next = p + size;
    one.source = message.source;
    one.tag = message.tag;
    one.bytes.assign(p, next);
    one.prefetched.clear();
    ++index;
    if (!requests) {
      _hooks.handle_reply(one, sub);
      p = next;
      continue;
    }
    bool slot_held = false;
    if (cursor) {
      source_run& order = *_runs[static_cast<std::size_t>(cursor->source)];
      // In order: a request that cannot start now hands itself and the rest on.
      if (!_server.try_take_slot()) {
        {
          std::lock_guard<std::mutex> lock(order.mutex);
          if (cursor->handed_off) break; // a poller took [p, end) already
          cursor->rest = p;
          cursor->end = end;
        }
        hand_off();
        break;
      }
      bool taken = false;
      {
        std::lock_guard<std::mutex> lock(order.mutex);
        taken = cursor->handed_off; // a poller took [p, end) already
        if (!taken) {
          cursor->rest = next;
          cursor->end = end;
          cursor->rescuable = !(sub.flags & wire::request_one_way);
          ++cursor->step;
        }
      }
      if (taken) {
        _server.release_slot();
        _server.run_queued(); // the slot may be what the run's new thread waits for
        break;
      }
      slot_held = true;
    }
    _hooks.handle_request(one, sub, slot_held);
    p = next;
  }
}

void in_order_runs::refuse_waiting() noexcept {
  for (std::size_t s = 0; s < _runs.size(); ++s) {
    std::deque<incoming> unserved;
    {
      std::lock_guard<std::mutex> lock(_runs[s]->mutex);
      unserved.swap(_runs[s]->waiting);
    }
    _waiting.fetch_sub(unserved.size(), std::memory_order_seq_cst);
    for (const incoming& m : unserved) {
      wire::header h;
      if (!wire::validate(m.bytes.data(), m.bytes.size(), m.tag, h, _transport.tag_ub()).empty()) {
        continue;
      }
      auto refuse = [&](const wire::header& r) {
        if (r.flags & wire::request_one_way) {
          _counters.one_way_run.fetch_add(1,
                                          std::memory_order_relaxed); // counted like any it refuses
          _diagnostics.one_way_failed("a one-way call of '" +
                                      session::function_name(r.function_id) + "' from " +
                                      _session.name_of(static_cast<int>(s)) +
                                      " was not run: " + _session.self().name + " shut down first");
          return;
        }
        _sender.send_error_reply(m.source, r.call_id, r.function_id,
                                 wire::error_code::shutting_down, "mpirpc::shutdown_error",
                                 _session.self().name + " shut down before serving the call",
                                 _session.self().name);
      };
      if (h.kind != static_cast<std::uint8_t>(wire::kind::batch)) {
        segment_stream(_transport, m, h).drain();
        refuse(h);
        continue;
      }
      const char* p = m.bytes.data() + sizeof(wire::header);
      const char* const end = p + h.payload_size;
      while (p < end) {
        wire::header sub;
        std::size_t size = 0;
        if (!wire::validate_batched(p, static_cast<std::size_t>(end - p), m.tag, sub, size)
                 .empty()) {
          break;
        }
        refuse(sub);
        p += size;
      }
    }
  }
}

} // namespace mpirpc::detail
