// SPDX-License-Identifier: MIT
// Batching: small messages to one destination collected into one MPI message. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include "core/one_way_window.hpp"
#include "core/pending_calls.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"

namespace mpirpc::detail {

/// Sends one control message (header first, no segments) to `dest` with `tag`, counted for
/// quiescence; throws what the transport throws. The engine's implementation sends through
/// the transport; a unit test's records what it is given.
class control_link {
public:
  virtual void send_control(int dest, int tag, const char* data, std::size_t size) = 0;

protected:
  ~control_link() = default;
};

/// Puts the batch header (wire::kind::batch, `count` messages) in front of `bytes`, which
/// hold the messages after room for the header.
void seal_batch(std::vector<char>& bytes, std::uint32_t count) noexcept;

/// The batching rules' times (batch_delay here, batch_burst in core/sender.hpp) stand for "a
/// moment" and "back to back" in optimized code, where a loop's calls are 1-2 us apart.
/// ThreadSanitizer runs the same code 5-15 times slower (a loop's calls are 10-50 us apart), so
/// there they are ten times as long: a TSan build batches what a normal build batches, and the
/// race detector checks the batched paths (in-order runs, reply batches). Other builds: 1.
#if defined(__SANITIZE_THREAD__)
inline constexpr int batch_time_scale = 10;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr int batch_time_scale = 10;
#else
inline constexpr int batch_time_scale = 1;
#endif
#else
inline constexpr int batch_time_scale = 1;
#endif

/// A batch this old is sent by the next poller that finds no message (no thread waits for
/// it, or it would have been sent when that thread started to wait).
inline constexpr std::chrono::microseconds batch_delay{20 * batch_time_scale};
/// Room a batch keeps for one more small message; a fuller batch is sent at once.
inline constexpr std::size_t batch_headroom = 64;

/// The batches this rank is building: per destination, requests (an outbox) and replies (a
/// reply batch), each at most wire::max_batch_bytes. Thread-safe: each batch has a mutex,
/// held while it is sent, so that messages to one destination leave in the order they were
/// put, before any later message to it. A batch of one message leaves as that message.
///
/// A request batch that cannot be sent fails its calls (the sinks of their pending calls get
/// the error, on the thread that sent, inside a progress_callback_scope, after the mutex is
/// released: their continuations may call the same destination); its one-way calls are
/// logged. A reply batch that cannot be sent is logged: its callers time out.
class outbox_set {
public:
  /// `one_way`: where the bytes of one-way calls are counted as they leave, once per batch
  /// (null: not counted).
  outbox_set(int ranks, control_link& link, pending_calls& pending, const session& s,
             statistics& counters, one_way_window* one_way = nullptr);
  ~outbox_set();
  outbox_set(const outbox_set&) = delete;
  outbox_set& operator=(const outbox_set&) = delete;

  // ---- requests
  /// Sends `message` (a request, header filled in, no segments) to `dest`: into the batch to
  /// `dest` if `may_batch` or if such a batch is being built (order is kept either way), else
  /// at once. `call_id` is 0 for a one-way call. If the message goes alone and what was batched
  /// before it could not be sent, the message is not sent either and the failure is rethrown
  /// (the batched calls are failed first). Returns whether a new batch was started (whoever
  /// sends aged batches should look within pacing::batch_poll_interval).
  bool put(int dest, const std::vector<char>& message, std::uint64_t call_id, bool may_batch);
  /// Sends the request batch to `dest`, if any.
  void flush(int dest) noexcept;
  /// Sends every batch, replies first.
  void flush_all() noexcept;
  /// Sends the batches at least batch_delay old at `now` whose mutex is free.
  void flush_aged(std::chrono::steady_clock::time_point now) noexcept;
  /// Forgets every batch unsent (the runtime stops; the calls among them are failed with every
  /// pending call). One-way calls dropped so are logged.
  void drop() noexcept;
  /// Whether a batch of either kind is being built (relaxed: a hint for pollers).
  bool any() const noexcept {
    return _outboxes_filled.load(std::memory_order_relaxed) > 0 ||
           _reply_batches_filled.load(std::memory_order_relaxed) > 0;
  }
  /// How many messages wait in the request batch to `dest`.
  std::uint32_t queued(int dest) const noexcept;

  // ---- replies
  /// Adds a reply (header filled in, no segments) to the reply batch for `dest`; false if it
  /// is too large to be batched (then it must be sent on its own).
  bool put_reply(int dest, const std::vector<char>& message);
  /// Sends the reply batch to `dest` (`dest` < 0 or no batch: nothing).
  void flush_replies(int dest) noexcept;

private:
  struct outbox;
  struct reply_batch;
  void send_batch(int dest, int tag, std::vector<char>& bytes, std::uint32_t count);
  void flush_locked(int dest, outbox& box, std::vector<std::uint64_t>& failed,
                    std::exception_ptr& failure) noexcept;
  void fail_unsent(const std::vector<std::uint64_t>& ids, const std::exception_ptr& failure,
                   int dest) noexcept;
  void flush_replies_locked(int dest, reply_batch& batch) noexcept;

  control_link& _link;
  pending_calls& _pending;
  const session& _session;
  statistics& _counters;
  one_way_window* const _one_way;
  std::vector<std::unique_ptr<outbox>> _outboxes;           ///< by destination rank
  std::vector<std::unique_ptr<reply_batch>> _reply_batches; ///< by destination rank
  std::atomic<int> _outboxes_filled{0};                     ///< outboxes holding a batch
  std::atomic<int> _reply_batches_filled{0};                ///< reply batches holding replies
};

} // namespace mpirpc::detail
