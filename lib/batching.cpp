// SPDX-License-Identifier: MIT
// Batching and in-order delivery, part of class engine (lib/README.md, "Batching"):
// - outboxes: requests to one destination travel together in one MPI message while earlier
//   calls to it still await their replies, and so do all one-way calls (rpc_ff); a lone call
//   is never held back;
// - reply batches: the replies made while a received batch runs leave as one message;
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

/// A batch this old is sent by the next poller that finds no message (no thread waits for
/// it, or it would have been sent when that thread started to wait).
constexpr auto batch_delay = std::chrono::microseconds(20 * batch_time_scale);
/// Room a batch keeps for one more small message; a fuller batch is sent at once.
constexpr std::size_t batch_headroom = 64;

wire::header batch_header(std::uint32_t count, std::size_t bytes) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(wire::kind::batch);
  h.call_id = count;
  h.payload_size = bytes - sizeof(wire::header);
  return h;
}

/// Whether a message (header first) is a two-way request: one that a stalled run may leave
/// behind (rescue_stalled_runs); a batch is looked at request by request.
bool two_way_request(const char* data, std::size_t size) {
  if (size < sizeof(wire::header)) return false;
  wire::header h;
  std::memcpy(&h, data, sizeof h);
  return h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
         !(h.flags & wire::request_one_way);
}

/// Puts the batch header in front of `bytes`, which hold `count` messages after room for it.
void seal(std::vector<char>& bytes, std::uint32_t count) {
  const wire::header h = batch_header(count, bytes.size());
  std::memcpy(bytes.data(), &h, sizeof h);
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
// Sending

void engine::send_counted(int dest, int tag, const char* data, std::size_t size) {
  // Counted before the send (quiesce relies on sent >= received); a control message that
  // never left is balanced as received.
  _sent.fetch_add(1, std::memory_order_seq_cst);
  bool control_sent = false;
  try {
    _transport->send(dest, tag, data, size, {}, 0, &control_sent);
  } catch (...) {
    if (!control_sent) _received.fetch_add(1, std::memory_order_seq_cst);
    throw;
  }
}

void engine::send_batch(int dest, int tag, std::vector<char>& bytes, std::uint32_t count) {
  seal(bytes, count);
  // Counted before it leaves, as _sent is: whoever has seen it arrive (and synchronized with
  // this rank since) must see it counted here too. A send that fails takes it back.
  _batches_sent.fetch_add(1, std::memory_order_seq_cst);
  _messages_batched.fetch_add(count, std::memory_order_seq_cst);
  try {
    send_counted(dest, tag, bytes.data(), bytes.size());
  } catch (...) {
    _batches_sent.fetch_sub(1, std::memory_order_seq_cst);
    _messages_batched.fetch_sub(count, std::memory_order_seq_cst);
    throw;
  }
}

void engine::send_or_batch(int dest, std::vector<char>& buffer, std::uint64_t call_id,
                           bool may_batch) {
  outbox& box = *_outboxes[static_cast<std::size_t>(dest)];
  const std::size_t size = buffer.size();
  if (!may_batch && box.count.load(std::memory_order_acquire) == 0) {
    send_counted(dest, wire::tag_request, buffer.data(), size);
    return;
  }
  std::vector<std::uint64_t> failed;
  std::exception_ptr failure;
  bool started = false;
  bool sent_alone = false;
  {
    std::lock_guard<std::mutex> lock(box.mutex);
    const std::uint32_t count = box.count.load(std::memory_order_relaxed);
    if ((!may_batch && count == 0) || size + sizeof(wire::header) > wire::max_batch_bytes) {
      // Not batched: what is batched already leaves first, then this message (still under the
      // mutex, so that no later message to dest overtakes it). If the batch failed, this
      // message is not sent either (it could not follow the batch in order): send_request
      // takes its call back when the failure is rethrown below.
      flush_locked(dest, box, failed, failure);
      if (!failure) send_counted(dest, wire::tag_request, buffer.data(), size);
      sent_alone = true;
    } else {
      if (box.bytes.size() + size > wire::max_batch_bytes) flush_locked(dest, box, failed, failure);
      if (box.count.load(std::memory_order_relaxed) == 0) {
        box.bytes.resize(sizeof(wire::header));
        box.since = clock::now();
        _outboxes_filled.fetch_add(1, std::memory_order_seq_cst);
        started = true;
      }
      box.bytes.insert(box.bytes.end(), buffer.begin(), buffer.end());
      box.calls.push_back(call_id);
      box.count.fetch_add(1, std::memory_order_release);
      if (box.bytes.size() + batch_headroom > wire::max_batch_bytes) {
        flush_locked(dest, box, failed, failure);
        started = false;
      }
    }
  }
  if (failure) {
    fail_unsent(failed, failure, dest); // outside the mutex: their continuations may call dest
    if (sent_alone) std::rethrow_exception(failure);
  }
  // A new batch: sent when this or another thread waits, when it is full, or by the leader,
  // which looks at least every batch_poll_interval while a batch is out. The leader is woken
  // only if it sleeps longer than that (waking it for every batch would cost more than the
  // batch saves).
  if (started) {
    const std::int64_t soon = (clock::now() + batch_poll_interval).time_since_epoch().count();
    if (_leader_idle.load(std::memory_order_seq_cst) ||
        _leader_wakes_at_ns.load(std::memory_order_relaxed) > soon) {
      std::lock_guard<std::mutex> lock(_leader_sleep_mutex); // no lost wake-up
      _leader_idle.store(false, std::memory_order_seq_cst);
      _leader_cv.notify_one();
    }
  }
}

void engine::flush_locked(int dest, outbox& box, std::vector<std::uint64_t>& failed,
                          std::exception_ptr& failure) noexcept {
  const std::uint32_t count = box.count.load(std::memory_order_relaxed);
  if (count == 0) return;
  try {
    if (count == 1) { // a batch of one is just the message
      send_counted(dest, wire::tag_request, box.bytes.data() + sizeof(wire::header),
                   box.bytes.size() - sizeof(wire::header));
    } else {
      send_batch(dest, wire::tag_request, box.bytes, count);
    }
  } catch (...) {
    failure = std::current_exception();
    failed.insert(failed.end(), box.calls.begin(), box.calls.end());
  }
  box.bytes.clear();
  box.calls.clear();
  box.count.store(0, std::memory_order_release);
  _outboxes_filled.fetch_sub(1, std::memory_order_seq_cst);
}

void engine::fail_unsent(const std::vector<std::uint64_t>& ids, const std::exception_ptr& failure,
                         int dest) noexcept {
  const std::string& callee = _workers[static_cast<std::size_t>(dest)].name;
  const std::string why = describe_exception(failure).message;
  std::size_t one_way = 0;
  for (std::uint64_t id : ids) {
    if (id == 0) {
      ++one_way;
      continue;
    }
    if (std::optional<pending_call> call = _pending.take(id)) {
      const progress_callback_scope scope; // may run on a poller
      call->sink->on_error(failure);
    }
  }
  if (one_way > 0) {
    log(std::to_string(one_way) + " one-way call(s) to " + callee + " could not be sent: " + why);
  }
}

void engine::flush_outbox(int dest) noexcept {
  outbox& box = *_outboxes[static_cast<std::size_t>(dest)];
  if (box.count.load(std::memory_order_acquire) == 0) return;
  std::vector<std::uint64_t> failed;
  std::exception_ptr failure;
  {
    std::lock_guard<std::mutex> lock(box.mutex);
    flush_locked(dest, box, failed, failure);
  }
  if (failure) fail_unsent(failed, failure, dest);
}

void engine::flush_outboxes() noexcept {
  if (_reply_batches_filled.load(std::memory_order_seq_cst) > 0) {
    for (std::size_t d = 0; d < _reply_batches.size(); ++d)
      flush_reply_batch(static_cast<int>(d));
  }
  if (_outboxes_filled.load(std::memory_order_seq_cst) == 0) return;
  for (std::size_t d = 0; d < _outboxes.size(); ++d)
    flush_outbox(static_cast<int>(d));
}

void engine::flush_aged_outboxes(clock::time_point now) noexcept {
  if (_reply_batches_filled.load(std::memory_order_seq_cst) > 0) {
    // Replies whose thread went on to a handler that takes long (or blocks on something other
    // than a future) are not held back by it.
    for (std::size_t d = 0; d < _reply_batches.size(); ++d) {
      reply_batch& batch = *_reply_batches[d];
      std::unique_lock<std::mutex> lock(batch.mutex, std::try_to_lock);
      if (!lock || batch.count == 0 || now - batch.since < batch_delay) continue;
      flush_reply_batch_locked(static_cast<int>(d), batch);
    }
  }
  if (_outboxes_filled.load(std::memory_order_seq_cst) == 0) return;
  for (std::size_t d = 0; d < _outboxes.size(); ++d) {
    outbox& box = *_outboxes[d];
    if (box.count.load(std::memory_order_acquire) == 0) continue;
    std::vector<std::uint64_t> failed;
    std::exception_ptr failure;
    {
      std::unique_lock<std::mutex> lock(box.mutex, std::try_to_lock);
      if (!lock || now - box.since < batch_delay) continue; // a sender is busy with it
      flush_locked(static_cast<int>(d), box, failed, failure);
    }
    if (failure) fail_unsent(failed, failure, static_cast<int>(d));
  }
}

void engine::drop_outboxes() noexcept {
  for (std::size_t d = 0; d < _outboxes.size(); ++d) {
    outbox& box = *_outboxes[d];
    std::lock_guard<std::mutex> lock(box.mutex);
    const std::size_t one_way =
        static_cast<std::size_t>(std::count(box.calls.begin(), box.calls.end(), 0u));
    if (one_way > 0) {
      log(std::to_string(one_way) + " one-way call(s) to " + _workers[d].name +
          " were not sent: the runtime stopped first");
    }
    if (box.count.load(std::memory_order_relaxed) > 0) {
      _outboxes_filled.fetch_sub(1, std::memory_order_seq_cst);
    }
    box.bytes.clear();
    box.calls.clear(); // the calls among them are failed by stop() with every pending call
    box.count.store(0, std::memory_order_release);
  }
  // Replies not sent yet are dropped like any reply made once stopping (see admission); under
  // their mutexes, so that no poller still sends one when the communicators are freed.
  for (auto& batch : _reply_batches) {
    std::lock_guard<std::mutex> lock(batch->mutex);
    if (batch->count > 0) _reply_batches_filled.fetch_sub(1, std::memory_order_seq_cst);
    batch->bytes.clear();
    batch->count = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Reply batches

bool engine::append_to_reply_batch(int dest, const std::vector<char>& message) {
  const reply_target& target = current_reply_target();
  if (target.owner != this || target.dest != dest ||
      message.size() + sizeof(wire::header) > wire::max_batch_bytes) {
    return false;
  }
  reply_batch& batch = *_reply_batches[static_cast<std::size_t>(dest)];
  std::lock_guard<std::mutex> lock(batch.mutex);
  if (batch.bytes.size() + message.size() > wire::max_batch_bytes) {
    flush_reply_batch_locked(dest, batch);
  }
  if (batch.count == 0) {
    batch.bytes.resize(sizeof(wire::header));
    batch.since = clock::now();
    _reply_batches_filled.fetch_add(1, std::memory_order_seq_cst);
  }
  batch.bytes.insert(batch.bytes.end(), message.begin(), message.end());
  ++batch.count;
  return true;
}

void engine::flush_reply_batch(int dest) noexcept {
  if (dest < 0) return;
  reply_batch& batch = *_reply_batches[static_cast<std::size_t>(dest)];
  std::lock_guard<std::mutex> lock(batch.mutex);
  flush_reply_batch_locked(dest, batch);
}

void engine::flush_reply_batch_locked(int dest, reply_batch& batch) noexcept {
  if (batch.count == 0) return;
  try {
    if (batch.count == 1) {
      send_counted(dest, wire::tag_reply, batch.bytes.data() + sizeof(wire::header),
                   batch.bytes.size() - sizeof(wire::header));
    } else {
      send_batch(dest, wire::tag_reply, batch.bytes, batch.count);
    }
  } catch (const std::exception& e) {
    // The callers' calls then time out (or fail at shutdown), as for a lost single reply.
    log("could not send " + std::to_string(batch.count) + " replies to " +
        _workers[static_cast<std::size_t>(dest)].name + ": " + e.what());
  }
  batch.bytes.clear();
  batch.count = 0;
  _reply_batches_filled.fetch_sub(1, std::memory_order_seq_cst);
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
  _running_handlers.fetch_sub(1, std::memory_order_seq_cst);
  struct retake {
    std::atomic<int>& n;
    ~retake() { n.fetch_add(1, std::memory_order_seq_cst); } // run_queued gives it back
  } slot_back{_running_handlers};
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
    seal(rest.bytes, 0); // the count is not known here; nothing relies on it
    order.waiting.push_front(std::move(rest));
    _ordered_waiting.fetch_add(1, std::memory_order_seq_cst);
  }
  cursor.rest = cursor.end; // nothing more of the batch runs on the cursor's thread
}

void engine::hand_off_in_order() noexcept {
  // Replies made so far must not wait behind a blocked handler.
  if (current_reply_target().owner == this) flush_reply_batch(current_reply_target().dest);
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
      e.flush_reply_batch(source);
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
      _malformed.fetch_add(1, std::memory_order_seq_cst);
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
      if (!try_take_slot()) {
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
        _running_handlers.fetch_sub(1, std::memory_order_seq_cst);
        run_queued(); // the slot may be what the run's new thread waits for
        break;
      }
      slot_held = true;
    }
    handle_request(one, sub, slot_held);
    p = next;
  }
}

void engine::one_way_failed(const std::string& what) noexcept {
  log(what); // before the count: whoever sees the count finds the line written
  _one_way_failed.fetch_add(1, std::memory_order_seq_cst);
}

} // namespace mpirpc::detail
