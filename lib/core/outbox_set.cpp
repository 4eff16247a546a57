// SPDX-License-Identifier: MIT
// Batching (lib/README.md, "Queues and tables"): requests to one destination travel together in one
// MPI message while earlier calls to it still await their replies, and so do all one-way calls
// (rpc_ff); a lone call is never held back. The replies made while a received batch runs leave
// as one message too.
#include "core/outbox_set.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include <mpirpc/detail/future_state.hpp>

#include "errors_internal.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;
} // namespace

/// Requests to one destination collected into one MPI message (a wire::kind::batch). Guarded
/// by `mutex`, which is held while the batch is sent, so that messages leave in the order they
/// were added, before any later message to the same destination.
struct outbox_set::outbox {
  std::mutex mutex;
  std::vector<char> bytes;          ///< batch header, then each message
  std::vector<std::uint64_t> calls; ///< call id of each request in it; 0 for a one-way call
  std::atomic<std::uint32_t> count{0};
  clock::time_point since;         ///< when its first message was added
  std::uint64_t one_way_bytes = 0; ///< of the one-way calls in it (one_way_window)
};

/// The replies to one source's batched requests, collected into one MPI message (a
/// wire::kind::batch on the reply tag), guarded by `mutex` (held while it is sent), so that a
/// poller can send replies whose handler thread has gone on to a handler that blocks: they
/// leave when the batch that made them is done, when its thread is about to wait, or once
/// batch_delay old.
struct outbox_set::reply_batch {
  std::mutex mutex;
  std::vector<char> bytes; ///< batch header, then each reply
  std::uint32_t count = 0;
  clock::time_point since; ///< when its first reply was added
};

void seal_batch(std::vector<char>& bytes, std::uint32_t count) noexcept {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(wire::kind::batch);
  h.call_id = count;
  h.payload_size = bytes.size() - sizeof(wire::header);
  std::memcpy(bytes.data(), &h, sizeof h);
}

outbox_set::outbox_set(int ranks, control_link& link, pending_calls& pending, const session& s,
                       statistics& counters, one_way_window* one_way)
    : _link(link), _pending(pending), _session(s), _counters(counters), _one_way(one_way) {
  for (int r = 0; r < ranks; ++r) {
    _outboxes.push_back(std::make_unique<outbox>());
    _reply_batches.push_back(std::make_unique<reply_batch>());
  }
}

outbox_set::~outbox_set() = default;

std::uint32_t outbox_set::queued(int dest) const noexcept {
  return _outboxes[static_cast<std::size_t>(dest)]->count.load(std::memory_order_acquire);
}

void outbox_set::send_batch(int dest, int tag, std::vector<char>& bytes, std::uint32_t count) {
  seal_batch(bytes, count);
  // Counted before it leaves, as the message is: whoever has seen it arrive (and synchronized
  // with this rank since) must see it counted here too. A send that fails takes it back.
  _counters.batches_sent.fetch_add(1, std::memory_order_seq_cst);
  _counters.messages_batched.fetch_add(count, std::memory_order_seq_cst);
  try {
    _link.send_control(dest, tag, bytes.data(), bytes.size());
  } catch (...) {
    _counters.batches_sent.fetch_sub(1, std::memory_order_seq_cst);
    _counters.messages_batched.fetch_sub(count, std::memory_order_seq_cst);
    throw;
  }
}

bool outbox_set::put(int dest, const std::vector<char>& buffer, std::uint64_t call_id,
                     bool may_batch) {
  outbox& box = *_outboxes[static_cast<std::size_t>(dest)];
  const std::size_t size = buffer.size();
  if (!may_batch && box.count.load(std::memory_order_acquire) == 0) {
    _link.send_control(dest, wire::tag_request, buffer.data(), size);
    return false;
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
      // message is not sent either (it could not follow the batch in order): the caller
      // takes its call back when the failure is rethrown below.
      flush_locked(dest, box, failed, failure);
      if (!failure) _link.send_control(dest, wire::tag_request, buffer.data(), size);
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
      if (call_id == 0 && _one_way) {
        wire::header h; // a one-way call; the window's own markers are not counted
        std::memcpy(&h, buffer.data(), sizeof h);
        if (!one_way_window::is_window_message(h.function_id)) box.one_way_bytes += size;
      }
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
  return started;
}

void outbox_set::flush_locked(int dest, outbox& box, std::vector<std::uint64_t>& failed,
                              std::exception_ptr& failure) noexcept {
  const std::uint32_t count = box.count.load(std::memory_order_relaxed);
  if (count == 0) return;
  if (_one_way && box.one_way_bytes > 0) _one_way->sent(dest, box.one_way_bytes);
  box.one_way_bytes = 0;
  try {
    if (count == 1) { // a batch of one is just the message
      _link.send_control(dest, wire::tag_request, box.bytes.data() + sizeof(wire::header),
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

void outbox_set::fail_unsent(const std::vector<std::uint64_t>& ids,
                             const std::exception_ptr& failure, int dest) noexcept {
  const std::string& callee = _session.name_of(dest);
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
    _session.log(std::to_string(one_way) + " one-way call(s) to " + callee +
                 " could not be sent: " + why);
  }
}

void outbox_set::flush(int dest) noexcept {
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

void outbox_set::flush_all() noexcept {
  if (_reply_batches_filled.load(std::memory_order_seq_cst) > 0) {
    for (std::size_t d = 0; d < _reply_batches.size(); ++d)
      flush_replies(static_cast<int>(d));
  }
  if (_outboxes_filled.load(std::memory_order_seq_cst) == 0) return;
  for (std::size_t d = 0; d < _outboxes.size(); ++d)
    flush(static_cast<int>(d));
}

void outbox_set::flush_aged(clock::time_point now) noexcept {
  if (_reply_batches_filled.load(std::memory_order_seq_cst) > 0) {
    // Replies whose thread went on to a handler that takes long (or blocks on something other
    // than a future) are not held back by it.
    for (std::size_t d = 0; d < _reply_batches.size(); ++d) {
      reply_batch& batch = *_reply_batches[d];
      std::unique_lock<std::mutex> lock(batch.mutex, std::try_to_lock);
      if (!lock || batch.count == 0 || now - batch.since < batch_delay) continue;
      flush_replies_locked(static_cast<int>(d), batch);
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

void outbox_set::drop() noexcept {
  for (std::size_t d = 0; d < _outboxes.size(); ++d) {
    outbox& box = *_outboxes[d];
    std::lock_guard<std::mutex> lock(box.mutex);
    const std::size_t one_way =
        static_cast<std::size_t>(std::count(box.calls.begin(), box.calls.end(), 0u));
    if (one_way > 0) {
      _session.log(std::to_string(one_way) + " one-way call(s) to " +
                   _session.name_of(static_cast<int>(d)) +
                   " were not sent: the runtime stopped first");
    }
    if (box.count.load(std::memory_order_relaxed) > 0) {
      _outboxes_filled.fetch_sub(1, std::memory_order_seq_cst);
    }
    box.bytes.clear();
    box.calls.clear(); // the calls among them are failed by stop() with every pending call
    box.one_way_bytes = 0;
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

bool outbox_set::put_reply(int dest, const std::vector<char>& message) {
  if (message.size() + sizeof(wire::header) > wire::max_batch_bytes) return false;
  reply_batch& batch = *_reply_batches[static_cast<std::size_t>(dest)];
  std::lock_guard<std::mutex> lock(batch.mutex);
  if (batch.bytes.size() + message.size() > wire::max_batch_bytes) {
    flush_replies_locked(dest, batch);
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

void outbox_set::flush_replies(int dest) noexcept {
  if (dest < 0) return;
  reply_batch& batch = *_reply_batches[static_cast<std::size_t>(dest)];
  std::lock_guard<std::mutex> lock(batch.mutex);
  flush_replies_locked(dest, batch);
}

void outbox_set::flush_replies_locked(int dest, reply_batch& batch) noexcept {
  if (batch.count == 0) return;
  try {
    if (batch.count == 1) {
      _link.send_control(dest, wire::tag_reply, batch.bytes.data() + sizeof(wire::header),
                         batch.bytes.size() - sizeof(wire::header));
    } else {
      send_batch(dest, wire::tag_reply, batch.bytes, batch.count);
    }
  } catch (const std::exception& e) {
    // The callers' calls then time out (or fail at shutdown), as for a lost single reply.
    _session.log("could not send " + std::to_string(batch.count) + " replies to " +
                 _session.name_of(dest) + ": " + e.what());
  }
  batch.bytes.clear();
  batch.count = 0;
  _reply_batches_filled.fetch_sub(1, std::memory_order_seq_cst);
}

} // namespace mpirpc::detail
