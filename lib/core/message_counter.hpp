// SPDX-License-Identifier: MIT
// The control messages one rank has sent and received: what quiescence compares. Internal.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>

namespace mpirpc::detail {

/// The sole owner of the counts that shutdown's quiescence waves add up over all ranks
/// (core/quiescence: every message received everywhere, nothing busy, the same totals twice).
/// Thread-safe; every count is sequentially consistent.
///
/// The invariant: at any moment the sum over ranks of sent is at least the sum of received. So
/// a message is counted as sent before it is handed to MPI, and a send that fails before its
/// control message left is balanced by counting it as received too (once the control message
/// has left, its receiver counts it, even if its out-of-line buffers then fail). A received
/// message is counted once, however many threads handle the parts of a batch.
class message_counter {
public:
  /// Runs `send(bool* control_sent)`, counted as above; rethrows what it throws.
  template <class Send> void send(Send&& send) {
    _sent.fetch_add(1, std::memory_order_seq_cst);
    bool control_sent = false;
    try {
      std::forward<Send>(send)(&control_sent);
    } catch (...) {
      if (!control_sent) _received.fetch_add(1, std::memory_order_seq_cst);
      throw;
    }
  }
  /// One control message was received (dispatched, refused or dropped).
  void received() noexcept { _received.fetch_add(1, std::memory_order_seq_cst); }

  std::uint64_t sent_count() const noexcept { return _sent.load(std::memory_order_seq_cst); }
  std::uint64_t received_count() const noexcept {
    return _received.load(std::memory_order_seq_cst);
  }

private:
  std::atomic<std::uint64_t> _sent{0};
  std::atomic<std::uint64_t> _received{0};
};

} // namespace mpirpc::detail
