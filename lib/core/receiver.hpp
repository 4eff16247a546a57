// SPDX-License-Identifier: MIT
// The receive path: a received message is validated once and goes to its handler. Internal.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>

#include <mpirpc/rpc.hpp>

#include "core/in_order.hpp"
#include "core/message_counter.hpp"
#include "core/pending_calls.hpp"
#include "core/registry.hpp"
#include "core/replies.hpp"
#include "core/sender.hpp"
#include "core/server.hpp"
#include "core/session.hpp"
#include "core/statistics.hpp"
#include "net/segment_stream.hpp"
#include "net/transport.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

/// Serves the requests flagged on_rref or creates_rref, and those for the service functions
/// (function_entry::service). The rref service implements it; the core runs such requests like
/// any other, on a handler slot, and hands them over decoded this far.
class flagged_request_handler {
public:
  virtual void serve(std::uint16_t flags, const function_entry& fn, reader& in,
                     reply_token& token) = 0;
  /// Answers a flagged request whose function this worker has not registered, so that the
  /// references it names learn of it: the object it creates fails (and later calls on it fail
  /// at once), the weight of the object it runs on goes back.
  virtual void refuse_unknown(std::uint16_t flags, std::uint64_t function_id, reader& in,
                              reply_token& token) = 0;

protected:
  ~flagged_request_handler() = default;
};

/// Sees a reply that names no pending call before it is dropped as late; true if it took the
/// reply. Null in production: only the test seam (tests/support/seam) installs one, to
/// receive the replies to the raw messages it sends.
using late_reply_hook = bool (*)(const incoming& message);
extern std::atomic<late_reply_hook> g_late_reply_hook;

/// Handles what the pollers receive (dispatch), on the thread that received it: a malformed
/// message is refused (logged, counted, answered when it is a request, its out-of-line data
/// drained), a batch or a one-way request runs in order (in_order_runs), a request runs its
/// handler on a free handler slot or waits in the server's queue, a reply completes its
/// pending call inside a progress_callback_scope. Every control message is counted as received
/// once. Thread-safe.
class receiver final : in_order_hooks {
public:
  struct parts {
    transport& net;
    const session& identity;
    statistics& counters;
    diagnostics& diag;
    message_counter& messages;
    pending_calls& pending;
    sender& send;
    outbox_set& outboxes;
    replies& reply;
    server& serve;
    // Reply tokens name `reply` as their owner (reply_token::owner).
  };
  explicit receiver(const parts& p);

  /// Who serves the flagged and service requests; set before any message is received. Until
  /// then (and without one) they are answered with an error.
  void serve_flagged_with(flagged_request_handler& handler) noexcept { _flagged = &handler; }

  /// Validates and handles one received control message.
  void dispatch(incoming& message) noexcept override;
  /// Runs a request taken from the server's queue; the caller holds a handler slot.
  void run_queued_request(incoming& message);
  /// Answers the requests still queued for a handler slot with shutting_down (stopping).
  void refuse_queued() noexcept;
  in_order_runs& in_order() noexcept { return _in_order; }
  const in_order_runs& in_order() const noexcept { return _in_order; }

private:
  void handle_request(incoming& message, const wire::header& h, bool slot_held) override;
  /// A flagged request for a function not registered here: refused by the flagged handler.
  void refuse_unknown_flagged(const incoming& message, const wire::header& h);
  /// The reply token of a request.
  reply_token token_for(const incoming& message, const wire::header& h);
  void handle_reply(incoming& message, const wire::header& h) override;
  bool prefetch_deferred(incoming& message, bool count_received) noexcept override;
  /// A request whose arguments could not be received or decoded (`what`): answered with a
  /// serialization_error, or, one-way, logged and counted.
  void refuse_arguments(int source, const wire::header& h, const std::string& what) noexcept;
  void run_request(const incoming& message, const wire::header& h, const function_entry& fn);
  std::exception_ptr decode_error_reply(const char* payload, std::size_t size,
                                        const pending_call& call) const;

  parts _p;
  flagged_request_handler* _flagged = nullptr;
  in_order_runs _in_order;
};

} // namespace mpirpc::detail
