// SPDX-License-Identifier: MIT
// Internal: building one request and handing it to the library: the request's buffers and
// target, its arguments converted to the parameter types and written, the rebuild when an rref
// in it had no weight left to give, and the offer of rvalue arguments for reuse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <mpirpc/detail/call_state.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/errors.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/serialization.hpp>
#include <mpirpc/worker.hpp>

namespace mpirpc::detail {

/// Thread-local scratch for building one request (begin_request, detail/library.hpp).
struct request_buffers {
  std::vector<char> payload;
  std::vector<segment> segments;
};

/// What a request calls: a registered function, or a registered member function (`member`
/// points at its member-function pointer of `member_size` bytes).
struct call_target {
  raw_function fn = nullptr;
  const void* member = nullptr;
  std::size_t member_size = 0;
};

/// Request flags (see docs/wire.md): before the arguments, the payload starts with the id and
/// weight of the object the call creates (creates_rref), then with the id of the object the
/// call runs on and the weight the call carries (on_rref).
inline constexpr std::uint16_t on_rref = 1;
inline constexpr std::uint16_t creates_rref = 2;

/// send_call for a free function, without flags.
inline void send_request(const destination& to, raw_function fn, request_buffers& request,
                         std::shared_ptr<reply_sink> sink, double timeout_s) {
  send_call(to, call_target{fn, nullptr, 0}, 0, request, std::move(sink), timeout_s);
}

/// Thrown while a message is built when an rref in it (an argument, a result, or the rref a
/// call goes through) has no reference weight left to give (rref.hpp): the message is built
/// again once `replenished` completes.
struct rref_weight_exhausted : serialization_error {
  explicit rref_weight_exhausted(future<void> f)
      : serialization_error("mpirpc: an rref has no reference weight left to give away; its "
                            "owner has been asked for more"),
        replenished(std::move(f)) {}
  future<void> replenished;
};

template <class P, class Arg> void save_argument(writer& w, Arg&& arg) {
  using V = std::decay_t<P>;
  if constexpr (std::is_same_v<std::decay_t<Arg>, V>) {
    codec<V>::save(w, arg);
  } else {
    // Converted from a const reference where possible: a request may be built twice (see
    // rref_weight_exhausted), so the argument must not be moved from.
    const V converted = [&]() -> V {
      if constexpr (std::is_convertible_v<const std::decay_t<Arg>&, V>) {
        return V(static_cast<const std::decay_t<Arg>&>(arg));
      } else {
        return V(std::forward<Arg>(arg));
      }
    }();
    // `converted` dies before the message is sent: nothing of it may travel out of line.
    const writer::inline_only guard(w);
    codec<V>::save(w, converted);
  }
}

/// Once a request has left (its out-of-line buffers included), an argument passed as an rvalue
/// of exactly the parameter's type, when that is a large vector of trivially copyable elements,
/// may be kept for reuse: the reply, or the next large vector of its type that this process
/// receives, goes into its storage without being zero-filled first (detail/spare_buffers.hpp).
/// The argument is then left empty. Lvalues and converted arguments are never touched.
template <class P, class Arg, class Stored> void offer_argument(Stored& arg) noexcept {
  using V = std::decay_t<P>;
  if constexpr (std::is_rvalue_reference_v<Arg> && !std::is_const_v<std::remove_reference_t<Arg>> &&
                std::is_same_v<std::decay_t<Arg>, V>) {
    offer_spare(arg);
  } else {
    (void)arg;
  }
}

/// What a request's `send` step returns to build_request: its result, and whether the
/// request left (false: it failed before it was sent, its error already in the result).
template <class R> struct request_outcome {
  R result;
  bool left = true;
};

/// Builds one request and passes it to `send(request)`, which returns a request_outcome whose
/// result this returns: `prefix(w)` writes what comes before the arguments (see the flags).
/// Builds it again when an rref in it had no weight left to give. Once the request has left,
/// offers its rvalue arguments for reuse (offer_argument). Precondition:
/// arguments_fit<Params, ArgTuple>.
template <class Params, class ArgTuple, class Prefix, class Send, std::size_t... I>
auto build_request(Prefix&& prefix, ArgTuple&& args, Send&& send, std::index_sequence<I...>) {
  for (;;) {
    try {
      request_buffers& request = begin_request();
      writer w(request.payload, &request.segments);
      prefix(w);
      (save_argument<std::tuple_element_t<I, Params>>(
           w, std::forward<std::tuple_element_t<I, std::decay_t<ArgTuple>>>(std::get<I>(args))),
       ...);
      auto outcome = send(request);
      if (outcome.left) {
        (offer_argument<std::tuple_element_t<I, Params>,
                        std::tuple_element_t<I, std::decay_t<ArgTuple>>>(std::get<I>(args)),
         ...);
      }
      return std::move(outcome.result);
    } catch (rref_weight_exhausted& e) {
      abandon_request();
      e.replenished.wait(); // then build the request again
    } catch (...) {
      abandon_request();
      throw;
    }
  }
}

/// Builds and sends one request whose reply holds a Result.
template <class Params, class Result, class ArgTuple, class Prefix, std::size_t... I>
future<Result> issue_call(const destination& to, const call_target& target, std::uint16_t flags,
                          Prefix&& prefix, ArgTuple&& args, double timeout_s,
                          std::index_sequence<I...> seq) {
  return build_request<Params>(
      std::forward<Prefix>(prefix), std::forward<ArgTuple>(args),
      [&](request_buffers& request) {
        auto state = std::make_shared<call_state<Result>>();
        const bool left = send_call(to, target, flags, request, state, timeout_s);
        return request_outcome<future<Result>>{
            make_future_from_state<Result>(std::shared_ptr<future_state<Result>>(std::move(state))),
            left};
      },
      seq);
}

} // namespace mpirpc::detail
