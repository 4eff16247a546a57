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

#include "core/this_thread.hpp"
#include "errors_internal.hpp"
#include "net/backoff.hpp"
#include "progress/pacing.hpp"

namespace mpirpc::detail {

namespace {

using clock = std::chrono::steady_clock;

/// Short sleeps need fine timers: Linux rounds them up by the thread's timer slack (50 us by
/// default). Set once per thread that polls.
void use_fine_timer_slack() noexcept {
#if defined(__linux__)
  bool& done = this_thread().fine_timer_slack;
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
  buffer_lease() : _thread(this_thread()) {
    if (_thread.receive_depth == _thread.receive_buffers.size()) {
      _thread.receive_buffers.emplace_back();
    }
    _buffer = &_thread.receive_buffers[_thread.receive_depth++];
  }
  ~buffer_lease() {
    trim_buffer(_buffer->bytes);
    --_thread.receive_depth;
  }
  buffer_lease(const buffer_lease&) = delete;
  buffer_lease& operator=(const buffer_lease&) = delete;
  incoming& get() noexcept { return *_buffer; }

private:
  thread_state& _thread;
  incoming* _buffer;
};

} // namespace

engine::engine(const options& opts, std::unique_ptr<transport> t, std::vector<worker_info> workers,
               bool spin_allowed, bool oversubscribed, lending_log& lending)
    : _num_handlers(opts.num_worker_threads), _idle_poll_interval(opts.idle_poll_interval),
      _transport(std::move(t)), _session(std::move(workers), _transport->rank()),
      _spin_window(spin_allowed ? spin_window : std::chrono::microseconds(0)),
      _oversubscribed(oversubscribed), _pending(_session.size()),
      _one_way(_session.size(), opts.max_one_way_bytes),
      _outboxes(_session.size(), *this, _pending, _session, _stats, &_one_way),
      _sender(*_transport, _messages, _outboxes, _pending, _session, _stats, *this,
              sender::limits{opts.max_outstanding_calls, opts.rpc_timeout.count(),
                             opts.max_one_way_bytes},
              _one_way),
      _replies(_sender, _session, _diagnostics, lending),
      _server(opts.num_worker_threads, *this, _session),
      _receiver(receiver::parts{*_transport, _session, _stats, _diagnostics, _messages, _pending,
                                _sender, _outboxes, _replies, _server}),
      _timeouts(_pending, _session, _stats), _chores(_timeouts, _outboxes) {}

engine::~engine() {
  stop_if_running("the runtime was destroyed");
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
  return _receiver.in_order().batches_replies_to(dest);
}

void engine::call_sent() noexcept {
  _baton.wake_idle();
}

void engine::work_posted() noexcept {
  _baton.work_posted();
}

void engine::run_queued_request(incoming& message) {
  _receiver.run_queued_request(message);
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

namespace {
/// A lone message of the one-way window (a marker or an acknowledgement).
bool is_window_message(const incoming& message) noexcept {
  if (message.tag != wire::tag_request || message.bytes.size() < sizeof(wire::header)) return false;
  wire::header h;
  std::memcpy(&h, message.bytes.data(), sizeof h);
  return h.kind == static_cast<std::uint8_t>(wire::kind::request) &&
         one_way_window::is_window_message(h.function_id);
}
} // namespace

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
      const bool replies_expected = _sender.replies_awaited() || _replies.held() > 0;
      got = _transport->try_receive(tag, message, replies_expected);
    } catch (const std::exception& e) {
      log(std::string("polling failed: ") + e.what());
    }
    if (got) {
      // An acknowledgement of the one-way window is bookkeeping, not traffic: it must not make
      // this rank's poller spin (a flooding sender's rank gets nothing else).
      const bool traffic = !is_window_message(message);
      if (traffic && message.tag == wire::tag_request) last_request = clock::now();
      _baton.took_message();
      // Decided before another thread may poll, so that requests from one source that must
      // run in order are taken up in the order they arrived.
      const in_order_runs::route r = _receiver.in_order().route_received(message);
      _baton.release_for_dispatch(); // another thread may poll while this one dispatches
      if (r == in_order_runs::route::in_order) {
        _receiver.in_order().run(message);
      } else if (r == in_order_runs::route::dispatch) {
        _receiver.dispatch(message);
      }
      if (!_baton.try_take()) return; // leadership moved on
      if (traffic) last_activity = clock::now();
      continue;
    }
    const auto now = clock::now(); // one clock read per idle poll, shared with the timeouts
    // Chores may block in MPI until a receiver takes what they send: never while holding the
    // baton, so that another thread of this rank can take over receiving meanwhile.
    if (!_chores.run(
            now, [this] { _baton.release(); }, [this] { return _baton.try_take(); })) {
      return; // leadership moved on
    }
    _receiver.in_order().rescue_stalled(now);
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
    view.calls_out = (_sender.replies_awaited() && _waiters.load(std::memory_order_relaxed) == 0) ||
                     _replies.held() > 0;
    // Posted sends too: one MPI does not complete eagerly moves only while this rank polls.
    view.batches_out = _outboxes.any() || _transport->sends_in_flight() > 0;
    view.called_lately = now - _sender.last_call() < pacing::recent_call_window;
    // Not while a caller sleeps for room in the window: the leader alone receives its replies.
    view.streaming =
        view.driven && _pending.size() >= pacing::stream_outstanding && !_sender.waiting_for_room();
    view.idle_poll_interval = _idle_poll_interval;
    const pacing::leader_sleep decision = pacing::leader_sleep_for(view);
    _transport->reap_sends(); // before it sleeps: the buffers of batches that have arrived
    if (!_baton.sleep(
            now, decision.sleep, decision.idle, [this] { return _sender.replies_awaited(); },
            _stop_threads)) {
      continue; // a call came in as it was about to sleep idle
    }
  }
  _baton.leave();
}

// ---------------------------------------------------------------------------------------------
// Waiting

void engine::wait(future_state_base& state) {
  use_fine_timer_slack();
  // What this thread batched leaves now, and an in-order run it is in goes on elsewhere: the
  // awaited reply may depend on either. Replies it makes meanwhile are sent at once.
  flush_outboxes();
  _receiver.in_order().hand_off();
  const in_order_runs::reply_batch_pause no_reply_batch;
  buffer_lease lease;
  incoming& message = lease.get();
  const auto start = clock::now();
  // A thread whose recent waits were all long starts quietly (progress/pacing.hpp).
  const pacing::wait_start plan =
      pacing::start_wait(this_thread().waits, _oversubscribed, _spin_window);
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
        _receiver.dispatch(message);
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
  this_thread().waits.record(clock::now() - start);
}

// ---------------------------------------------------------------------------------------------
// Shutdown

quiescence::outcome engine::quiesce(quiet_purpose purpose, clock::time_point deadline) {
  return quiescence(*_transport, _session, _messages)
      .wait_until_quiet(
          purpose, deadline, [this] { flush_outboxes(); },
          [this] {
            // Queued before running (see quiescence). Requests waiting for an in-order run
            // count as queued, one-way calls still running asynchronously as running (nobody
            // else counts them).
            busy_counts b;
            b.queued =
                static_cast<std::uint64_t>(_server.queued()) + _receiver.in_order().waiting();
            b.running = static_cast<std::uint64_t>(_server.running()) +
                        static_cast<std::uint64_t>(_replies.held_one_way());
            b.pending = static_cast<std::uint64_t>(_pending.size());
            return b;
          });
}

void engine::stop(const std::string& reason) {
  _sender.gate().close();
  _outboxes.drop();
  _receiver.refuse_queued();
  _receiver.in_order().refuse_waiting();
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
  _receiver.refuse_queued(); // a request queued while the threads were stopping
  _receiver.in_order().refuse_waiting();
  _stopped.store(true, std::memory_order_seq_cst);
  _transport->close();
}

runtime_stats engine::stats() const {
  return _stats.snapshot();
}

} // namespace mpirpc::detail
