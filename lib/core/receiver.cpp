// SPDX-License-Identifier: MIT
#include "core/receiver.hpp"

#include <cstring>
#include <optional>
#include <string>

#include <mpirpc/detail/future_state.hpp>
#include <mpirpc/errors.hpp>

#include "core/one_way_window.hpp"
#include "errors_internal.hpp"

namespace mpirpc::detail {

std::atomic<late_reply_hook> g_late_reply_hook{nullptr};

namespace {

/// The one-way window's messages (one_way_window), identified by these addresses (never
/// called). Their invokers take the byte count and hand it to the send path of the runtime
/// that received them.
void one_way_mark() {}
void one_way_ack() {}

std::uint64_t window_bytes(reader& in) {
  return in.read_plain<std::uint64_t>();
}
sender& outgoing_of(const reply_token& token) {
  return static_cast<replies*>(token.owner)->outgoing();
}
/// The window's messages are one-way; a request for them is answered with an error.
void require_one_way(const reply_token& token) {
  if (!token.one_way) {
    throw error("mpirpc: " + session::function_name(token.function_id) +
                " is a one-way message of the runtime's own, not a function to call");
  }
}
/// A marker came up in order: the calls before it have started here.
void serve_one_way_mark(raw_function, reader& in, reply_token& token) {
  require_one_way(token);
  outgoing_of(token).acknowledge_one_way(token.source, window_bytes(in));
}
/// Acknowledgements are applied when received (receiver::handle_request); this serves only
/// one that came inside a batch.
void serve_one_way_ack(raw_function, reader& in, reply_token& token) {
  require_one_way(token);
  outgoing_of(token).one_way_acknowledged(token.source, window_bytes(in));
}

/// Registered on every rank alike: the receiver is always linked.
const bool one_way_window_registered = [] {
  registry& r = registry::instance();
  r.add(one_way_window::marker_name, &one_way_mark, &serve_one_way_mark, nullptr);
  r.add(one_way_window::ack_name, &one_way_ack, &serve_one_way_ack, nullptr);
  return true;
}();

} // namespace

receiver::receiver(const parts& p)
    : _p(p), _in_order(p.identity.size(), *this, p.net, p.serve, p.send, p.outboxes, p.identity,
                       p.counters, p.diag) {}

std::exception_ptr receiver::decode_error_reply(const char* payload, std::size_t size,
                                                const pending_call& call) const {
  reader in(payload, size);
  const auto code = static_cast<wire::error_code>(in.read_plain<std::uint8_t>());
  std::string origin, type, message;
  load(in, origin);
  load(in, type);
  load(in, message);
  const std::string fn = session::function_name(call.function_id);
  const std::string& callee = _p.identity.name_of(call.dest);
  switch (code) {
  case wire::error_code::remote_exception:
    return std::make_exception_ptr(remote_error(origin, type, message));
  case wire::error_code::unknown_function:
    // The callee's own words when it had more to say than that (remote references: which
    // object was not created, and why); else the caller names the function it called.
    if (message != wire::unknown_function_text) {
      return std::make_exception_ptr(unknown_function_error(message));
    }
    return std::make_exception_ptr(unknown_function_error(
        "mpirpc: " + callee + " has no function registered as '" + fn + "' (it is registered on " +
        _p.identity.self().name + "; the ranks' registries differ)"));
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

void receiver::dispatch(incoming& message) noexcept {
  sender::message_received(); // what this thread sends next follows a message: no burst
  wire::header h{};
  const std::uint32_t max_tag = _p.net.tag_ub();
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
      const bool drained =
          segment_stream(_p.net, message.source, h.data_tag, table, h.segment_count, &_p.diag, true)
              .drain();
      segments = drained ? "; its " + std::to_string(h.segment_count) +
                               " out-of-line buffer(s) were received and discarded"
                         : "; its out-of-line buffers were not all received";
    } else if (size >= sizeof(wire::header) && h.magic == wire::magic && h.segment_count > 0) {
      segments = "; the out-of-line buffers it announces were not received (no usable segment "
                 "table or data tag)";
    }
    _p.identity.log("dropped a malformed message from rank " + std::to_string(message.source) +
                    " (tag " + std::to_string(message.tag) + "): " + problem + segments);
    _p.counters.malformed.fetch_add(1, std::memory_order_seq_cst);
    if (message.tag == wire::tag_request && size >= sizeof(wire::header) &&
        h.magic == wire::magic && !(h.flags & wire::request_one_way) &&
        h.kind != static_cast<std::uint8_t>(wire::kind::batch) &&
        h.kind != static_cast<std::uint8_t>(wire::kind::envelope)) {
      _p.send.send_error_reply(message.source, h.call_id, h.function_id,
                               wire::error_code::malformed, "mpirpc::serialization_error",
                               "malformed request: " + problem, _p.identity.self().name);
    }
    if (!message.continuation) _p.messages.received();
    return;
  }
  const bool counted = message.continuation; // the rest of a batch counted already
  try {
    if (h.kind == static_cast<std::uint8_t>(wire::kind::batch)) {
      _in_order.handle_batch(message, h);
    } else if (h.kind == static_cast<std::uint8_t>(wire::kind::request)) {
      handle_request(message, h, false);
    } else {
      handle_reply(message, h);
    }
  } catch (const std::exception& e) {
    _p.identity.log(std::string("error while dispatching a message: ") + e.what());
  }
  if (!counted) _p.messages.received();
}

void receiver::handle_request(incoming& message, const wire::header& h, bool slot_held) {
  struct slot_guard { // a slot taken for this request by the caller goes back if it cannot run
    server& s;
    bool held;
    ~slot_guard() {
      if (held) s.release_slot();
    }
  } slot{_p.serve, slot_held};
  const bool one_way = (h.flags & wire::request_one_way) != 0;
  if (one_way_window::is_acknowledgement(h)) {
    // An acknowledgement of the one-way window needs no order and no handler slot: applied
    // here, so that it never waits behind this rank's queue of calls from its sender.
    reader in(message.bytes.data() + sizeof(wire::header),
              static_cast<std::size_t>(h.payload_size));
    try {
      _p.send.one_way_acknowledged(message.source, window_bytes(in));
    } catch (const std::exception& e) {
      _p.identity.log("dropped a malformed one-way acknowledgement from " +
                      _p.identity.name_of(message.source) + ": " + e.what());
    }
    return;
  }
  const function_entry* fn = registry::instance().by_id(h.function_id);
  if (!fn) {
    if ((h.flags & wire::request_rref_flags) && !one_way && _flagged && _p.send.gate().open()) {
      refuse_unknown_flagged(message, h);
      return;
    }
    segment_stream(_p.net, message, h, &_p.diag).drain();
    if (one_way) {
      _p.counters.one_way_run.fetch_add(1, std::memory_order_relaxed);
      _p.diag.one_way_failed("a one-way call from " + _p.identity.name_of(message.source) +
                             " was dropped: " + session::function_name(h.function_id) +
                             " is not registered on " + _p.identity.self().name);
      return;
    }
    _p.send.send_error_reply(message.source, h.call_id, h.function_id,
                             wire::error_code::unknown_function, "mpirpc::unknown_function_error",
                             wire::unknown_function_text, _p.identity.self().name);
    return;
  }
  if (!_p.send.gate().open()) { // a non-graceful stop is under way
    segment_stream(_p.net, message, h, &_p.diag).drain();
    if (one_way) {
      _p.counters.one_way_run.fetch_add(1, std::memory_order_relaxed);
      _p.diag.one_way_failed("a one-way call of '" + fn->name + "' from " +
                             _p.identity.name_of(message.source) +
                             " was not run: " + _p.identity.self().name + " is shutting down");
      return;
    }
    _p.send.send_error_reply(message.source, h.call_id, h.function_id,
                             wire::error_code::shutting_down, "mpirpc::shutdown_error",
                             _p.identity.self().name + " is shutting down",
                             _p.identity.self().name);
    return;
  }
  if (slot_held) {
    slot.held = false; // released below, after the handler
  } else if (!_p.serve.try_take_slot()) {
    // In an in-order run, the request and what follows it go to a server thread together.
    // (Within a batch the batch takes the slot first: only a request run on its own gets here.)
    if (_in_order.runs_here()) {
      // Its sender is released first, as for a queued request (dispatch counts it).
      if (h.segment_count > 0 && message.prefetched.empty() && !prefetch_deferred(message, false)) {
        return;
      }
      _in_order.hand_off_with(message);
      return;
    }
    // The request waits for a handler slot; its sender must not wait with it (a sender blocked
    // on an unreceived buffer might itself hold the slot the request needs): take the buffers
    // now and decode from memory later.
    if (h.segment_count > 0) {
      segment_stream segments(_p.net, message, h, &_p.diag);
      try {
        segments.prefetch(message.prefetched);
      } catch (const std::exception& e) { // the buffers do not match the table, or no memory
        segments.drain();
        message.prefetched.clear();
        _p.send.send_error_reply(message.source, h.call_id, h.function_id,
                                 wire::error_code::serialization, "mpirpc::serialization_error",
                                 "the arguments of '" + fn->name + "' could not be received on " +
                                     _p.identity.self().name + ": " + e.what(),
                                 _p.identity.self().name);
        return;
      }
    }
    const bool first = _p.serve.queue(std::move(message));
    message.bytes = std::vector<char>();
    message.prefetched.clear();
    if (first) {
      _p.identity.log(
          "warning: all " + std::to_string(_p.serve.slots()) +
          " server threads are busy, so requests wait in a queue. A handler that blocks "
          "(rpc_sync, future::wait) holds its thread until the nested call returns: return an "
          "mpirpc::future from such a function instead (async execution, see functions.hpp), or "
          "raise options::num_worker_threads. Timeouts still fire. (Reported once.)");
    }
    _p.serve.run_queued(); // a slot may have been freed meanwhile
    return;
  }
  run_request(message, h, *fn);
  _p.serve.release_slot();
  _p.serve.run_queued();
}

bool receiver::prefetch_deferred(incoming& message, bool count_received) noexcept {
  wire::header h{};
  if (!wire::validate(message.bytes.data(), message.bytes.size(), message.tag, h, _p.net.tag_ub())
           .empty()) {
    return true; // refused (and drained) when it is dispatched
  }
  segment_stream segments(_p.net, message, h, &_p.diag);
  try {
    segments.prefetch(message.prefetched);
    return true;
  } catch (const std::exception& e) { // the buffers do not match the table, or no memory
    segments.drain();
    message.prefetched.clear();
    const std::string what = "the arguments of '" + session::function_name(h.function_id) +
                             "' could not be received on " + _p.identity.self().name + ": " +
                             e.what();
    refuse_arguments(message.source, h, what);
    if (count_received) _p.messages.received();
    return false;
  }
}

void receiver::refuse_arguments(int source, const wire::header& h,
                                const std::string& what) noexcept {
  if (h.flags & wire::request_one_way) {
    _p.diag.one_way_failed("a one-way call from " + _p.identity.name_of(source) +
                           " failed: " + what);
  } else {
    _p.send.send_error_reply(source, h.call_id, h.function_id, wire::error_code::serialization,
                             "mpirpc::serialization_error", what, _p.identity.self().name);
  }
}

reply_token receiver::token_for(const incoming& message, const wire::header& h) {
  reply_token token;
  token.source = message.source;
  token.call_id = h.call_id;
  token.function_id = h.function_id;
  token.owner = &_p.reply;
  token.one_way = (h.flags & wire::request_one_way) != 0;
  return token;
}

void receiver::refuse_unknown_flagged(const incoming& message, const wire::header& h) {
  segment_stream segments(_p.net, message, h, &_p.diag);
  reader in(message.bytes.data() + sizeof(wire::header), static_cast<std::size_t>(h.payload_size),
            &segments);
  reply_token token = token_for(message, h);
  try {
    _flagged->refuse_unknown(h.flags, h.function_id, in, token);
  } catch (const argument_error& e) {
    segments.drain();
    refuse_arguments(message.source, h,
                     "the request for " + session::function_name(h.function_id) +
                         " could not be read on " + _p.identity.self().name + ": " + e.what());
    return;
  } catch (...) {
    segments.drain();
    _p.reply.send_error(token, std::current_exception());
    return;
  }
  segments.drain();
}

void receiver::run_request(const incoming& message, const wire::header& h,
                           const function_entry& fn) {
  segment_stream segments(_p.net, message, h, &_p.diag);
  reader in(message.bytes.data() + sizeof(wire::header), static_cast<std::size_t>(h.payload_size),
            &segments);
  reply_token token = token_for(message, h);
  if (token.one_way && !one_way_window::is_window_message(h.function_id)) {
    _p.counters.one_way_run.fetch_add(1, std::memory_order_relaxed);
  }
  try {
    if ((h.flags & wire::request_rref_flags) || fn.service) {
      if (!_flagged) {
        throw error("mpirpc: '" + fn.name + "' needs the rref service, which " +
                    _p.identity.self().name + " does not run");
      }
      _flagged->serve(h.flags, fn, in, token);
    } else {
      fn.invoke(fn.fn, in, token);
    }
  } catch (const argument_error& e) {
    segments.drain();
    const std::string what = "the arguments of '" + fn.name + "' could not be deserialized on " +
                             _p.identity.self().name + ": " + e.what();
    refuse_arguments(message.source, h, what);
    _p.counters.requests_served.fetch_add(1, std::memory_order_relaxed);
    return;
  } catch (...) {
    segments.drain();
    _p.reply.send_error(token, std::current_exception());
    _p.counters.requests_served.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  segments.drain();
  if (!one_way_window::is_window_message(h.function_id)) {
    _p.counters.requests_served.fetch_add(1, std::memory_order_relaxed);
  }
}

void receiver::run_queued_request(incoming& message) {
  wire::header h;
  std::memcpy(&h, message.bytes.data(), sizeof h);
  if (const function_entry* fn = registry::instance().by_id(h.function_id)) {
    run_request(message, h, *fn);
  }
}

void receiver::handle_reply(incoming& message, const wire::header& h) {
  segment_stream segments(_p.net, message, h, &_p.diag);
  std::optional<pending_call> call = _p.pending.take(h.call_id);
  if (!call) {
    segments.drain();
    const late_reply_hook hook = g_late_reply_hook.load(std::memory_order_acquire);
    if (hook && hook(message)) return; // a reply to a test's raw message
    _p.counters.late_replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  _p.counters.replies_received.fetch_add(1, std::memory_order_relaxed);
  const char* payload = message.bytes.data() + sizeof(wire::header);
  const auto size = static_cast<std::size_t>(h.payload_size);
  progress_callback_scope scope;
  if (h.kind == static_cast<std::uint8_t>(wire::kind::reply_value)) {
    reader in(payload, size, &segments);
    try {
      call->sink->on_reply(in);
    } catch (...) {
      call->sink->on_error(std::make_exception_ptr(serialization_error(
          "mpirpc: the result of '" + session::function_name(call->function_id) + "' from " +
          _p.identity.name_of(call->dest) + " could not be decoded on " + _p.identity.self().name +
          ": " + describe_exception(std::current_exception()).message)));
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

void receiver::refuse_queued() noexcept {
  // Requests that never got a handler slot are answered, so that their callers do not wait.
  const std::deque<incoming> unserved = _p.serve.take_all();
  for (const incoming& m : unserved) {
    wire::header h;
    std::memcpy(&h, m.bytes.data(), sizeof h);
    segment_stream(_p.net, m, h).drain();
    _p.send.send_error_reply(m.source, h.call_id, h.function_id, wire::error_code::shutting_down,
                             "mpirpc::shutdown_error",
                             _p.identity.self().name + " shut down before serving the call",
                             _p.identity.self().name);
  }
}

} // namespace mpirpc::detail
