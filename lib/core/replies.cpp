// SPDX-License-Identifier: MIT
#include "core/replies.hpp"

#include <optional>
#include <string>
#include <vector>

#include <mpirpc/detail/future_state.hpp>
#include <mpirpc/errors.hpp>

#include "core/this_thread.hpp"
#include "errors_internal.hpp"

namespace mpirpc::detail {

namespace {
/// Releases a handler's hold when its reply has been dealt with, whichever way.
struct hold_release {
  reply_token& token;
  std::atomic<int>& held;
  ~hold_release() {
    if (token.held) held.fetch_sub(1, std::memory_order_seq_cst);
  }
};
} // namespace

bool replies::send_value(reply_token& token, save_fn save, const void* value) noexcept {
  if (token.one_way) { // nobody waits for the value
    if (token.held) _held_one_way.fetch_sub(1, std::memory_order_seq_cst);
    return true;
  }
  const hold_release release{token, _held};
  bool may_wait = !in_progress_callback();
  std::string replenish_failed;
  const std::string& self = _session.self().name;
  for (;;) {
    std::optional<future<void>> replenished; // engaged only when it must be waited for: a
                                             // default future allocates its state
    bool exhausted = false;
    {
      const admission_gate::pass admitted(_sender.gate());
      if (!admitted) return true; // a late reply of an async handler after shutdown
      // References in the result lend weight to the reply: kept if it is sent, given back if
      // not.
      outgoing_transaction lent(_lending);
      std::vector<char>& buffer = this_thread().reply_buffer;
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
          replenished = std::move(e.replenished);
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
          _sender.send_message(token.source, wire::tag_reply, buffer, wire::kind::reply_value,
                               token.call_id, token.function_id, segments);
          lent.sent();
          return true;
        } catch (...) {
          failed = "sent";
          send_failed = true;
          what = describe_exception(std::current_exception()).message;
        }
      }
      if (failed) {
        _sender.send_error_reply(token.source, token.call_id, token.function_id,
                                 wire::error_code::serialization, "mpirpc::serialization_error",
                                 "the result of '" + session::function_name(token.function_id) +
                                     "' could not be " + failed + " on " + self + ": " + what,
                                 self);
        return !send_failed;
      }
    }
    // A reference in the result had no weight left: wait until its owner gave more, then build
    // the reply again (the value lives until this function returns).
    try {
      replenished->wait();
    } catch (...) {
      may_wait = false; // the next attempt reports the failure
      replenish_failed = describe_exception(std::current_exception()).message;
    }
  }
}

void replies::send_error(reply_token& token, std::exception_ptr error) noexcept {
  if (token.one_way) { // nobody waits for it: logged and counted instead
    const exception_description d = describe_exception(error);
    _diagnostics.one_way_failed("a one-way call of '" + session::function_name(token.function_id) +
                                "' from " + _session.name_of(token.source) + " failed: " + d.type +
                                ": " + d.message);
    if (token.held) _held_one_way.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  const hold_release release{token, _held};
  const admission_gate::pass admitted(_sender.gate());
  if (!admitted) return;
  const exception_description d = describe_exception(error);
  _sender.send_error_reply(token.source, token.call_id, token.function_id, d.code, d.type,
                           d.message, d.origin.empty() ? _session.self().name : d.origin);
}

void replies::hold(reply_token& token) noexcept {
  if (!token.held) {
    token.held = true;
    // A one-way call's asynchronous part counts as busy for shutdown: no caller counts it.
    (token.one_way ? _held_one_way : _held).fetch_add(1, std::memory_order_seq_cst);
  }
}

// ---------------------------------------------------------------------------------------------
// The entry points of detail/library.hpp: a token names the replies object that answers it
// (none for a token not made by a receiver: its replies go nowhere).

namespace {
replies* replies_for(const reply_token& token) noexcept {
  return static_cast<replies*>(token.owner);
}
} // namespace

bool send_reply_value(reply_token& token, save_fn save, const void* value) noexcept {
  replies* r = replies_for(token);
  return r ? r->send_value(token, save, value) : true;
}

void send_reply_error(reply_token& token, std::exception_ptr error) noexcept {
  if (replies* r = replies_for(token)) r->send_error(token, std::move(error));
}

void hold_reply(reply_token& token) noexcept {
  if (replies* r = replies_for(token)) r->hold(token);
}

} // namespace mpirpc::detail
