// SPDX-License-Identifier: MIT
// The callee's side of a call: its reply, or for a one-way call its failure report. Internal.
#pragma once

#include <atomic>
#include <exception>

#include <mpirpc/rpc.hpp>

#include "core/lending.hpp"
#include "core/sender.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"

namespace mpirpc::detail {

/// Sends the replies of the handlers this rank runs (through the sender), and counts the
/// replies that outlive their handler (an async-execution handler's, sent from a future's
/// continuation) for shutdown. A reply_token names the replies object that answers it
/// (reply_token::owner): the entry points send_reply_value, send_reply_error and hold_reply of
/// detail/library.hpp (replies.cpp) go to it. Thread-safe; a reply is sent on the thread that
/// completes it.
class replies {
public:
  replies(sender& s, const session& ses, diagnostics& diag, lending_log& lending)
      : _sender(s), _session(ses), _diagnostics(diag), _lending(lending) {}

  /// Sends the value (serialized by `save`; none when null) as the reply. A value that
  /// cannot be serialized or sent becomes an error reply. A reference in the value whose
  /// weight is exhausted is waited for (its owner gives more), then the reply is built again;
  /// not on the progress path, where that fails the reply instead. False only if sending the
  /// value failed part way: MPI may then still read its buffers.
  bool send_value(reply_token& token, save_fn save, const void* value) noexcept;
  /// Sends `error` as the reply; for a one-way call, logs and counts it.
  void send_error(reply_token& token, std::exception_ptr error) noexcept;
  /// The reply outlives its handler (sent later, from a continuation): counted until sent.
  void hold(reply_token& token) noexcept;

  /// Replies of two-way calls held and not yet sent (seq_cst). Not counted as busy by
  /// quiescence: the caller counts the call until the reply or its timeout.
  int held() const noexcept { return _held.load(std::memory_order_seq_cst); }
  /// One-way calls still running asynchronously (seq_cst): busy for quiescence, since no
  /// caller counts them.
  int held_one_way() const noexcept { return _held_one_way.load(std::memory_order_seq_cst); }
  /// The send path the replies go through (the one-way window's messages use it too).
  sender& outgoing() noexcept { return _sender; }

private:
  sender& _sender;
  const session& _session;
  diagnostics& _diagnostics;
  lending_log& _lending;
  std::atomic<int> _held{0};
  std::atomic<int> _held_one_way{0};
};

} // namespace mpirpc::detail
