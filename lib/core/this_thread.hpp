// SPDX-License-Identifier: MIT
// What the core keeps per thread. Internal.
#pragma once

#include <cstdint>
#include <vector>

namespace mpirpc::detail {

/// The state of the calling thread that the core's parts read on their paths: one
/// thread-local object rather than a thread_local per part.
struct thread_state {
  /// The thread is one of an engine's background threads (handlers run there).
  bool on_engine_thread = false;
  /// The request this thread sent last, unless it has dispatched a message since: the
  /// sender's burst rule (core/sender.cpp).
  struct sent_request {
    const void* sender = nullptr;
    int dest = -1;
    std::int64_t ns = 0;
  };
  sent_request last_request;
  /// The buffer replies are built in (core/sender, the engine's reply path).
  std::vector<char> reply_buffer;
};

/// This thread's state.
inline thread_state& this_thread() noexcept {
  thread_local thread_state state;
  return state;
}

} // namespace mpirpc::detail
