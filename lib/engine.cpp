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

#include "backoff.hpp"
#include "batching.hpp"
#include "errors_internal.hpp"
#include "testing.hpp"

namespace mpirpc::detail {

namespace {

using clock = std::chrono::steady_clock;

/// Longest leader sleep while calls of this rank await replies.
constexpr auto busy_poll_interval = std::chrono::microseconds(200);
/// Longest sleep of a thread waiting for a reply between its polls.
constexpr auto waiter_max_sleep = std::chrono::microseconds(1000);
/// On an oversubscribed node, a waiter past its spin sleeps at least this fraction of the time
/// it has waited, so that it notices its reply at most that much late.
constexpr int waiter_sleep_divisor = 8;
/// A rank that sent a request within this window does not count as deeply idle.
constexpr auto recent_call_window = std::chrono::milliseconds(50);
/// Shortest sleep between polls.
constexpr auto min_sleep = std::chrono::microseconds(2);

/// Caller-driven progress. While a thread waits for a reply (it polls for replies itself), or
/// a thread of the user's has sent a call within caller_window (it will wait, and then poll,
/// soon), and no request has come for serving_window, the leader neither spins nor polls more
/// often than every caller_leader_sleep: it would take the core of that thread (Open MPI binds
/// each of two ranks on two cores to one core, so a rank's threads share one).
constexpr auto caller_window = std::chrono::microseconds(100);
constexpr auto caller_leader_sleep = std::chrono::microseconds(50);
constexpr auto serving_window = std::chrono::microseconds(1000);

/// Traffic within this window counts as ongoing: the poller keeps looking as often as it can.
constexpr auto active_window = std::chrono::microseconds(1000);

/// The sleep before the next poll after `idle_for` without a message. While traffic is
/// ongoing, the shortest sleep; after that a quarter of the idle time beyond the window, so
/// that a rank idle for long costs few wake-ups. (A sleep proportional to the whole gap would
/// feed on itself: slow polls make long gaps, which make slower polls.)
std::chrono::microseconds paced_sleep(clock::duration idle_for, std::chrono::microseconds cap) {
  if (idle_for < active_window) return min_sleep;
  const auto quarter =
      std::chrono::duration_cast<std::chrono::microseconds>((idle_for - active_window) / 4);
  return std::clamp(quarter, min_sleep, std::max(min_sleep, cap));
}

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
/// How often the standby thread checks that the leader still polls.
constexpr auto promote_interval = std::chrono::microseconds(5000);
/// How often the pending table is scanned for expired calls.
constexpr auto timeout_scan_interval = std::chrono::milliseconds(1);

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

std::vector<char>& reply_buffer() {
  thread_local std::vector<char> buffer;
  return buffer;
}

} // namespace

/// Feeds a message's out-of-line buffers to the decoder, in order, checking each against the
/// segment table: straight from MPI into the destination, or from copies in memory (taken when
/// the request had to wait in the queue, or made by this rank when it sent the message to
/// itself). drain() swallows those the decoder did not take.
///
/// Every chunk is matched (MPI_Improbe) before anything is sized or received for it, and must
/// have exactly the size the table implies: a table that disagrees with what was sent is a
/// serialization_error, never an oversized receive (which Open MPI's shared-memory transport
/// answers with a crash) nor a short one (silently accepted by MPI). A chunk that does not
/// show up within the transport's patience is an error too; after that the stream gives up
/// and receives nothing more, so that a forged table costs one patience, not a stalled thread.
struct engine::segment_stream final : segment_source {
  segment_stream(transport& t, const incoming& message, const wire::header& h,
                 engine* owner = nullptr)
      : segment_stream(t, message.source, h.data_tag,
                       message.bytes.data() + sizeof(wire::header) + h.payload_size,
                       h.segment_count, owner) {
    if (!message.prefetched.empty()) _prefetched = &message.prefetched;
  }
  /// A message whose table is at `table` (for one that failed validation: its last bytes;
  /// the caller has counted it as malformed already).
  segment_stream(transport& t, int source, std::uint32_t data_tag, const char* table,
                 std::uint32_t count, engine* owner, bool counted = false)
      : _t(t), _owner(owner), _source(source), _tag(data_tag), _table(table), _count(count),
        _counted(counted) {}
  ~segment_stream() override {
    if (_next < _count || _held) drain();
  }
  segment_stream(const segment_stream&) = delete;
  segment_stream& operator=(const segment_stream&) = delete;

  std::size_t next_segment_size() const override {
    check_next();
    if (!_prefetched) hold_first_chunk(); // the decoder sizes its destination next
    return static_cast<std::size_t>(size_of(_next));
  }

  void receive_segment(void* dst, std::size_t bytes) override {
    check_next();
    const std::uint64_t expected = size_of(_next);
    if (expected != bytes) {
      throw serialization_error("mpirpc: malformed message: out-of-line buffer of " +
                                std::to_string(bytes) + " bytes announced, table says " +
                                std::to_string(expected));
    }
    if (_prefetched) {
      if (bytes) std::memcpy(dst, (*_prefetched)[_next].data(), bytes);
    } else {
      receive_into(static_cast<char*>(dst));
    }
    ++_next;
  }

  /// Receives every buffer not yet taken into `out`, so that the sender is released now and
  /// the message can be decoded later from memory.
  void prefetch(std::vector<std::vector<char>>& out) {
    if (_prefetched) { // in memory already (prefetched before, or sent by this rank itself)
      _next = _count;
      return;
    }
    while (_next < _count) {
      hold_first_chunk(); // before sizing the copy
      out.emplace_back(static_cast<std::size_t>(size_of(_next)));
      receive_into(out.back().data());
      ++_next;
    }
  }

  /// Receives and discards the buffers not taken, each chunk into a scratch buffer of the size
  /// actually sent, so that no unmatched message stays on the data communicator and the sender
  /// is not left blocked. Gives up (false, logged) when a chunk does not come within the
  /// patience, or after an earlier give-up.
  bool drain() noexcept {
    if (_prefetched) {
      _next = _count;
      return true;
    }
    const std::uint32_t left_before = _count - std::min(_next, _count);
    try {
      std::vector<char> scratch;
      if (_held) {
        _held = false;
        _t.discard_matched(_held_message, _held_bytes, scratch);
        _taken += _held_bytes;
        _started = true;
      }
      while (_next < _count && !_gave_up) {
        const std::uint64_t size = size_of(_next);
        // One message at least (an empty buffer is one empty message), then until the bytes
        // the table announces have come; a chunk of another size just counts for its bytes.
        while (!_started || _taken < size) {
          MPI_Message m;
          std::size_t got = 0;
          if (!_t.match_data(_source, _tag, m, got)) {
            _gave_up = true;
            break;
          }
          _t.discard_matched(m, got, scratch);
          _taken += got;
          _started = true;
        }
        if (_gave_up) break;
        next_buffer();
      }
    } catch (const std::exception& e) {
      _gave_up = true;
      if (_owner) _owner->log(std::string("receiving out-of-line data failed: ") + e.what());
    }
    if (_gave_up && !_logged) {
      _logged = true;
      note_malformed("gave up receiving the out-of-line buffers of a message from rank " +
                     std::to_string(_source) + " (data tag " + std::to_string(_tag) +
                     "): " + std::to_string(_count - std::min(_next, _count)) + " of " +
                     std::to_string(left_before) + " left were not received within " +
                     std::to_string(_t.patience().count()) + " ms");
    }
    if (_gave_up) _next = _count; // nothing more is attempted
    return !_gave_up;
  }

private:
  void check_next() const {
    if (_next >= _count) {
      throw serialization_error("mpirpc: malformed message: more out-of-line buffers referenced "
                                "than the message carries");
    }
  }
  std::uint64_t size_of(std::uint32_t i) const {
    std::uint64_t n;
    std::memcpy(&n, _table + std::size_t(i) * sizeof(std::uint64_t), sizeof n);
    return n;
  }
  static std::size_t chunk_of(std::uint64_t left) {
    return static_cast<std::size_t>(std::min<std::uint64_t>(left, wire::max_chunk));
  }
  /// Counts the message as malformed (once) and logs why.
  void note_malformed(const std::string& what) const noexcept {
    if (!_owner) return;
    _owner->log(what); // before the count: whoever sees the count finds the line written
    if (!_counted) {
      _counted = true;
      _owner->_malformed.fetch_add(1, std::memory_order_seq_cst);
    }
  }
  [[noreturn]] void fail_missing(std::uint64_t size) const {
    const bool first = !_gave_up;
    _gave_up = true;
    const std::string what =
        "out-of-line buffer " + std::to_string(_next + 1) + " of " + std::to_string(_count) + " (" +
        std::to_string(size) + " bytes) from rank " + std::to_string(_source) +
        " did not arrive within " + std::to_string(_t.patience().count()) + " ms";
    if (first) {
      _logged = true; // drain() adds nothing
      note_malformed("malformed message: " + what);
    }
    throw serialization_error("mpirpc: malformed message: " + what);
  }
  /// Discards a matched chunk of the wrong size, then throws. The table is wrong, so the chunk
  /// stands for the rest of its buffer: drain() goes on with the next buffer.
  [[noreturn]] void fail_size(MPI_Message& m, std::size_t got, std::size_t expected) const {
    std::vector<char> scratch;
    _t.discard_matched(m, got, scratch);
    _taken = size_of(_next);
    _started = true;
    const std::string what = "a chunk of " + std::to_string(got) + " bytes arrived from rank " +
                             std::to_string(_source) + " for out-of-line buffer " +
                             std::to_string(_next + 1) + " of " + std::to_string(_count) +
                             ", whose table entry (" + std::to_string(size_of(_next)) +
                             " bytes) implies " + std::to_string(expected);
    note_malformed("malformed message: " + what);
    throw serialization_error("mpirpc: malformed message: " + what);
  }
  /// Matches the first chunk of the next buffer and checks its size, once.
  void hold_first_chunk() const {
    if (_held) return;
    const std::uint64_t size = size_of(_next);
    if (_gave_up) fail_missing(size);
    // One pacer for the whole buffer, from matching its first chunk to receiving its last, so
    // that the sizing of the destination in between counts as part of the transfer too.
    if (!_pacer) _pacer.emplace(_t, 0);
    MPI_Message m;
    std::size_t got = 0;
    if (!_t.match_data(_source, _tag, m, got, *_pacer)) fail_missing(size);
    if (got != chunk_of(size)) fail_size(m, got, chunk_of(size));
    _pacer->add_bytes(got); // the copy's share of the spin budget
    _held_message = m;
    _held_bytes = got;
    _held = true;
  }
  /// Receives the whole next buffer into `dst`, chunk by chunk.
  void receive_into(char* dst) {
    hold_first_chunk();
    const std::uint64_t size = size_of(_next);
    _held = false;
    _started = true;
    _t.receive_matched(_held_message, dst, _held_bytes, *_pacer);
    _taken = _held_bytes;
    while (_taken < size) {
      const std::size_t expected = chunk_of(size - _taken);
      MPI_Message m;
      std::size_t got = 0;
      if (!_t.match_data(_source, _tag, m, got, *_pacer)) fail_missing(size);
      if (got != expected) fail_size(m, got, expected);
      _pacer->add_bytes(got);
      _t.receive_matched(m, dst + _taken, got, *_pacer);
      _taken += got;
    }
    next_buffer_state();
  }
  void next_buffer() {
    ++_next;
    next_buffer_state();
  }
  void next_buffer_state() const {
    _taken = 0;
    _started = false;
    _pacer.reset();
  }

  transport& _t;
  engine* _owner;
  int _source;
  std::uint32_t _tag;
  const char* _table;
  std::uint32_t _count;
  const std::vector<std::vector<char>>* _prefetched = nullptr;
  std::uint32_t _next = 0;
  // Progress within buffer _next (mutable: next_segment_size() is const but matches a chunk).
  mutable bool _held = false; ///< its first chunk is matched, not yet received
  mutable MPI_Message _held_message = MPI_MESSAGE_NULL;
  mutable std::size_t _held_bytes = 0;
  mutable std::uint64_t _taken = 0; ///< bytes of it received or discarded
  mutable bool _started = false;    ///< one of its chunks has been taken
  mutable bool _gave_up = false;    ///< a chunk did not come in time: receive nothing more
  mutable bool _logged = false;     ///< the give-up has been logged
  mutable bool _counted = false;    ///< counted in malformed_messages

  /// Paces (and counts) the receipt of buffer _next, from matching its first chunk on.
  mutable std::optional<transfer_pacer> _pacer;
};

engine::engine(const options& opts, std::unique_ptr<transport> t, std::vector<worker_info> workers,
               bool spin_allowed, bool oversubscribed)
    : _num_handlers(opts.num_worker_threads), _max_outstanding(opts.max_outstanding_calls),
      _default_timeout_s(opts.rpc_timeout.count()), _idle_poll_interval(opts.idle_poll_interval),
      _transport(std::move(t)), _workers(std::move(workers)), _rank(_transport->rank()),
      _spin_window(spin_allowed ? spin_window : std::chrono::microseconds(0)),
      _oversubscribed(oversubscribed),
      _pending(static_cast<int>(_workers.size())) {
  for (const auto& w : _workers)
    _rank_of_name.emplace(w.name, w.id);
  for (std::size_t r = 0; r < _workers.size(); ++r) {
    _outboxes.push_back(std::make_unique<outbox>());
    _in_order.push_back(std::make_unique<in_order>());
    _reply_batches.push_back(std::make_unique<reply_batch>());
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

int engine::resolve(const destination& to) const {
  switch (to.which()) {
  case destination::kind::name: {
    auto it = _rank_of_name.find(std::string(to.name()));
    if (it == _rank_of_name.end()) {
      throw unknown_worker_error("mpirpc: no worker is named '" + std::string(to.name()) +
                                 "' (workers are " + _workers.front().name + " .. " +
                                 _workers.back().name + ")");
    }
    return it->second;
  }
  case destination::kind::rank:
    if (to.rank() < 0 || to.rank() >= static_cast<int>(_workers.size())) {
      throw unknown_worker_error("mpirpc: no worker has rank " + std::to_string(to.rank()) +
                                 " (ranks are 0 .. " + std::to_string(_workers.size() - 1) + ")");
    }
    return to.rank();
  case destination::kind::info:
    if (to.rank() < 0 || to.rank() >= static_cast<int>(_workers.size()) ||
        _workers[static_cast<std::size_t>(to.rank())].name != to.name()) {
      throw unknown_worker_error("mpirpc: worker_info(name=" + std::string(to.name()) + ", id=" +
                                 std::to_string(to.rank()) + ") names no worker of this session");
    }
    return to.rank();
  }
  throw unknown_worker_error("mpirpc: invalid destination");
}

std::string engine::function_name(std::uint64_t id) const {
  if (const function_entry* e = registry::instance().by_id(id)) return e->name;
  std::ostringstream os;
  os << "function#" << std::hex << id;
  return os.str();
}

void engine::log(const std::string& line) const noexcept {
  std::fprintf(stderr, "mpirpc[%s]: %s\n", self().name.c_str(), line.c_str());
}

// ---------------------------------------------------------------------------------------------
// Sending

void engine::send_message(int dest, int tag, std::vector<char>& buffer, wire::kind kind,
                          std::uint64_t call_id, std::uint64_t function_id,
                          const std::vector<segment>& segments, std::uint16_t flags,
                          clock::time_point now) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(kind);
  h.flags = flags;
  h.segment_count = static_cast<std::uint32_t>(segments.size());
  h.data_tag = segments.empty() ? 0 : _transport->next_data_tag();
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
      // kept with the batch either way (lib/batching.cpp).
      const bool may_batch = (flags & wire::request_one_way) != 0 || in_burst(dest, now);
      send_or_batch(dest, buffer, call_id, may_batch);
      return;
    }
    if (append_to_reply_batch(dest, buffer)) return;
  } else if (tag == wire::tag_request) {
    flush_outbox(dest); // what was batched for dest leaves first
  }
  for (const segment& s : segments) {
    const std::uint64_t n = s.bytes;
    const char* p = reinterpret_cast<const char*>(&n);
    buffer.insert(buffer.end(), p, p + sizeof n);
  }
  // Counted before the send, so that no rank can count it received before it counts as sent
  // (quiesce relies on sent >= received); a failed send is counted as received as well.
  _sent.fetch_add(1, std::memory_order_seq_cst);
  bool control_sent = false;
  try {
    _transport->send(dest, tag, buffer.data(), buffer.size(), segments, h.data_tag, &control_sent);
  } catch (...) {
    // A control message that left is counted by its receiver (even if its segments then fail);
    // one that never left is balanced here.
    if (!control_sent) _received.fetch_add(1, std::memory_order_seq_cst);
    throw;
  }
}

/// Admits a thread into the send path unless the engine is stopping; stop() waits until every
/// admitted thread has left before it frees the communicators. Once stopping, replies are
/// dropped too: in a non-graceful stop the callers' ranks are stopping as well, and a large
/// reply to a rank that no longer receives would never complete.
class engine::admission {
public:
  explicit admission(engine& e) : _e(e) {
    _e._callers_inside.fetch_add(1, std::memory_order_seq_cst);
    _admitted = _e._accepting.load(std::memory_order_seq_cst);
  }
  ~admission() { _e._callers_inside.fetch_sub(1, std::memory_order_seq_cst); }
  admission(const admission&) = delete;
  admission& operator=(const admission&) = delete;
  explicit operator bool() const noexcept { return _admitted; }

private:
  engine& _e;
  bool _admitted;
};

bool engine::wait_for_room(int dest, clock::time_point deadline) {
  _calls_delayed.fetch_add(1, std::memory_order_relaxed);
  flush_outbox(dest); // the calls that hold the room may still be in the batch
  hand_off_in_order();
  // This thread only sleeps: the replies that make room are received by the leader or by a
  // thread in wait(). It must not dispatch anything itself, since the request it is about to
  // send sits in its thread-local buffers.
  constexpr auto recheck = std::chrono::milliseconds(1); // also bounds a missed wake-up
  for (;;) {
    if (!_accepting.load(std::memory_order_seq_cst)) {
      throw shutdown_error("mpirpc: the RPC runtime is shutting down; the call was not sent");
    }
    if (_pending.try_reserve(dest, _max_outstanding)) return true;
    const auto now = clock::now();
    if (now >= deadline) return false;
    _pending.wait_for_room(dest, _max_outstanding, std::min(deadline, now + recheck));
  }
}

bool engine::send_request(int dest, const function_entry& fn, std::uint16_t flags,
                          request_buffers& request, std::shared_ptr<reply_sink> sink,
                          double timeout_s) {
  const function_entry* entry = &fn;
  if (timeout_s < 0) timeout_s = _default_timeout_s;
  pending_call call;
  call.function_id = entry->id;
  call.dest = dest;
  call.start = clock::now();
  // A timeout too large for the clock (or infinite) means none.
  constexpr double max_timeout_s = 1e9; // about 31 years
  call.deadline = timeout_s > 0 && timeout_s < max_timeout_s
                      ? call.start + std::chrono::duration_cast<clock::duration>(
                                         std::chrono::duration<double>(timeout_s))
                      : clock::time_point::max();
  // Flow control. A progress-path continuation must not block the progress it runs on, so
  // its calls never wait for room.
  const bool may_wait = !in_progress_callback();
  const bool room = _pending.try_reserve(dest, may_wait ? _max_outstanding : 0);
  if (!room && !wait_for_room(dest, call.deadline)) {
    // Never sent: what the request's rrefs gave it goes back (send_call then commits nothing).
    rref_table::fork_log_undo(0);
    _timeouts.fetch_add(1, std::memory_order_relaxed);
    const double elapsed = std::chrono::duration<double>(clock::now() - call.start).count();
    char text[96];
    std::snprintf(text, sizeof text, "%.3f s (timeout %.3f s)", elapsed, timeout_s);
    const std::string& callee = _workers[static_cast<std::size_t>(dest)].name;
    sink->on_error(std::make_exception_ptr(timeout_error(
        "mpirpc: call to '" + entry->name + "' on " + callee + " timed out after " + text +
        " before it could be sent: " + std::to_string(_pending.outstanding(dest)) +
        " earlier calls to " + callee +
        " still awaited their replies (options::max_outstanding_calls = " +
        std::to_string(_max_outstanding) + ")")));
    return false;
  }
  const admission admitted(*this);
  if (!admitted) {
    _pending.unreserve(dest);
    throw shutdown_error("mpirpc: the RPC runtime has shut down; no further calls can be made");
  }
  call.sink = std::move(sink);
  _last_call_ns.store(call.start.time_since_epoch().count(), std::memory_order_relaxed);
  if (!on_engine_thread()) {
    _last_user_call_ns.store(call.start.time_since_epoch().count(), std::memory_order_relaxed);
  }
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
  _requests_sent.fetch_add(1, std::memory_order_relaxed);
  wake_idle_leader();
  return true;
}

namespace {
/// The request this thread sent last, unless it has dispatched a message since (see in_burst).
struct last_request {
  const void* engine = nullptr;
  int dest = -1;
  std::int64_t ns = 0;
};
thread_local last_request t_last_request;
} // namespace

bool engine::in_burst(int dest, clock::time_point at) noexcept {
  // A burst: this thread called dest a moment ago and has received nothing since. Calls that
  // each follow a message (a chain of nested calls, or calls made from replies' continuations)
  // are not a burst, however many are outstanding.
  const std::int64_t now =
      (at == clock::time_point{} ? clock::now() : at).time_since_epoch().count();
  last_request& last = t_last_request;
  const bool burst =
      last.engine == this && last.dest == dest &&
      now - last.ns < std::chrono::duration_cast<clock::duration>(batch_burst).count() &&
      _pending.outstanding(dest) >= batch_from_outstanding;
  last = {this, dest, now};
  return burst;
}

bool engine::caller_drives(clock::time_point now) const noexcept {
  return _waiters.load(std::memory_order_relaxed) > 0 ||
         now.time_since_epoch().count() - _last_user_call_ns.load(std::memory_order_relaxed) <
             std::chrono::duration_cast<clock::duration>(caller_window).count();
}

void engine::wake_idle_leader() noexcept {
  // Wakes a deeply idle leader so that a reply is noticed soon even if nobody waits for it;
  // only the first call after idleness pays for the wake-up.
  if (_leader_idle.load(std::memory_order_seq_cst)) {
    std::lock_guard<std::mutex> lock(_leader_sleep_mutex); // no lost wake-up
    if (_leader_idle.exchange(false)) _leader_cv.notify_one();
  }
}

void engine::send_one_way(int dest, const function_entry& fn, request_buffers& request) {
  const admission admitted(*this);
  if (!admitted) {
    throw shutdown_error("mpirpc: the RPC runtime has shut down; no further calls can be made");
  }
  const auto now = clock::now();
  _last_call_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  if (!on_engine_thread()) {
    _last_user_call_ns.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  }
  send_message(dest, wire::tag_request, request.payload, wire::kind::request, 0, fn.id,
               request.segments, wire::request_one_way);
  _one_way_sent.fetch_add(1, std::memory_order_relaxed);
}

namespace {
/// Releases an async-execution handler's hold on the quiescence count when its reply has been
/// dealt with, whichever way.
struct hold_release {
  reply_token& token;
  std::atomic<int>& held;
  ~hold_release() {
    if (token.held) held.fetch_sub(1, std::memory_order_seq_cst);
  }
};
} // namespace

bool engine::send_reply_value(reply_token& token, save_fn save, const void* value) noexcept {
  if (token.one_way) { // nobody waits for the value
    if (token.held) _held_one_way.fetch_sub(1, std::memory_order_seq_cst);
    return true;
  }
  const hold_release release{token, _held_replies};
  bool may_wait = !in_progress_callback();
  std::string replenish_failed;
  for (;;) {
    future<void> replenished;
    bool exhausted = false;
    {
      const admission admitted(*this);
      if (!admitted) return true; // a late reply of an async handler after shutdown
      // rrefs in the result give weight to the reply: kept if it is sent, given back if not.
      struct fork_guard {
        std::size_t mark = rref_table::fork_log_mark();
        bool sent = false;
        ~fork_guard() {
          if (sent) {
            rref_table::fork_log_commit(mark);
          } else {
            rref_table::fork_log_undo(mark);
          }
        }
      } forks;
      std::vector<char>& buffer = reply_buffer();
      const trim_on_exit trim{buffer};
      std::vector<segment> segments;
      const char* failed = nullptr;
      bool send_failed = false; // MPI may still read the value's buffers
      std::string what;
      try {
        buffer.resize(sizeof(wire::header));
        if (save) {
          writer w(buffer, &segments);
          save(w, value);
        }
      } catch (rref_weight_exhausted& e) {
        if (may_wait) {
          exhausted = true; // waited for below, outside the admission
          replenished = e.replenished;
        } else {
          failed = "serialized";
          what = std::string(e.what()) +
                 (replenish_failed.empty() ? " (a reply sent from a progress-path "
                                             "continuation cannot wait for it)"
                                           : " (asking for more failed: " + replenish_failed + ")");
        }
      } catch (...) {
        failed = "serialized";
        what = describe_exception(std::current_exception()).message;
      }
      if (!failed && !exhausted) {
        try {
          send_message(token.source, wire::tag_reply, buffer, wire::kind::reply_value,
                       token.call_id, token.function_id, segments);
          forks.sent = true;
          return true;
        } catch (...) {
          failed = "sent";
          send_failed = true;
          what = describe_exception(std::current_exception()).message;
        }
      }
      if (failed) {
        send_error_reply(token.source, token.call_id, token.function_id,
                         wire::error_code::serialization, "mpirpc::serialization_error",
                         "the result of '" + function_name(token.function_id) + "' could not be " +
                             failed + " on " + self().name + ": " + what,
                         self().name);
        return !send_failed;
      }
    }
    // An rref in the result had no weight left: wait until its owner gave more, then build the
    // reply again (the value lives until this function returns).
    try {
      replenished.wait();
    } catch (...) {
      may_wait = false; // the next attempt reports the failure
      replenish_failed = describe_exception(std::current_exception()).message;
    }
  }
}

void engine::send_reply_error(reply_token& token, std::exception_ptr error) noexcept {
  if (token.one_way) { // nobody waits for it: logged and counted instead
    const exception_description d = describe_exception(error);
    one_way_failed("a one-way call of '" + function_name(token.function_id) + "' from " +
                   _workers[static_cast<std::size_t>(token.source)].name + " failed: " + d.type +
                   ": " + d.message);
    if (token.held) _held_one_way.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  const hold_release release{token, _held_replies};
  const admission admitted(*this);
  if (!admitted) return;
  const exception_description d = describe_exception(error);
  send_error_reply(token.source, token.call_id, token.function_id, d.code, d.type, d.message,
                   d.origin.empty() ? self().name : d.origin);
}

void engine::hold_reply(reply_token& token) noexcept {
  if (!token.held) {
    token.held = true;
    // A one-way call's asynchronous part counts as busy for shutdown: no caller counts it.
    (token.one_way ? _held_one_way : _held_replies).fetch_add(1, std::memory_order_seq_cst);
  }
}

void engine::send_error_reply(int dest, std::uint64_t call_id, std::uint64_t function_id,
                              wire::error_code code, const std::string& type,
                              const std::string& message, const std::string& origin) noexcept {
  try {
    std::vector<char>& buffer = reply_buffer();
    const trim_on_exit trim{buffer};
    buffer.resize(sizeof(wire::header));
    writer w(buffer);
    w.write_plain(static_cast<std::uint8_t>(code));
    save(w, origin);
    save(w, type);
    save(w, message);
    send_message(dest, wire::tag_reply, buffer, wire::kind::reply_error, call_id, function_id, {});
  } catch (const std::exception& e) {
    log(std::string("could not send an error reply: ") + e.what());
  }
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
  const std::string& callee = _workers[static_cast<std::size_t>(call.dest)].name;
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
  t_last_request.dest = -1; // what this thread sends next follows a message: no burst
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
                                          h.segment_count, this, true)
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
    _malformed.fetch_add(1, std::memory_order_seq_cst);
    if (message.tag == wire::tag_request && size >= sizeof(wire::header) &&
        h.magic == wire::magic && !(h.flags & wire::request_one_way) &&
        h.kind != static_cast<std::uint8_t>(wire::kind::batch) &&
        h.kind != static_cast<std::uint8_t>(wire::kind::envelope)) {
      send_error_reply(message.source, h.call_id, h.function_id, wire::error_code::malformed,
                       "mpirpc::serialization_error", "malformed request: " + problem, self().name);
    }
    if (!message.continuation) _received.fetch_add(1, std::memory_order_seq_cst);
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
  if (!counted) _received.fetch_add(1, std::memory_order_seq_cst);
}

bool engine::try_take_slot() noexcept {
  int n = _running_handlers.load(std::memory_order_relaxed);
  while (n < _num_handlers) {
    if (_running_handlers.compare_exchange_weak(n, n + 1, std::memory_order_seq_cst)) return true;
  }
  return false;
}

void engine::handle_request(incoming& message, const wire::header& h, bool slot_held) {
  struct slot_guard { // a slot taken for this request by the caller goes back if it cannot run
    engine& e;
    bool held;
    ~slot_guard() {
      if (held) e._running_handlers.fetch_sub(1, std::memory_order_seq_cst);
    }
  } slot{*this, slot_held};
  const bool one_way = (h.flags & wire::request_one_way) != 0;
  const function_entry* fn = registry::instance().by_id(h.function_id);
  if (!fn) {
    segment_stream(*_transport, message, h, this).drain();
    if (one_way) {
      _one_way_run.fetch_add(1, std::memory_order_relaxed);
      one_way_failed(
          "a one-way call from " + _workers[static_cast<std::size_t>(message.source)].name +
          " was dropped: " + function_name(h.function_id) + " is not registered on " + self().name);
      return;
    }
    send_error_reply(message.source, h.call_id, h.function_id, wire::error_code::unknown_function,
                     "mpirpc::unknown_function_error", "no such function", self().name);
    return;
  }
  if (!_accepting.load(std::memory_order_seq_cst)) { // a non-graceful stop is under way
    segment_stream(*_transport, message, h, this).drain();
    if (one_way) {
      _one_way_run.fetch_add(1, std::memory_order_relaxed);
      one_way_failed("a one-way call of '" + fn->name + "' from " +
                     _workers[static_cast<std::size_t>(message.source)].name +
                     " was not run: " + self().name + " is shutting down");
      return;
    }
    send_error_reply(message.source, h.call_id, h.function_id, wire::error_code::shutting_down,
                     "mpirpc::shutdown_error", self().name + " is shutting down", self().name);
    return;
  }
  if (slot_held) {
    slot.held = false; // released below, after the handler
  } else if (!try_take_slot()) {
    // In an in-order run, the request and what follows it go to a server thread together.
    // (Within a batch the batch takes the slot first: only a request run on its own gets here.)
    in_order_cursor* cursor = current_cursor();
    if (cursor && cursor->owner == this) {
      // Its sender is released first, as for a queued request (dispatch counts it).
      if (h.segment_count > 0 && message.prefetched.empty() && !prefetch_deferred(message, false)) {
        return;
      }
      {
        std::lock_guard<std::mutex> lock(_in_order[static_cast<std::size_t>(cursor->source)]->mutex);
        cursor->whole = &message;
      }
      hand_off_in_order();
      return;
    }
    // The request waits for a handler slot; its sender must not wait with it (a sender blocked
    // on an unreceived buffer might itself hold the slot the request needs): take the buffers
    // now and decode from memory later.
    if (h.segment_count > 0) {
      segment_stream segments(*_transport, message, h, this);
      try {
        segments.prefetch(message.prefetched);
      } catch (const std::exception& e) { // the buffers do not match the table, or no memory
        segments.drain();
        message.prefetched.clear();
        send_error_reply(message.source, h.call_id, h.function_id, wire::error_code::serialization,
                         "mpirpc::serialization_error",
                         "the arguments of '" + fn->name + "' could not be received on " +
                             self().name + ": " + e.what(),
                         self().name);
        return;
      }
    }
    {
      std::lock_guard<std::mutex> lock(_queue_mutex);
      _queue.push_back(std::move(message));
      _queued.fetch_add(1, std::memory_order_seq_cst);
    }
    message.bytes = std::vector<char>();
    message.prefetched.clear();
    if (!_warned_pool_exhausted.exchange(true)) {
      log("warning: all " + std::to_string(_num_handlers) +
          " server threads are busy, so requests wait in a queue. A handler that blocks "
          "(rpc_sync, future::wait) holds its thread until the nested call returns: return an "
          "mpirpc::future from such a function instead (async execution, see functions.hpp), or "
          "raise options::num_worker_threads. Timeouts still fire. (Reported once.)");
    }
    run_queued(); // a slot may have been freed meanwhile
    return;
  }
  run_request(message, h, *fn);
  _running_handlers.fetch_sub(1, std::memory_order_seq_cst);
  run_queued();
}

bool engine::prefetch_deferred(incoming& message, bool count_received) noexcept {
  wire::header h{};
  if (!wire::validate(message.bytes.data(), message.bytes.size(), message.tag, h,
                      _transport->tag_ub())
           .empty()) {
    return true; // refused (and drained) when it is dispatched
  }
  segment_stream segments(*_transport, message, h, this);
  try {
    segments.prefetch(message.prefetched);
    return true;
  } catch (const std::exception& e) { // the buffers do not match the table, or no memory
    segments.drain();
    message.prefetched.clear();
    const std::string what = "the arguments of '" + function_name(h.function_id) +
                             "' could not be received on " + self().name + ": " + e.what();
    if (h.flags & wire::request_one_way) {
      one_way_failed("a one-way call from " +
                     _workers[static_cast<std::size_t>(message.source)].name + " failed: " + what);
    } else {
      send_error_reply(message.source, h.call_id, h.function_id, wire::error_code::serialization,
                       "mpirpc::serialization_error", what, self().name);
    }
    if (count_received) _received.fetch_add(1, std::memory_order_seq_cst);
    return false;
  }
}

void engine::run_request(const incoming& message, const wire::header& h, const function_entry& fn) {
  segment_stream segments(*_transport, message, h, this);
  reader in(message.bytes.data() + sizeof(wire::header), static_cast<std::size_t>(h.payload_size),
            &segments);
  reply_token token;
  token.source = message.source;
  token.call_id = h.call_id;
  token.function_id = h.function_id;
  token.owner = this;
  token.one_way = (h.flags & wire::request_one_way) != 0;
  if (token.one_way) _one_way_run.fetch_add(1, std::memory_order_relaxed);
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
      one_way_failed("a one-way call from " +
                     _workers[static_cast<std::size_t>(token.source)].name + " failed: " + what);
    } else {
      send_error_reply(token.source, token.call_id, token.function_id,
                       wire::error_code::serialization, "mpirpc::serialization_error", what,
                       self().name);
    }
    _requests_served.fetch_add(1, std::memory_order_relaxed);
    return;
  } catch (...) {
    segments.drain();
    send_reply_error(token, std::current_exception());
    _requests_served.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  segments.drain();
  _requests_served.fetch_add(1, std::memory_order_relaxed);
}

void engine::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(_queue_mutex);
    _tasks.push_back(std::move(task));
    _queued.fetch_add(1, std::memory_order_seq_cst);
  }
  std::lock_guard<std::mutex> lock(_follow_mutex);
  _follow_cv.notify_one();
  _standby_cv.notify_one();
}

void engine::run_queued() {
  while (_queued.load(std::memory_order_seq_cst) > 0 && try_take_slot()) {
    incoming message;
    std::function<void()> task;
    {
      std::lock_guard<std::mutex> lock(_queue_mutex);
      if (!_queue.empty()) {
        message = std::move(_queue.front());
        _queue.pop_front();
      } else if (!_tasks.empty()) {
        task = std::move(_tasks.front());
        _tasks.pop_front();
      } else {
        _running_handlers.fetch_sub(1, std::memory_order_seq_cst);
        return;
      }
      _queued.fetch_sub(1, std::memory_order_seq_cst);
    }
    if (task) {
      try {
        task();
      } catch (const std::exception& e) {
        log(std::string("a deferred call failed: ") + e.what());
      } catch (...) {
        log("a deferred call failed with a non-standard exception");
      }
      task = nullptr;
      _running_handlers.fetch_sub(1, std::memory_order_seq_cst);
      continue;
    }
    wire::header h;
    std::memcpy(&h, message.bytes.data(), sizeof h);
    if (const function_entry* fn = registry::instance().by_id(h.function_id)) {
      run_request(message, h, *fn);
    }
    _running_handlers.fetch_sub(1, std::memory_order_seq_cst);
  }
}

void engine::handle_reply(incoming& message, const wire::header& h) {
  segment_stream segments(*_transport, message, h, this);
  std::optional<pending_call> call = _pending.take(h.call_id);
  if (!call) {
    segments.drain();
    if (testing::capture_reply(message)) return; // a reply to the test seam's raw message
    _late_replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  _replies_received.fetch_add(1, std::memory_order_relaxed);
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
          _workers[static_cast<std::size_t>(call->dest)].name + " could not be decoded on " +
          self().name + ": " + describe_exception(std::current_exception()).message)));
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

bool engine::timeouts_due(clock::time_point t) const noexcept {
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return now >= _next_timeout_check_ns.load(std::memory_order_relaxed) && _pending.size() > 0;
}

bool engine::sends_or_timeouts_due(clock::time_point now) const noexcept {
  return timeouts_due(now) || _outboxes_filled.load(std::memory_order_relaxed) > 0 ||
         _reply_batches_filled.load(std::memory_order_relaxed) > 0;
}

void engine::check_timeouts(clock::time_point t) noexcept {
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  std::int64_t due = _next_timeout_check_ns.load(std::memory_order_relaxed);
  if (now < due) return;
  const std::int64_t next =
      now + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout_scan_interval).count();
  if (!_next_timeout_check_ns.compare_exchange_strong(due, next)) return;
  if (_pending.size() == 0) return;
  std::vector<pending_call> expired = _pending.take_expired(t);
  if (expired.empty()) return;
  progress_callback_scope scope;
  for (pending_call& call : expired) {
    _timeouts.fetch_add(1, std::memory_order_relaxed);
    const double elapsed = std::chrono::duration<double>(t - call.start).count();
    const double limit = std::chrono::duration<double>(call.deadline - call.start).count();
    char text[64];
    std::snprintf(text, sizeof text, "%.3f s (timeout %.3f s)", elapsed, limit);
    call.sink->on_error(std::make_exception_ptr(timeout_error(
        "mpirpc: call to '" + function_name(call.function_id) + "' on " +
        _workers[static_cast<std::size_t>(call.dest)].name + " timed out after " + text)));
  }
}

// ---------------------------------------------------------------------------------------------
// Threads: leader/followers

namespace {
thread_local bool t_on_engine_thread = false;
}

bool engine::on_engine_thread() noexcept {
  return t_on_engine_thread;
}

void engine::thread_main() {
  t_on_engine_thread = true;
  use_fine_timer_slack();
  while (!_stop_threads.load(std::memory_order_acquire)) {
    const bool leading = _poll_mutex.try_lock() || follow();
    if (leading) lead();
    run_queued();
  }
}

bool engine::follow() {
  std::unique_lock<std::mutex> lock(_follow_mutex);
  bool standby = false;
  if (!_has_standby) {
    _has_standby = true;
    standby = true;
  }
  std::uint64_t seen = _dispatch_seq.load(std::memory_order_relaxed);
  while (!_stop_threads.load(std::memory_order_acquire)) {
    if (_queued.load() > 0 && _running_handlers.load() < _num_handlers) break;
    if (!standby) {
      _follow_cv.wait(lock);
      if (!_has_standby) {
        _has_standby = true;
        standby = true;
        seen = _dispatch_seq.load(std::memory_order_relaxed);
      }
      continue;
    }
    if (_leader_idle.load(std::memory_order_acquire)) {
      _standby_deep.store(true, std::memory_order_seq_cst);
      // Bounded: a wake-up lost to a race costs at most this long.
      if (_leader_idle.load(std::memory_order_seq_cst)) {
        _standby_cv.wait_for(lock, std::chrono::milliseconds(200));
      }
      _standby_deep.store(false, std::memory_order_relaxed);
    } else {
      _standby_cv.wait_for(lock, promote_interval);
    }
    const std::uint64_t now_seq = _dispatch_seq.load(std::memory_order_relaxed);
    const bool leader_stuck = now_seq == seen;
    seen = now_seq;
    // A leader that is moving a buffer within its spin budget is not stuck (a 16 MiB echo
    // keeps it 10 ms); a promotion then would only add a poller on the core it copies on.
    if (leader_stuck && _transport->spinning_transfers() == 0 && _poll_mutex.try_lock()) {
      _has_standby = false;
      _follow_cv.notify_one(); // another follower becomes the standby
      return true;
    }
  }
  if (standby) {
    _has_standby = false;
    _follow_cv.notify_one();
  }
  return false;
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
      const bool replies_expected = _pending.size() > 0 || _held_replies.load() > 0;
      got = _transport->try_receive(tag, message, replies_expected);
    } catch (const std::exception& e) {
      log(std::string("polling failed: ") + e.what());
    }
    if (got) {
      if (message.tag == wire::tag_request) last_request = clock::now();
      _leader_idle.store(false, std::memory_order_seq_cst);
      _dispatch_seq.fetch_add(1, std::memory_order_relaxed);
      // Decided before another thread may poll, so that requests from one source that must
      // run in order are taken up in the order they arrived.
      const route r = route_received(message);
      _poll_mutex.unlock(); // another thread may poll while this one dispatches
      if (_standby_deep.load(std::memory_order_seq_cst)) _standby_cv.notify_one();
      if (r == route::in_order) {
        run_in_order(message);
      } else if (r == route::dispatch) {
        dispatch(message);
      }
      if (!_poll_mutex.try_lock()) return; // leadership moved on
      last_activity = clock::now();
      continue;
    }
    const auto now = clock::now(); // one clock read per idle poll, shared with the timeouts
    if (sends_or_timeouts_due(now)) {
      // Sending a batch, or what a timed-out call's continuation sends, may block until the
      // receiver takes it (an MPI_Send that is not eager: two leaders flushing batches to each
      // other with a small eager limit deadlocked). Never while holding the poll mutex, so
      // that another thread of this rank can take over receiving meanwhile.
      _poll_mutex.unlock();
      check_timeouts(now);
      flush_aged_outboxes(now);
      if (!_poll_mutex.try_lock()) return; // leadership moved on
    }
    rescue_stalled_runs(now);
    const auto idle_for = now - last_activity;
    // A caller polls for its replies (caller_window), and no request has come lately.
    const bool driven = caller_drives(now) && now - last_request >= serving_window;
    if (!driven && idle_for < _spin_window &&
        _spinning_waiters.load(std::memory_order_relaxed) == 0 &&
        _transport->spinning_transfers() == 0) {
      cpu_relax(); // one pause: on recent x86 it alone takes ~100 cycles
      continue;
    }
    // Replies need the leader only when no thread waits (a waiter polls for them itself); a
    // leader that wakes often for nothing steals the core of the threads that spin.
    const bool calls_out = (_pending.size() > 0 && _waiters.load(std::memory_order_relaxed) == 0) ||
                           _held_replies.load() > 0;
    auto cap = calls_out ? std::min(busy_poll_interval, _idle_poll_interval) : _idle_poll_interval;
    const bool batches_out = _outboxes_filled.load(std::memory_order_relaxed) > 0 ||
                             _reply_batches_filled.load(std::memory_order_relaxed) > 0;
    if (batches_out) cap = std::min(cap, batch_poll_interval); // sent once old enough
    auto sleep = paced_sleep(idle_for, cap);
    if (driven) sleep = std::min(cap, std::max(sleep, caller_leader_sleep));
    // Deeply idle only if this rank has not called out lately either: between the calls of a
    // busy caller the pending table is empty for a moment, and flagging idleness then would
    // make every next call pay for a wake-up.
    const bool called_lately =
        now.time_since_epoch().count() - _last_call_ns.load(std::memory_order_relaxed) <
        std::chrono::duration_cast<clock::duration>(recent_call_window).count();
    const bool idle = !calls_out && !batches_out && !called_lately && sleep >= cap;
    std::unique_lock<std::mutex> lock(_leader_sleep_mutex);
    _leader_idle.store(idle, std::memory_order_seq_cst);
    // A call sent between the checks above and the store: send_request inserted it before it
    // read the flag (both seq_cst), so one of the two sides sees the other.
    if (idle && _pending.size() > 0) {
      _leader_idle.store(false, std::memory_order_seq_cst);
      continue;
    }
    _leader_wakes_at_ns.store((now + sleep).time_since_epoch().count(), std::memory_order_relaxed);
    if (idle) {
      _leader_cv.wait_for(lock, sleep, [&] {
        return !_leader_idle.load() || _stop_threads.load(std::memory_order_acquire);
      });
    } else {
      _leader_cv.wait_for(lock, sleep);
    }
  }
  _leader_idle.store(false, std::memory_order_relaxed);
  _poll_mutex.unlock();
}

// ---------------------------------------------------------------------------------------------
// Waiting

std::chrono::microseconds engine::waiter_sleep(clock::duration waited) const noexcept {
  const auto paced = paced_sleep(waited, waiter_max_sleep);
  if (!_oversubscribed) return paced;
  // More ranks than cores: every wake-up of this thread takes a core from a rank that is
  // working, very likely on this thread's reply (W6, a 64-hop chain of about 700 us on 3 ranks
  // and 2 cores: worker0's waiter polling every few microseconds after its spin made the chain
  // 20-40 % slower). So the sleep grows with the wait: a reply is noticed at most an eighth of
  // the wait late, and a long wait costs a few dozen wake-ups, not hundreds.
  const auto share = std::chrono::duration_cast<std::chrono::microseconds>(waited) /
                     waiter_sleep_divisor;
  return std::max(paced, std::min(share, waiter_max_sleep));
}

namespace {
/// How long this thread's last few waits (engine::wait) took.
struct wait_history {
  static constexpr std::size_t size = 4;
  std::array<clock::duration, size> last{};
  std::size_t recorded = 0;
  void record(clock::duration d) noexcept { last[recorded++ % size] = d; }
  /// The shortest of the last `size` waits; zero until there were that many.
  clock::duration shortest() const noexcept {
    if (recorded < size) return clock::duration::zero();
    return *std::min_element(last.begin(), last.end());
  }
};
thread_local wait_history t_waits;
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
  // On an oversubscribed node a thread whose last waits all took longer than a spin does not
  // spin: it sleeps through the first half of the shortest of them (at most waiter_max_sleep,
  // as any of its sleeps), leaving the cores to the ranks that work on its reply (W6: its
  // 64-hop chains take 400-700 us).
  const clock::duration expected =
      _oversubscribed ? t_waits.shortest() : clock::duration::zero();
  const bool long_wait = expected > spin_window;
  const clock::time_point quiet_until =
      long_wait ? start + std::min<clock::duration>(expected / 2, waiter_max_sleep) : start;
  bool spinning = _spin_window.count() > 0 && !long_wait;
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
      const admission admitted(*this);
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
    if (sends_or_timeouts_due(now)) {
      // Not a poller while it sends either: a batch beyond MPI's eager limit, or what a
      // timed-out call's continuation sends, may block until the receiver takes it, and the
      // receiver may be a waiter of another rank doing the same (two ranks whose waiters
      // flushed reply batches to each other, with 1 KiB eager limits, hung for good); the
      // leader takes replies meanwhile.
      _waiters.fetch_sub(1, std::memory_order_relaxed);
      check_timeouts(now);
      flush_aged_outboxes(now);
      _waiters.fetch_add(1, std::memory_order_relaxed);
    }
    if (spinning) {
      if (now - start < _spin_window) {
        cpu_relax();
        continue;
      }
      spinning = false;
      _spinning_waiters.fetch_sub(1, std::memory_order_relaxed);
    }
    state.sleep_until(std::max(now + waiter_sleep(now - start), quiet_until));
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
  // Repeated non-blocking all-reductions of (sent, received, busy) until two consecutive
  // rounds see every message received, nothing running and the same totals (the
  // four-counter method): then no message is in flight and none can appear. Busy counts
  // handlers running or queued and this rank's calls still awaiting a reply. A reply that an
  // async-execution handler still owes is not counted by the callee: its caller counts the
  // call until the reply arrives or the call times out, so a future that is never completed
  // delays shutdown by at most the caller's timeout instead of forever. A fourth entry counts
  // the ranks past their deadline: one is enough for every rank to give up in the same round.
  const auto start = clock::now();
  std::uint64_t previous[3] = {~0ull, ~0ull, ~0ull};
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    flush_outboxes(); // batched calls count once they are sent
    // Read along the pipeline (queued before running): a request moving from the queue to a
    // handler between the two reads is then counted twice rather than not at all. Requests
    // waiting for an in-order run count as queued, one-way calls still running
    // asynchronously as running (nobody else counts them).
    const auto queued = static_cast<std::uint64_t>(_queued.load(std::memory_order_seq_cst)) +
                        _ordered_waiting.load(std::memory_order_seq_cst);
    const auto running =
        static_cast<std::uint64_t>(_running_handlers.load(std::memory_order_seq_cst)) +
        static_cast<std::uint64_t>(_held_one_way.load(std::memory_order_seq_cst));
    const auto pending = static_cast<std::uint64_t>(_pending.size());
    std::uint64_t local[4];
    local[2] = queued + running + pending;
    local[0] = _sent.load(std::memory_order_seq_cst);
    local[1] = _received.load(std::memory_order_seq_cst);
    local[3] = clock::now() >= deadline ? 1 : 0;
    std::uint64_t total[4];
    MPI_Request request;
    check_mpi(MPI_Iallreduce(local, total, 4, MPI_UINT64_T, MPI_SUM, _transport->collective_comm(),
                             &request),
              "MPI_Iallreduce");
    wait_with_backoff(1, &request);
    const bool quiet = total[0] == total[1] && total[2] == 0;
    if (quiet && total[0] == previous[0] && total[1] == previous[1] && previous[2] == 0) return {};
    if (total[3] > 0) {
      const std::uint64_t mine[4] = {pending, running, queued, 0};
      return describe_unfinished(mine, total[0] - std::min(total[0], total[1]),
                                 std::chrono::duration<double>(clock::now() - start).count());
    }
    std::memcpy(previous, total, sizeof previous);
    if (!quiet) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(5000));
    }
  }
}

std::string engine::describe_unfinished(const std::uint64_t (&mine)[4], std::uint64_t in_flight,
                                        double elapsed_s) {
  // Every rank learns every rank's counts, so that all report the same.
  std::vector<std::uint64_t> all(_workers.size() * 4);
  MPI_Request request;
  check_mpi(MPI_Iallgather(mine, 4, MPI_UINT64_T, all.data(), 4, MPI_UINT64_T,
                           _transport->collective_comm(), &request),
            "MPI_Iallgather");
  wait_with_backoff(1, &request);
  char head[96];
  std::snprintf(head, sizeof head, "mpirpc: graceful shutdown timed out after %.3f s; ", elapsed_s);
  std::string busy;
  for (std::size_t w = 0; w < _workers.size(); ++w) {
    const std::uint64_t* c = &all[w * 4];
    std::string what;
    auto add = [&](std::uint64_t n, const char* one, const char* many) {
      if (n == 0) return;
      what += (what.empty() ? "" : ", ") + std::to_string(n) + " " + (n == 1 ? one : many);
    };
    add(c[0], "call awaiting its reply", "calls awaiting their replies");
    add(c[1], "handler running", "handlers running");
    add(c[2], "request queued", "requests queued");
    if (!what.empty()) busy += (busy.empty() ? "" : "; ") + _workers[w].name + ": " + what;
  }
  std::string out = std::string(head) + "still busy: " + (busy.empty() ? "(no worker)" : busy);
  if (in_flight > 0) {
    out += "; " + std::to_string(in_flight) + " message(s) sent but not yet processed";
  }
  return out + ". Outstanding calls fail with shutdown_error.";
}

void engine::refuse_queued() noexcept {
  // Requests that never got a handler slot are answered, so that their callers do not wait.
  std::deque<incoming> unserved;
  std::deque<std::function<void()>> tasks; // dropped: their replies can no longer be sent
  {
    std::lock_guard<std::mutex> lock(_queue_mutex);
    unserved.swap(_queue);
    tasks.swap(_tasks);
    _queued.store(0, std::memory_order_seq_cst);
  }
  for (const incoming& m : unserved) {
    wire::header h;
    std::memcpy(&h, m.bytes.data(), sizeof h);
    segment_stream(*_transport, m, h).drain();
    send_error_reply(m.source, h.call_id, h.function_id, wire::error_code::shutting_down,
                     "mpirpc::shutdown_error", self().name + " shut down before serving the call",
                     self().name);
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
          _one_way_run.fetch_add(1, std::memory_order_relaxed); // counted like any it refuses
          one_way_failed("a one-way call of '" + function_name(r.function_id) + "' from " +
                         _workers[s].name + " was not run: " + self().name + " shut down first");
          return;
        }
        send_error_reply(m.source, r.call_id, r.function_id, wire::error_code::shutting_down,
                         "mpirpc::shutdown_error",
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
  _accepting.store(false, std::memory_order_seq_cst);
  while (_callers_inside.load(std::memory_order_seq_cst) > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  drop_outboxes();
  refuse_queued();
  refuse_in_order();
  // Fail what is still outstanding first: a handler blocked waiting on one of these calls
  // must return before its thread can be joined.
  std::vector<pending_call> orphans = _pending.take_all();
  const progress_callback_scope scope; // their continuations must neither wait nor shut down
  for (pending_call& call : orphans) {
    call.sink->on_error(std::make_exception_ptr(shutdown_error(
        "mpirpc: call to '" + function_name(call.function_id) + "' on " +
        _workers[static_cast<std::size_t>(call.dest)].name + " was abandoned: " + reason)));
  }
  _stop_threads.store(true, std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lock(_follow_mutex);
    _follow_cv.notify_all();
    _standby_cv.notify_all();
  }
  {
    std::lock_guard<std::mutex> lock(_leader_sleep_mutex);
    _leader_cv.notify_all();
  }
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
  runtime_stats s;
  s.requests_sent = _requests_sent.load();
  s.requests_served = _requests_served.load();
  s.replies_received = _replies_received.load();
  s.late_replies_dropped = _late_replies.load();
  s.malformed_messages = _malformed.load();
  s.timeouts = _timeouts.load();
  s.calls_delayed = _calls_delayed.load();
  s.rref_owned_objects = _rrefs->owned_objects();
  s.rref_references = _rrefs->references();
  s.one_way_sent = _one_way_sent.load();
  s.one_way_run = _one_way_run.load();
  s.one_way_failed = _one_way_failed.load();
  s.batches_sent = _batches_sent.load();
  s.messages_batched = _messages_batched.load();
  return s;
}

} // namespace mpirpc::detail
