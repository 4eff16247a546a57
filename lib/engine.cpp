// SPDX-License-Identifier: MIT
#include "engine.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include <mpirpc/errors.hpp>

#include "batching.hpp"
#include "core/quiescence.hpp"
#include "core/this_thread.hpp"
#include "errors_internal.hpp"
#include "net/backoff.hpp"
#include "progress/pacing.hpp"

namespace mpirpc::detail {

std::atomic<late_reply_hook> g_late_reply_hook{nullptr};

namespace {

using clock = std::chrono::steady_clock;

/// Short sleeps need fine timers: Linux rounds them up by the thread's timer slack (50 us by
/// default). Set once per thread that polls.
void use_fine_timer_slack() noexcept {
#if defined(__linux__)
  thread_local bool done = false;
  if (!done) {
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    done = true;
  }
#endif
}

/// Receive buffers of this thread, one per nesting level: a handler run inline may wait on a
/// future and so receive again while its own request's buffer is still in use.
class buffer_lease {
public:
  buffer_lease() {
    if (depth() == pool().size()) pool().emplace_back();
    _buffer = &pool()[depth()++];
  }
  ~buffer_lease() {
    trim_buffer(_buffer->bytes);
    --depth();
  }
  buffer_lease(const buffer_lease&) = delete;
  buffer_lease& operator=(const buffer_lease&) = delete;
  incoming& get() noexcept { return *_buffer; }

private:
  static std::deque<incoming>& pool() {
    thread_local std::deque<incoming> buffers;
    return buffers;
  }
  static std::size_t& depth() {
    thread_local std::size_t n = 0;
    return n;
  }
  incoming* _buffer;
};

} // namespace

engine::engine(const options& opts, std::unique_ptr<transport> t, std::vector<worker_info> workers,
               bool spin_allowed, bool oversubscribed)
    : _num_handlers(opts.num_worker_threads), _idle_poll_interval(opts.idle_poll_interval),
      _transport(std::move(t)), _session(std::move(workers), _transport->rank()),
      _spin_window(spin_allowed ? spin_window : std::chrono::microseconds(0)),
      _oversubscribed(oversubscribed), _pending(_session.size()),
      _outboxes(_session.size(), *this, _pending, _session, _stats),
      _sender(*_transport, _messages, _outboxes, _pending, _session, _stats, *this,
              sender::limits{opts.max_outstanding_calls, opts.rpc_timeout.count()}),
      _replies(_sender, _session, _diagnostics, _lending),
      _server(opts.num_worker_threads, *this, _session), _timeouts(_pending, _session, _stats),
      _chores(_timeouts, _outboxes) {
  for (std::size_t r = 0; r < _session.workers().size(); ++r) {
    _in_order.push_back(std::make_unique<in_order>());
  }
  _rrefs = std::make_unique<rref_table>(*this);
}

engine::~engine() {
  if (!_stopped.load()) stop("the runtime was destroyed");
}

void engine::start_threads() {
  const int count = _num_handlers + 1;
  _threads.reserve(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i)
    _threads.emplace_back([this] { thread_main(); });
}

// ---------------------------------------------------------------------------------------------
// Sending

void engine::send_control(int dest, int tag, const char* data, std::size_t size) {
  _messages.send(
      [&](bool* control_sent) { _transport->send(dest, tag, data, size, {}, 0, control_sent); });
}

void engine::batch_started() noexcept {
  // A new batch: sent when this or another thread waits, when it is full, or by the leader,
  // which looks at least every batch_poll_interval while a batch is out. The leader is woken
  // only if it sleeps longer than that (waking it for every batch would cost more than the
  // batch saves).
  _baton.wake_if_asleep_past(clock::now() + pacing::batch_poll_interval);
}

bool engine::batches_replies_to(int dest) const noexcept {
  const reply_target& target = current_reply_target();
  return target.owner == this && target.dest == dest;
}

void engine::call_sent() noexcept {
  _baton.wake_idle();
}

void engine::before_waiting_for_room() noexcept {
  hand_off_in_order();
}

void engine::request_dropped() noexcept {
  _lending.undo(0);
}

std::exception_ptr engine::decode_error_reply(const char* payload, std::size_t size,
                                              const pending_call& call) const {
  reader in(payload, size);
  const auto code = static_cast<wire::error_code>(in.read_plain<std::uint8_t>());
  std::string origin, type, message;
  load(in, origin);
  load(in, type);
  load(in, message);
  const std::string fn = function_name(call.function_id);
  const std::string& callee = _session.name_of(call.dest);
  switch (code) {
  case wire::error_code::remote_exception:
    return std::make_exception_ptr(remote_error(origin, type, message));
  case wire::error_code::unknown_function:
    return std::make_exception_ptr(unknown_function_error(
        "mpirpc: " + callee + " has no function registered as '" + fn + "' (it is registered on " +
        self().name + "; the ranks' registries differ)"));
  case wire::error_code::serialization:
  case wire::error_code::malformed:
    return std::make_exception_ptr(
        serialization_error("mpirpc: call to '" + fn + "' on " + callee + " failed: " + message));
  case wire::error_code::shutting_down:
    return std::make_exception_ptr(
        shutdown_error("mpirpc: call to '" + fn + "' on " + callee + " failed: " + message));
  }
  return std::make_exception_ptr(serialization_error("mpirpc: malformed error reply from " +
                                                     callee + " to a call of '" + fn + "'"));
}

// ---------------------------------------------------------------------------------------------
// Receiving

void engine::dispatch(incoming& message) noexcept {
  sender::message_received(); // what this thread sends next follows a message: no burst
  wire::header h{};
  const std::uint32_t max_tag = _transport->tag_ub();
  const std::size_t size = message.bytes.size();
  std::string problem = wire::validate(message.bytes.data(), size, message.tag, h, max_tag);
  const bool cut = !message.problem.empty(); // not received whole: its table is not there
  if (cut) problem = message.problem;
  if (!problem.empty()) {
    // Refused (docs/wire.md, "Validation on receipt"). Its out-of-line buffers are received and
    // discarded if its segment table can be read (at the message's end, where senders put
    // it), so that the sender is not left blocked; then it is logged, counted, answered if it
    // came as a request with a readable header, and counted as received like any message.
    std::string segments;
    if (!message.prefetched.empty()) {
      segments = "; its out-of-line buffer(s) were discarded";
    } else if (!cut && wire::segment_table_readable(size, h, max_tag)) {
      const char* table =
          message.bytes.data() + size - std::size_t(h.segment_count) * sizeof(std::uint64_t);
      const bool drained = segment_stream(*_transport, message.source, h.data_tag, table,
                                          h.segment_count, &_diagnostics, true)
                               .drain();
      segments = drained ? "; its " + std::to_string(h.segment_count) +
                               " out-of-line buffer(s) were received and discarded"
                         : "; its out-of-line buffers were not all received";
    } else if (size >= sizeof(wire::header) && h.magic == wire::magic && h.segment_count > 0) {
      segments = "; the out-of-line buffers it announces were not received (no usable segment "
                 "table or data tag)";
    }
    log("dropped a malformed message from rank " + std::to_string(message.source) + " (tag " +
        std::to_string(message.tag) + "): " + problem + segments);
    _stats.malformed.fetch_add(1, std::memory_order_seq_cst);
    if (message.tag == wire::tag_request && size >= sizeof(wire::header) &&
        h.magic == wire::magic && !(h.flags & wire::request_one_way) &&
        h.kind != static_cast<std::uint8_t>(wire::kind::batch) &&
        h.kind != static_cast<std::uint8_t>(wire::kind::envelope)) {
      _sender.send_error_reply(message.source, h.call_id, h.function_id,
                               wire::error_code::malformed, "mpirpc::serialization_error",
                               "malformed request: " + problem, self().name);
    }
    if (!message.continuation) _messages.received();
    return;
  }
  const bool counted = message.continuation; // the rest of a batch counted already
  try {
    if (h.kind == static_cast<std::uint8_t>(wire::kind::batch)) {
      handle_batch(message, h);
    } else if (h.kind == static_cast<std::uint8_t>(wire::kind::request)) {
      handle_request(message, h);
    } else {
      handle_reply(message, h);
    }
  } catch (const std::exception& e) {
    log(std::string("error while dispatching a message: ") + e.what());
  }
  if (!counted) _messages.received();
}

void engine::handle_request(incoming& message, const wire::header& h, bool slot_held) {
  struct slot_guard { // a slot taken for this request by the caller goes back if it cannot run
    engine& e;
    bool held;
    ~slot_guard() {
      if (held) e._server.release_slot();
    }
  } slot{*this, slot_held};
  const bool one_way = (h.flags & wire::request_one_way) != 0;
  const function_entry* fn = registry::instance().by_id(h.function_id);
  if (!fn) {
    segment_stream(*_transport, message, h, &_diagnostics).drain();
    if (one_way) {
      _stats.one_way_run.fetch_add(1, std::memory_order_relaxed);
      _diagnostics.one_way_failed("a one-way call from " + _session.name_of(message.source) +
                                  " was dropped: " + function_name(h.function_id) +
                                  " is not registered on " + self().name);
      return;
    }
    _sender.send_error_reply(message.source, h.call_id, h.function_id,
                             wire::error_code::unknown_function, "mpirpc::unknown_function_error",
                             "no such function", self().name);
    return;
  }
  if (!_sender.gate().open()) { // a non-graceful stop is under way
    segment_stream(*_transport, message, h, &_diagnostics).drain();
    if (one_way) {
      _stats.one_way_run.fetch_add(1, std::memory_order_relaxed);
      _diagnostics.one_way_failed("a one-way call of '" + fn->name + "' from " +
                                  _session.name_of(message.source) +
                                  " was not run: " + self().name + " is shutting down");
      return;
    }
    _sender.send_error_reply(message.source, h.call_id, h.function_id,
                             wire::error_code::shutting_down, "mpirpc::shutdown_error",
                             self().name + " is shutting down", self().name);
    return;
  }
  if (slot_held) {
    slot.held = false; // released below, after the handler
  } else if (!_server.try_take_slot()) {
    // In an in-order run, the request and what follows it go to a server thread together.
    // (Within a batch the batch takes the slot first: only a request run on its own gets here.)
    in_order_cursor* cursor = current_cursor();
    if (cursor && cursor->owner == this) {
      // Its sender is released first, as for a queued request (dispatch counts it).
      if (h.segment_count > 0 && message.prefetched.empty() && !prefetch_deferred(message, false)) {
        return;
      }
      {
        std::lock_guard<std::mutex> lock(
            _in_order[static_cast<std::size_t>(cursor->source)]->mutex);
        cursor->whole = &message;
      }
      hand_off_in_order();
      return;
    }
    // The request waits for a handler slot; its sender must not wait with it (a sender blocked
    // on an unreceived buffer might itself hold the slot the request needs): take the buffers
    // now and decode from memory later.
    if (h.segment_count > 0) {
      segment_stream segments(*_transport, message, h, &_diagnostics);
      try {
        segments.prefetch(message.prefetched);
      } catch (const std::exception& e) { // the buffers do not match the table, or no memory
        segments.drain();
        message.prefetched.clear();
        _sender.send_error_reply(message.source, h.call_id, h.function_id,
                                 wire::error_code::serialization, "mpirpc::serialization_error",
                                 "the arguments of '" + fn->name + "' could not be received on " +
                                     self().name + ": " + e.what(),
                                 self().name);
        return;
      }
    }
    const bool first = _server.queue(std::move(message));
    message.bytes = std::vector<char>();
    message.prefetched.clear();
    if (first) {
      log("warning: all " + std::to_string(_server.slots()) +
          " server threads are busy, so requests wait in a queue. A handler that blocks "
          "(rpc_sync, future::wait) holds its thread until the nested call returns: return an "
          "mpirpc::future from such a function instead (async execution, see functions.hpp), or "
          "raise options::num_worker_threads. Timeouts still fire. (Reported once.)");
    }
    run_queued(); // a slot may have been freed meanwhile
    return;
  }
  run_request(message, h, *fn);
  _server.release_slot();
  run_queued();
}

bool engine::prefetch_deferred(incoming& message, bool count_received) noexcept {
  wire::header h{};
  if (!wire::validate(message.bytes.data(), message.bytes.size(), message.tag, h,
                      _transport->tag_ub())
           .empty()) {
    return true; // refused (and drained) when it is dispatched
  }
  segment_stream segments(*_transport, message, h, &_diagnostics);
  try {
    segments.prefetch(message.prefetched);
    return true;
  } catch (const std::exception& e) { // the buffers do not match the table, or no memory
    segments.drain();
    message.prefetched.clear();
    const std::string what = "the arguments of '" + function_name(h.function_id) +
                             "' could not be received on " + self().name + ": " + e.what();
    if (h.flags & wire::request_one_way) {
      _diagnostics.one_way_failed("a one-way call from " + _session.name_of(message.source) +
                                  " failed: " + what);
    } else {
      _sender.send_error_reply(message.source, h.call_id, h.function_id,
                               wire::error_code::serialization, "mpirpc::serialization_error", what,
                               self().name);
    }
    if (count_received) _messages.received();
    return false;
  }
}

void engine::run_request(const incoming& message, const wire::header& h, const function_entry& fn) {
  segment_stream segments(*_transport, message, h, &_diagnostics);
  reader in(message.bytes.data() + sizeof(wire::header), static_cast<std::size_t>(h.payload_size),
            &segments);
  reply_token token;
  token.source = message.source;
  token.call_id = h.call_id;
  token.function_id = h.function_id;
  token.owner = this;
  token.one_way = (h.flags & wire::request_one_way) != 0;
  if (token.one_way) _stats.one_way_run.fetch_add(1, std::memory_order_relaxed);
  try {
    if (h.flags & wire::request_rref_flags) {
      _rrefs->serve(h.flags, fn, in, token);
    } else {
      fn.invoke(fn.fn, in, token);
    }
  } catch (const argument_error& e) {
    segments.drain();
    const std::string what = "the arguments of '" + fn.name + "' could not be deserialized on " +
                             self().name + ": " + e.what();
    if (token.one_way) {
      _diagnostics.one_way_failed("a one-way call from " + _session.name_of(token.source) +
                                  " failed: " + what);
    } else {
      _sender.send_error_reply(token.source, token.call_id, token.function_id,
                               wire::error_code::serialization, "mpirpc::serialization_error", what,
                               self().name);
    }
    _stats.requests_served.fetch_add(1, std::memory_order_relaxed);
    return;
  } catch (...) {
    segments.drain();
    _replies.send_error(token, std::current_exception());
    _stats.requests_served.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  segments.drain();
  _stats.requests_served.fetch_add(1, std::memory_order_relaxed);
}

void engine::work_posted() noexcept {
  _baton.work_posted();
}

void engine::run_queued_request(incoming& message) {
  wire::header h;
  std::memcpy(&h, message.bytes.data(), sizeof h);
  if (const function_entry* fn = registry::instance().by_id(h.function_id)) {
    run_request(message, h, *fn);
  }
}

void engine::handle_reply(incoming& message, const wire::header& h) {
  segment_stream segments(*_transport, message, h, &_diagnostics);
  std::optional<pending_call> call = _pending.take(h.call_id);
  if (!call) {
    segments.drain();
    const late_reply_hook hook = g_late_reply_hook.load(std::memory_order_acquire);
    if (hook && hook(message)) return; // a reply to a test's raw message
    _stats.late_replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  _stats.replies_received.fetch_add(1, std::memory_order_relaxed);
  const char* payload = message.bytes.data() + sizeof(wire::header);
  const auto size = static_cast<std::size_t>(h.payload_size);
  progress_callback_scope scope;
  if (h.kind == static_cast<std::uint8_t>(wire::kind::reply_value)) {
    reader in(payload, size, &segments);
    try {
      call->sink->on_reply(in);
    } catch (...) {
      call->sink->on_error(std::make_exception_ptr(serialization_error(
          "mpirpc: the result of '" + function_name(call->function_id) + "' from " +
          _session.name_of(call->dest) + " could not be decoded on " + self().name + ": " +
          describe_exception(std::current_exception()).message)));
    }
    segments.drain();
  } else {
    segments.drain();
    std::exception_ptr error;
    try {
      error = decode_error_reply(payload, size, *call);
    } catch (...) {
      error = std::current_exception();
    }
    call->sink->on_error(error);
  }
}

// ---------------------------------------------------------------------------------------------
// Threads: leader/followers

bool engine::on_engine_thread() noexcept {
  return this_thread().on_engine_thread;
}

void engine::thread_main() {
  this_thread().on_engine_thread = true;
  use_fine_timer_slack();
  while (!_stop_threads.load(std::memory_order_acquire)) {
    const bool leading =
        _baton.try_take() ||
        _baton.follow([this] { return _server.work_for_a_free_slot(); },
                      // A leader that is moving a buffer within its spin budget is not stuck (a
                      // 16 MiB echo keeps it 10 ms); a promotion then would only add a poller on
                      // the core it copies on.
                      [this] { return _transport->spinning_transfers() == 0; }, _stop_threads);
    if (leading) lead();
    run_queued();
  }
}

void engine::lead() {
  buffer_lease lease;
  incoming& message = lease.get();
  auto last_activity = clock::now();
  clock::time_point last_request{}; // this rank serves while requests come (serving_window)
  while (!_stop_threads.load(std::memory_order_acquire)) {
    bool got = false;
    try {
      // While a thread waits, it polls for replies itself; the leader then looks only for
      // requests, so that the two do not race for the same replies (and the leader, seeing
      // no traffic of its own, sleeps instead of stealing the core a waiter spins on).
      // Likewise while a thread of this rank spins in a transfer (for a bounded time): when it
      // is a caller sending its request, it is about to wait for the reply.
      const int tag =
          _waiters.load(std::memory_order_relaxed) > 0 || _transport->spinning_transfers() > 0
              ? wire::tag_request
              : MPI_ANY_TAG;
      const bool replies_expected = _pending.size() > 0 || _replies.held() > 0;
      got = _transport->try_receive(tag, message, replies_expected);
    } catch (const std::exception& e) {
      log(std::string("polling failed: ") + e.what());
    }
    if (got) {
      if (message.tag == wire::tag_request) last_request = clock::now();
      _baton.took_message();
      // Decided before another thread may poll, so that requests from one source that must
      // run in order are taken up in the order they arrived.
      const route r = route_received(message);
      _baton.release_for_dispatch(); // another thread may poll while this one dispatches
      if (r == route::in_order) {
        run_in_order(message);
      } else if (r == route::dispatch) {
        dispatch(message);
      }
      if (!_baton.try_take()) return; // leadership moved on
      last_activity = clock::now();
      continue;
    }
    const auto now = clock::now(); // one clock read per idle poll, shared with the timeouts
    // Chores may block in MPI until a receiver takes what they send: never while holding the
    // baton, so that another thread of this rank can take over receiving meanwhile.
    if (!_chores.run(
            now, [this] { _baton.release(); }, [this] { return _baton.try_take(); })) {
      return; // leadership moved on
    }
    rescue_stalled_runs(now);
    pacing::leader_view view;
    view.idle_for = now - last_activity;
    // A caller polls for its replies (caller_window), and no request has come lately.
    view.driven = pacing::caller_drives(_waiters.load(std::memory_order_relaxed), now,
                                        _sender.last_user_call()) &&
                  now - last_request >= pacing::serving_window;
    view.spin_window = _spin_window;
    view.others_spin = _spinning_waiters.load(std::memory_order_relaxed) != 0 ||
                       _transport->spinning_transfers() != 0;
    if (pacing::leader_spins(view)) {
      cpu_relax(); // one pause: on recent x86 it alone takes ~100 cycles
      continue;
    }
    view.calls_out = (_pending.size() > 0 && _waiters.load(std::memory_order_relaxed) == 0) ||
                     _replies.held() > 0;
    view.batches_out = _outboxes.any();
    view.called_lately = now - _sender.last_call() < pacing::recent_call_window;
    view.idle_poll_interval = _idle_poll_interval;
    const pacing::leader_sleep decision = pacing::leader_sleep_for(view);
    if (!_baton.sleep(
            now, decision.sleep, decision.idle, [this] { return _pending.size() > 0; },
            _stop_threads)) {
      continue; // a call came in as it was about to sleep idle
    }
  }
  _baton.leave();
}

// ---------------------------------------------------------------------------------------------
// Waiting

namespace {
thread_local pacing::wait_history t_waits; ///< this thread's last waits
} // namespace

void engine::wait(future_state_base& state) {
  use_fine_timer_slack();
  // What this thread batched leaves now, and an in-order run it is in goes on elsewhere: the
  // awaited reply may depend on either. Replies it makes meanwhile are sent at once.
  flush_outboxes();
  hand_off_in_order();
  struct reply_batch_pause {
    reply_target& slot = current_reply_target();
    reply_target saved = std::exchange(slot, reply_target{});
    ~reply_batch_pause() { slot = saved; }
  } no_reply_batch;
  buffer_lease lease;
  incoming& message = lease.get();
  const auto start = clock::now();
  // A thread whose recent waits were all long starts quietly (progress/pacing.hpp).
  const pacing::wait_start plan = pacing::start_wait(t_waits, _oversubscribed, _spin_window);
  const clock::time_point quiet_until = start + plan.quiet_for;
  bool spinning = plan.spin;
  if (spinning) _spinning_waiters.fetch_add(1, std::memory_order_relaxed);
  _waiters.fetch_add(1, std::memory_order_relaxed);
  struct waiter_guard {
    engine& e;
    bool& spinning;
    ~waiter_guard() {
      if (spinning) e._spinning_waiters.fetch_sub(1, std::memory_order_relaxed);
      e._waiters.fetch_sub(1, std::memory_order_relaxed);
    }
  } guard{*this, spinning};
  while (!state.done()) {
    {
      const admission_gate::pass admitted(_sender.gate());
      if (!admitted) break; // stopping: stop() fails every outstanding call
      if (_transport->try_receive(wire::tag_reply, message)) {
        // Not a poller while it dispatches: a continuation may block in a send until the
        // receiver takes it, and if that receiver waits the same way for this rank, only this
        // rank's leader, taking replies again meanwhile, can release both.
        _waiters.fetch_sub(1, std::memory_order_relaxed);
        dispatch(message);
        _waiters.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
    }
    const auto now = clock::now();
    // Not a poller while it runs chores either: the receiver of what they send may be a waiter
    // of another rank doing the same; the leader takes replies meanwhile.
    _chores.run(
        now, [this] { _waiters.fetch_sub(1, std::memory_order_relaxed); },
        [this] {
          _waiters.fetch_add(1, std::memory_order_relaxed);
          return true;
        });
    if (spinning) {
      if (now - start < _spin_window) {
        cpu_relax();
        continue;
      }
      spinning = false;
      _spinning_waiters.fetch_sub(1, std::memory_order_relaxed);
    }
    state.sleep_until(
        std::max(now + pacing::waiter_sleep(now - start, _oversubscribed), quiet_until));
  }
  if (!state.done()) {
    state.sleep_until_done();
    return;
  }
  t_waits.record(clock::now() - start);
}

// ---------------------------------------------------------------------------------------------
// Shutdown

std::string engine::quiesce(clock::time_point deadline) {
  return quiescence(*_transport, _session, _messages)
      .wait_until_quiet(
          deadline, [this] { flush_outboxes(); },
          [this] {
            // Queued before running (see quiescence). Requests waiting for an in-order run
            // count as queued, one-way calls still running asynchronously as running (nobody
            // else counts them).
            busy_counts b;
            b.queued = static_cast<std::uint64_t>(_server.queued()) +
                       _ordered_waiting.load(std::memory_order_seq_cst);
            b.running = static_cast<std::uint64_t>(_server.running()) +
                        static_cast<std::uint64_t>(_replies.held_one_way());
            b.pending = static_cast<std::uint64_t>(_pending.size());
            return b;
          });
}

void engine::refuse_queued() noexcept {
  // Requests that never got a handler slot are answered, so that their callers do not wait.
  const std::deque<incoming> unserved = _server.take_all();
  for (const incoming& m : unserved) {
    wire::header h;
    std::memcpy(&h, m.bytes.data(), sizeof h);
    segment_stream(*_transport, m, h).drain();
    _sender.send_error_reply(m.source, h.call_id, h.function_id, wire::error_code::shutting_down,
                             "mpirpc::shutdown_error",
                             self().name + " shut down before serving the call", self().name);
  }
}

void engine::refuse_in_order() noexcept {
  for (std::size_t s = 0; s < _in_order.size(); ++s) {
    std::deque<incoming> unserved;
    {
      std::lock_guard<std::mutex> lock(_in_order[s]->mutex);
      unserved.swap(_in_order[s]->waiting);
    }
    _ordered_waiting.fetch_sub(unserved.size(), std::memory_order_seq_cst);
    for (const incoming& m : unserved) {
      wire::header h;
      if (!wire::validate(m.bytes.data(), m.bytes.size(), m.tag, h, _transport->tag_ub()).empty()) {
        continue;
      }
      auto refuse = [&](const wire::header& r) {
        if (r.flags & wire::request_one_way) {
          _stats.one_way_run.fetch_add(1, std::memory_order_relaxed); // counted like any it refuses
          _diagnostics.one_way_failed("a one-way call of '" + function_name(r.function_id) +
                                      "' from " + _session.name_of(static_cast<int>(s)) +
                                      " was not run: " + self().name + " shut down first");
          return;
        }
        _sender.send_error_reply(m.source, r.call_id, r.function_id,
                                 wire::error_code::shutting_down, "mpirpc::shutdown_error",
                                 self().name + " shut down before serving the call", self().name);
      };
      if (h.kind != static_cast<std::uint8_t>(wire::kind::batch)) {
        segment_stream(*_transport, m, h).drain();
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

void engine::stop(const std::string& reason) {
  _sender.gate().close();
  _outboxes.drop();
  refuse_queued();
  refuse_in_order();
  // Fail what is still outstanding first: a handler blocked waiting on one of these calls
  // must return before its thread can be joined.
  std::vector<pending_call> orphans = _pending.take_all();
  const progress_callback_scope scope; // their continuations must neither wait nor shut down
  for (pending_call& call : orphans) {
    call.sink->on_error(std::make_exception_ptr(
        shutdown_error("mpirpc: call to '" + function_name(call.function_id) + "' on " +
                       _session.name_of(call.dest) + " was abandoned: " + reason)));
  }
  _stop_threads.store(true, std::memory_order_seq_cst);
  _baton.wake_all();
  for (auto& t : _threads) {
    if (t.joinable()) t.join();
  }
  _threads.clear();
  refuse_queued(); // a request queued while the threads were stopping
  refuse_in_order();
  _stopped.store(true, std::memory_order_seq_cst);
  _transport->close();
}

runtime_stats engine::stats() const {
  runtime_stats s = _stats.snapshot();
  s.rref_owned_objects = _rrefs->owned_objects();
  s.rref_references = _rrefs->references();
  return s;
}

} // namespace mpirpc::detail
