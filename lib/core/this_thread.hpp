// SPDX-License-Identifier: MIT
// What the runtime keeps per thread. Internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include <mpirpc/detail/request.hpp>

#include "core/wait_history.hpp"
#include "net/transport.hpp"

namespace mpirpc::detail {

class in_order_runs;
struct in_order_cursor; // core/in_order.cpp

/// The batch of requests this thread runs, whose replies are batched (core/in_order).
struct in_order_reply_target {
  const in_order_runs* owner = nullptr;
  int dest = -1;
};

/// The state of the calling thread that the runtime's parts read on their paths: one
/// thread-local object rather than a thread_local per part. Each field is read and written
/// only by its own thread. (The rref service's fork log is the one other per-thread state: it
/// is the rref service's own, lib/rref/rref_table.cpp.)
struct thread_state {
  // ---- who this thread is
  /// The thread is one of an engine's background threads (handlers run there).
  bool on_engine_thread = false;
  /// The thread runs a continuation or callback on the progress path, which must neither wait
  /// nor shut down (in_progress_callback, progress_callback_scope).
  bool in_progress_callback = false;
  /// The thread asked Linux for fine timer slack (progress: short sleeps must be short).
  bool fine_timer_slack = false;

  // ---- sending
  /// The request this thread sent last, unless it has dispatched a message since: the
  /// sender's burst rule (core/sender.cpp).
  struct sent_request {
    const void* sender = nullptr;
    int dest = -1;
    std::int64_t ns = 0;
  };
  sent_request last_request;
  /// Scratch for building one request (begin_request).
  request_buffers request;
  /// The buffer replies are built in (core/sender, core/replies).
  std::vector<char> reply_buffer;
  /// The worker name this thread resolved last, in which session (core/session): a key of that
  /// session's table, valid while the serial matches.
  struct resolved_name {
    std::uint64_t session = 0;
    const std::string* name = nullptr;
    int rank = -1;
  };
  resolved_name last_name;

  // ---- receiving
  /// Receive buffers, one per nesting level (a handler run inline may wait on a future and so
  /// receive again while its own request's buffer is in use); `receive_depth` are in use.
  std::deque<incoming> receive_buffers;
  std::size_t receive_depth = 0;
  /// The in-order run this thread is in, if any (core/in_order).
  in_order_cursor* in_order_run = nullptr;
  /// The batch whose replies this thread batches, if any (core/in_order).
  in_order_reply_target reply_batch;

  // ---- waiting
  /// How long this thread's last waits for a reply took (the waiter's pacing).
  wait_history waits;
};

/// This thread's state.
inline thread_state& this_thread() noexcept {
  thread_local thread_state state;
  return state;
}

} // namespace mpirpc::detail
