// SPDX-License-Identifier: MIT
// In-order delivery, part of class engine (lib/README.md, "Batching"); the batches themselves
// are built by core/outbox_set:
// - in-order runs: batches and one-way requests from one source run one after another, in the
//   order they arrived, so that rpc_ff calls run in the order sent and a call made after them
//   runs after them. A handler that is about to block hands the rest to a server thread.
#include <algorithm>
#include <cstring>

#include <mpirpc/errors.hpp>

#include "batching.hpp"
#include "errors_internal.hpp"

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;

/// Whether a message (header first) is a two-way request: one that a stalled run may leave
/// behind (rescue_stalled_runs); a batch is looked at request by request.
bool two_way_request(const char* data, std::size_t size) {
  if (size < sizeof(wire::header)) return false;
  wire::header h;
  std::memcpy(&h, data, sizeof h);
  return h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
         !(h.flags & wire::request_one_way);
}

} // namespace

engine::in_order_cursor*& engine::current_cursor() noexcept {
  thread_local in_order_cursor* cursor = nullptr;
  return cursor;
}

engine::reply_target& engine::current_reply_target() noexcept {
  thread_local reply_target target;
  return target;
}

// ---------------------------------------------------------------------------------------------
// Receiving in order

engine::route engine::route_received(incoming& message) {
  if (message.tag != wire::tag_request || message.bytes.size() < sizeof(wire::header) ||
      !message.problem.empty()) {
    return route::dispatch;
  }
  in_order& order = *_in_order[static_cast<std::size_t>(message.source)];
  wire::header h;
  std::memcpy(&h, message.bytes.data(), sizeof h);
  const bool ordered = h.kind == static_cast<std::uint8_t>(wire::kind::batch) ||
                       (h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
                        (h.flags & wire::request_one_way));
  if (!ordered && !order.busy.load(std::memory_order_acquire)) return route::dispatch;
  std::lock_guard<std::mutex> lock(order.mutex);
  if (order.busy.load(std::memory_order_relaxed)) {
    // Its sender must not wait for it (it might be what the run waits for): its out-of-line
    // buffers are received now, as for a request queued for a handler slot.
    if (h.segment_count > 0 && !prefetch_deferred(message)) {
      message = incoming();
      return route::deferred; // answered already
    }
    order.waiting.push_back(std::move(message));
    _ordered_waiting.fetch_add(1, std::memory_order_seq_cst);
    message = incoming();
    return route::deferred;
  }
  if (!ordered) return route::dispatch;
  order.busy.store(true, std::memory_order_relaxed);
  return route::in_order;
}

void engine::run_in_order(incoming& message, bool popped) {
  const int source = message.source;
  in_order& order = *_in_order[static_cast<std::size_t>(source)];
  in_order_cursor cursor;
  cursor.owner = this;
  cursor.source = source;
  in_order_cursor*& slot = current_cursor();
  in_order_cursor* const outer = slot;
  slot = &cursor;
  {
    std::lock_guard<std::mutex> lock(order.mutex);
    order.runner = &cursor;
    cursor.in_handler = true;
    cursor.rescuable = two_way_request(message.bytes.data(), message.bytes.size());
    ++cursor.step;
  }
  for (;;) {
    dispatch(message);
    // A message taken from `waiting` counts there until it has run (or has been handed on,
    // where it counts again), so that quiesce never sees it nowhere.
    if (popped) _ordered_waiting.fetch_sub(1, std::memory_order_seq_cst);
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

void engine::continue_in_order(int source) {
  // Runs as a posted task, which holds a handler slot; the requests it runs take their own.
  _server.release_slot();
  struct retake {
    server& s;
    ~retake() { s.take_back_slot(); } // run_queued gives it back
  } slot_back{_server};
  in_order& order = *_in_order[static_cast<std::size_t>(source)];
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
  run_in_order(message, true);
}

void engine::requeue_rest_locked(in_order& order, in_order_cursor& cursor) {
  if (cursor.whole) {
    // A request that could not start (no handler slot was free): it goes first.
    incoming rest = std::move(*cursor.whole);
    rest.continuation = true;
    order.waiting.push_front(std::move(rest));
    _ordered_waiting.fetch_add(1, std::memory_order_seq_cst);
    cursor.whole = nullptr;
  } else if (cursor.rest && cursor.rest < cursor.end) {
    incoming rest;
    rest.source = cursor.source;
    rest.tag = wire::tag_request;
    rest.continuation = true;
    rest.bytes.resize(sizeof(wire::header));
    rest.bytes.insert(rest.bytes.end(), cursor.rest, cursor.end);
    seal_batch(rest.bytes, 0); // the count is not known here; nothing relies on it
    order.waiting.push_front(std::move(rest));
    _ordered_waiting.fetch_add(1, std::memory_order_seq_cst);
  }
  cursor.rest = cursor.end; // nothing more of the batch runs on the cursor's thread
}

void engine::hand_off_in_order() noexcept {
  // Replies made so far must not wait behind a blocked handler.
  if (current_reply_target().owner == this) _outboxes.flush_replies(current_reply_target().dest);
  in_order_cursor* cursor = current_cursor();
  if (!cursor || cursor->owner != this) return;
  in_order& order = *_in_order[static_cast<std::size_t>(cursor->source)];
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
    log(std::string("could not hand on the rest of a batch: ") + e.what());
    std::lock_guard<std::mutex> lock(order.mutex);
    more = !order.waiting.empty();
    if (!more) order.busy.store(false, std::memory_order_release);
  }
  if (more) {
    try {
      post([this, source = cursor->source] { continue_in_order(source); });
    } catch (const std::exception& e) {
      log(std::string("could not hand on in-order requests: ") + e.what());
    }
  }
}

void engine::rescue_stalled_runs(clock::time_point now) noexcept {
  const std::int64_t t = now.time_since_epoch().count();
  std::int64_t due = _next_rescue_ns.load(std::memory_order_relaxed);
  if (t < due) return;
  const std::int64_t next =
      t + std::chrono::duration_cast<clock::duration>(stalled_run_after).count();
  if (!_next_rescue_ns.compare_exchange_strong(due, next)) return;
  for (std::size_t s = 0; s < _in_order.size(); ++s) {
    in_order& order = *_in_order[s];
    if (!order.busy.load(std::memory_order_acquire)) continue;
    bool more = false;
    try {
      std::lock_guard<std::mutex> lock(order.mutex);
      in_order_cursor* cursor = order.runner;
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
      log(std::string("could not hand on the rest of a stalled batch: ") + e.what());
      continue;
    }
    if (more) {
      try {
        post([this, source = static_cast<int>(s)] { continue_in_order(source); });
      } catch (const std::exception& e) {
        log(std::string("could not hand on in-order requests: ") + e.what());
      }
    }
  }
}

void engine::handle_batch(incoming& message, const wire::header& h) {
  const bool requests = message.tag == wire::tag_request;
  in_order_cursor* cursor = requests ? current_cursor() : nullptr;
  if (cursor && cursor->owner != this) cursor = nullptr;
  // The replies to these requests leave together when the batch is done (or earlier: see
  // reply_batch).
  reply_target& reply_slot = current_reply_target();
  const reply_target outer = reply_slot;
  if (requests) reply_slot = reply_target{this, message.source};
  struct restore {
    engine& e;
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
      log("dropped the rest of a malformed batch from rank " + std::to_string(message.source) +
          " (message " + std::to_string(index + 1) + "): " + problem);
      _stats.malformed.fetch_add(1, std::memory_order_seq_cst);
      break;
    }
    const char* const next = p + size;
    one.source = message.source;
    one.tag = message.tag;
    one.bytes.assign(p, next);
    one.prefetched.clear();
    ++index;
    if (!requests) {
      handle_reply(one, sub);
      p = next;
      continue;
    }
    bool slot_held = false;
    if (cursor) {
      in_order& order = *_in_order[static_cast<std::size_t>(cursor->source)];
      // In order: a request that cannot start now hands itself and the rest on.
      if (!_server.try_take_slot()) {
        {
          std::lock_guard<std::mutex> lock(order.mutex);
          if (cursor->handed_off) break; // a poller took [p, end) already
          cursor->rest = p;
          cursor->end = end;
        }
        hand_off_in_order();
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
        run_queued(); // the slot may be what the run's new thread waits for
        break;
      }
      slot_held = true;
    }
    handle_request(one, sub, slot_held);
    p = next;
  }
}

} // namespace mpirpc::detail
