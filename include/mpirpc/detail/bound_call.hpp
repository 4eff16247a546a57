// SPDX-License-Identifier: MIT
// Internal: calls whose arguments are already decoded, to be run later, perhaps on an object
// that an rref names. The owner of a remote object decodes a proxy call's arguments when the
// request arrives (its out-of-line buffers can only be received then) and runs the call once the
// object exists; remote() runs a function and keeps its result instead of replying with it.
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <mpirpc/detail/callable_traits.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/detail/spare_buffers.hpp>
#include <mpirpc/errors.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>

namespace mpirpc::detail {

/// Identifies the request a reply answers. Copyable; a continuation may keep it.
struct reply_token {
  int source = -1;
  std::uint64_t call_id = 0;
  std::uint64_t function_id = 0;
  void* owner = nullptr; ///< what sends the reply (the replies part of the runtime it arrived at)
  bool held = false;     ///< true once hold_reply() made the reply outlive the handler
  bool one_way = false;  ///< an rpc_ff call: no reply is sent; a failure is logged and counted
};

/// Where the owner keeps a remote object; a bound call settles it once, with the value or with
/// the error the call raised. Implemented in lib/ (the owner's table of objects).
class rref_slot {
public:
  virtual ~rref_slot() = default;
  /// `save` serializes the value for to_here(); null when its type is not serializable.
  virtual void set_value(std::shared_ptr<void> value, const std::type_info& type,
                         save_fn save) noexcept = 0;
  virtual void set_error(std::exception_ptr error) noexcept = 0;
};

/// A call with decoded arguments. `self` is the object a member function runs on (ignored by
/// free and static member functions); `keep` is held until the call is over, including the
/// asynchronous part of a function that returns a future (it keeps `self` alive).
class bound_call {
public:
  virtual ~bound_call() = default;
  /// Runs the call and replies to `token`, now or from the continuation of a returned future.
  /// Exceptions escape; the caller replies with them.
  virtual void reply(void* self, std::shared_ptr<void> keep, reply_token& token) = 0;
  /// Runs the call and settles `slot` with its result (now or when a returned future
  /// completes) or with the exception it raised.
  virtual void store(void* self, std::shared_ptr<void> keep,
                     std::shared_ptr<rref_slot> slot) noexcept = 0;
};

// ---- replies, shared with the plain handler path (invoke.hpp); sent through the library
// (send_reply_value, send_reply_error, hold_reply: detail/library.hpp)

template <class T> void save_erased(writer& w, const void* value) {
  codec<T>::save(w, *static_cast<const T*>(value));
}
template <class T> constexpr save_fn save_function_for() {
  if constexpr (is_serializable_v<T>) {
    return &save_erased<T>;
  } else {
    return nullptr;
  }
}

/// Sends `value` as the reply, or an error when its type cannot be serialized (only remote()
/// may call a function whose result is not serializable; rpc_async rejects it at compile time).
/// False only if MPI may still read `value`'s buffers (a send that failed part way).
template <class T> bool reply_with_value(reply_token& token, const T& value) noexcept {
  if constexpr (is_serializable_v<T>) {
    return send_reply_value(token, &save_erased<T>, &value);
  } else {
    send_reply_error(token, unserializable_result_error(typeid(T).name()));
    return true;
  }
}

template <class T>
void reply_with_future_outcome(reply_token& token, const future<T>& done) noexcept {
  if (auto e = state_of(done)->error()) {
    send_reply_error(token, e);
  } else if constexpr (std::is_void_v<T>) {
    send_reply_value(token, nullptr, nullptr);
  } else {
    reply_with_value<T>(token, state_of(done)->stored_value());
  }
}

/// Settles a slot from a future's outcome. If the future is destroyed without ever completing,
/// its callback (which owns this) is destroyed unrun and the slot gets an error instead of
/// staying unsettled.
template <class T> struct slot_from_future {
  slot_from_future(std::shared_ptr<rref_slot> s, std::shared_ptr<void> k)
      : slot(std::move(s)), keep(std::move(k)) {}
  slot_from_future(const slot_from_future&) = delete;
  slot_from_future& operator=(const slot_from_future&) = delete;
  ~slot_from_future() {
    if (slot) {
      slot->set_error(std::make_exception_ptr(future_error(
          "mpirpc: the future returned by the function that remote() ran was destroyed before "
          "it completed; keep it (or whatever completes it) alive until it is completed")));
    }
  }
  void settle(const future<T>& done) noexcept {
    std::shared_ptr<rref_slot> s = std::move(slot);
    if (auto e = state_of(done)->error()) {
      s->set_error(e);
      return;
    }
    try {
      s->set_value(std::make_shared<T>(state_of(done)->stored_value()), typeid(T),
                   save_function_for<T>());
    } catch (...) {
      s->set_error(std::current_exception());
    }
  }
  std::shared_ptr<rref_slot> slot;
  std::shared_ptr<void> keep;
};

/// The reply an async-execution handler owes. If the future it returned is destroyed without
/// ever completing, its callback (which owns this) is destroyed unrun: the destructor then
/// answers the caller with an error instead of leaving it waiting.
struct async_reply {
  explicit async_reply(const reply_token& t) : token(t) {}
  async_reply(const async_reply&) = delete;
  async_reply& operator=(const async_reply&) = delete;
  ~async_reply() {
    if (!sent) {
      send_reply_error(token, std::make_exception_ptr(future_error(
                                  "mpirpc: the future returned by this async-execution function "
                                  "was destroyed before it completed; keep it (or whatever "
                                  "completes it) alive until it is completed")));
    }
  }
  reply_token token;
  bool sent = false;
};

/// Runs `call` (which returns R) and replies with its outcome; a returned future is replied to
/// from its continuation (async execution), which holds `keep` until then. Exceptions of
/// `call` escape.
template <class R, class Call>
void run_and_reply(Call&& call, reply_token& token, std::shared_ptr<void> keep = nullptr) {
  if constexpr (std::is_void_v<R>) {
    call();
    send_reply_value(token, nullptr, nullptr);
  } else if constexpr (is_future_v<R>) {
    R result = call();
    hold_reply(token);
    auto reply = std::make_shared<async_reply>(token);
    result.add_done_callback([reply, keep = std::move(keep)](const R& done) {
      reply->sent = true;
      reply_with_future_outcome(reply->token, done);
    });
  } else {
    R result = call();
    // Sent: its storage may receive the next argument of its type.
    if (reply_with_value<R>(token, result)) offer_spare(result);
  }
}

/// Decodes a call's arguments into `args`, checking that nothing is left over; any failure
/// becomes the error "the arguments could not be deserialized".
template <class Tuple> void decode_arguments(reader& in, Tuple& args) {
  try {
    std::apply([&](auto&... a) { (codec<std::decay_t<decltype(a)>>::load(in, a), ...); }, args);
    if (in.remaining() != 0) {
      in.fail(std::to_string(in.remaining()) + " unexpected bytes after the arguments");
    }
  } catch (...) {
    rethrow_argument_error();
  }
}

/// The decoded arguments of a function (Self = void) or member function of Self, ready to run.
template <class Target, class R, class Self, class... P>
class bound_call_impl final : public bound_call {
public:
  explicit bound_call_impl(Target target) : _target(target) {}

  void decode(reader& in) { decode_arguments(in, _args); }

  void reply(void* self, std::shared_ptr<void> keep, reply_token& token) override {
    run_and_reply<R>([&]() -> R { return invoke(self); }, token, std::move(keep));
  }

  void store(void* self, std::shared_ptr<void> keep,
             std::shared_ptr<rref_slot> slot) noexcept override {
    try {
      if constexpr (std::is_void_v<R> || std::is_same_v<R, future<void>>) {
        (void)self;
        slot->set_error(std::make_exception_ptr(error(
            "mpirpc: remote() needs a function that returns a value; this one returns void")));
      } else if constexpr (is_future_v<R>) {
        using T = unwrap_future_t<R>;
        R result = invoke(self);
        auto settle = std::make_shared<slot_from_future<T>>(slot, std::move(keep));
        result.add_done_callback([settle](const R& done) { settle->settle(done); });
      } else {
        slot->set_value(std::make_shared<R>(invoke(self)), typeid(R), save_function_for<R>());
      }
    } catch (...) {
      slot->set_error(std::current_exception());
    }
  }

private:
  R invoke(void* self) {
    if constexpr (std::is_void_v<Self>) {
      (void)self;
      return std::apply(_target, std::move(_args));
    } else {
      return std::apply(
          [&](auto&... a) -> R { return (static_cast<Self*>(self)->*_target)(std::move(a)...); },
          _args);
    }
  }

  Target _target;
  std::tuple<std::decay_t<P>...> _args;
};

template <class Target, class R, class Self, class... P>
std::unique_ptr<bound_call> bind_call(raw_function fn, const void* member, reader& in) {
  Target target;
  if constexpr (std::is_void_v<Self>) {
    (void)member;
    target = reinterpret_cast<Target>(fn);
  } else {
    (void)fn;
    std::memcpy(&target, member, sizeof target);
  }
  auto call = std::make_unique<bound_call_impl<Target, R, Self, P...>>(target);
  call->decode(in);
  return call;
}

} // namespace mpirpc::detail
