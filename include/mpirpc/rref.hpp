// SPDX-License-Identifier: MIT
// Remote references: remote(), rref<T> and its proxies, as torch.distributed.rpc's RRef, with
// a deterministic lifetime.
//
//     MPIRPC_REGISTER_CONSTRUCTOR(counter, int);        // counter(int), callable by remote()
//     MPIRPC_REGISTER_METHOD(counter::add);             // callable through an rref
//
//     mpirpc::rref<counter> c = mpirpc::remote("worker1", mpirpc::construct<counter, int>, 5);
//     c.rpc_sync(&counter::add, 2);                     // runs on worker1, on that object
//     mpirpc::future<int> f = c.rpc_async(&counter::get);
//     mpirpc::rref<int> v = c.remote(&counter::get);    // the result stays on worker1 too
//     counter copy = c.to_here();                       // a copy (counter is serializable)
//     mpirpc::rpc_sync("worker2", use_counter, c);      // worker2 may use, keep or pass it on
//
// remote(to, fn, args...) runs fn(args...) on `to` and returns at once an rref<T> to the result
// (T is fn's result type, or U for a function returning future<U>, which runs asynchronously
// as in async execution). The value stays on `to`, its owner; T need not be serializable
// unless to_here() is used. A trailing mpirpc::timeout bounds the creation.
//
// rref<T> is a shared handle: copies on one worker share one reference. It can be passed as
// an argument of, or returned from, any remote call (also inside containers); the receiving
// worker gets a valid reference (a fork) that it may use, keep, pass on or drop.
//  - to_here(timeout): a copy of the value, fetched from the owner (on the owner, copied
//    locally). T must be serializable (checked at compile time).
//  - local_value(): the value itself; only on the owner (elsewhere not_owner_error, naming the
//    owner and the caller). It stays valid while any rref to it lives on this worker.
//  - owner(), owner_name(), is_owner(), confirmed_by_owner() (true once this worker knows the
//    owner has the object: the owner itself, the creator once creation was answered, a fork
//    whose sender knew it, any worker after a successful call through it).
//  - rpc_sync / rpc_async / remote(target, args...): calls on the owner, as torch's
//    rref.rpc_sync().method(...). `target` is a registered member function of T
//    (&T::method, MPIRPC_REGISTER_METHOD), run on the object, or a registered free or static
//    member function, run on the owner once the object exists. A target that returns a future
//    runs asynchronously on the owner. Arguments are checked at compile time as for rpc_sync.
// Errors: if the function that created the object threw (or its creation timed out), every
// later use throws that error: proxy calls, and to_here() away from the owner, throw
// remote_error with the original type name and the owner's name (timeout_error on the creator
// if the creation timed out); on the owner, local_value() and to_here() rethrow the original
// exception (the creator that is also the owner gets the creation's remote_error once it was
// answered). Calls on an empty rref throw
// error.
//
// Threads: every member may be called from any thread, including handlers. Proxy targets run
// on the owner's server threads, concurrently with each other: an object used from several
// calls at once must synchronize itself (as with any handler). Dropping the last rref on a
// worker sends one small message (no waiting); it may happen on any thread.
//
// ---- Lifetime: the protocol (docs/rref.md has the message sequences)
//
// Weighted reference counting. Each object has an id (creator's rank and a sequence number)
// and, at its owner, a signed weight total. Each worker holds at most one reference record per
// object (shared by its rref<T> copies), carrying a positive weight. Invariant, at any moment:
//     owner's total = weight held by records + weight carried by messages in flight
//                     (forks, calls, releases not yet processed)
//                     - weight of the creation request if it has not been processed yet.
// The owner destroys the object when the total is zero, the creation has been processed and
// the creating call has finished.
//  1. Creation: the creator makes a record with weight W0 = 2^48 and sends the creation request
//     carrying W0; the owner adds W0 to the total when it processes it.
//  2. Fork (an rref serialized into a message): a non-owner splits its record's weight and the
//     message carries the part given away; nothing is sent to the owner. The owner mints new
//     weight instead (adds it to the total, then sends it). A receiving worker adds the
//     weight to its record for that id, or makes one.
//  3. Calls (to_here, proxies) carry one unit of weight, taken from the caller's record (or
//     minted by the owner); the owner gives it back when the call is over, including the
//     asynchronous part of a target that returns a future. An object thus outlives every call
//     made on it, even one whose caller timed out and dropped its reference.
//  4. Replenish: a record running low asks the owner for more (the owner adds it to the total,
//     then replies; only then is it used). A request that finds no weight at all is built
//     again once the reply came; so is a reply (except one sent from a progress-path
//     continuation, which cannot wait and fails with serialization_error instead).
//  5. Release: when the last rref<T> copy on a worker is dropped, its record sends its whole
//     weight back to the owner (on the owner itself, it subtracts it directly).
// Guarantees. G1 (no premature deletion): weight leaves a record only into a message, is never
// counted twice, and is added to the owner's total before it can be given away, so once the
// creation is processed the total reaches zero only when no record and no message holds
// weight. Messages that overtake the creation request (a fork's holder calls the owner
// before the creation arrived) find a placeholder: a release makes the total negative, a call
// waits for the object; neither can destroy what is not yet created.
// G2 (no leak): every record releases its weight exactly once, when its last handle dies, on
// whichever worker and in whatever order; forks and calls in flight carry weight, so the last
// release, wherever it happens, brings the total to zero. Nothing depends on a garbage
// collector. Weight taken for a message that is then not sent (an unknown destination, an
// error while serializing, a failed send) is given back to the record.
// Shutdown. Graceful shutdown waits until every release in flight has been processed. Records
// and owned objects still alive then are reported on stderr (how many, which owners) and
// the owner destroys its objects as its runtime stops; an rref used after shutdown throws
// shutdown_error, and dropping it sends nothing.
// Limits: weight is lost, and the object then lives until its owner shuts down (where it is
// reported), when a message carrying it is not processed: a reply dropped because its call
// had timed out, a request refused by a stopping worker or one whose function the callee lacks
// or whose arguments fail to decode before the rref, a replenish answered after its timeout.
// rref<T> inside a Boost-serialized type is not supported (use the standard containers).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <mpirpc/detail/arguments.hpp>
#include <mpirpc/detail/bound_call.hpp>
#include <mpirpc/detail/call_state.hpp>
#include <mpirpc/detail/callable_traits.hpp>
#include <mpirpc/detail/invoke.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/detail/request.hpp>
#include <mpirpc/errors.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/rpc.hpp>
#include <mpirpc/serialization.hpp>
#include <mpirpc/worker.hpp>

namespace mpirpc {

template <class T> class rref;

namespace detail {

// The reference records (rref_record) and what the templates ask of them (rref_new_record,
// rref_write_self, rref_save, ...) are in lib/: detail/library.hpp.

struct rref_access {
  template <class T> static const std::shared_ptr<rref_record>& record(const rref<T>& r) {
    return r._record;
  }
  template <class T> static rref<T> make(std::shared_ptr<rref_record> record) {
    rref<T> r;
    r._record = std::move(record);
    return r;
  }
};

/// The traits of an rref call's target: a member function or a function.
template <class M>
struct target_traits
    : std::conditional_t<member_traits<M>::is_member, member_traits<M>, function_traits<M>> {};

/// Sends a request that creates an object on `to` from the call `target(args...)`, run on
/// `self`'s object when `self` is set; returns the reference to it.
template <class T, class Params, class ArgTuple, std::size_t... I>
rref<T> create_remote(const destination& to, const call_target& target,
                      const std::shared_ptr<rref_record>& self, ArgTuple&& args, double timeout_s,
                      std::index_sequence<I...> seq) {
  std::shared_ptr<rref_record> record = rref_new_record(to);
  const std::uint16_t flags = creates_rref | (self ? on_rref : 0);
  future<void> created;
  try {
    created = issue_call<Params, void>(
        to, target, flags,
        [&](writer& w) {
          rref_write_new(w, *record);
          if (self) rref_write_self(w, self);
        },
        std::forward<ArgTuple>(args), timeout_s, seq);
  } catch (...) {
    rref_creation_not_sent(*record);
    throw;
  }
  rref_track_creation(record, std::move(created), self);
  return rref_access::make<T>(std::move(record));
}

} // namespace detail

/// A reference to a value that lives on its owner worker (see the header comment).
/// Thread-safe; copying shares the reference.
template <class T> class rref {
  static_assert(!std::is_void_v<T> && !std::is_reference_v<T>,
                "mpirpc::rref<T>: T must be an object type");

public:
  using value_type = T;

  /// An empty reference; every use but assignment and destruction throws error.
  rref() noexcept = default;

  /// True unless empty.
  explicit operator bool() const noexcept { return _record != nullptr; }

  /// A copy of the value, fetched from the owner; waits for it, at most the runtime's default
  /// timeout (options::rpc_timeout).
  T to_here() const { return fetch(-1.0); }
  /// As to_here(), waiting at most `timeout` (zero: no limit); throws timeout_error.
  T to_here(std::chrono::duration<double> timeout) const { return fetch(timeout.count()); }

  /// The value itself; only on the owner (else not_owner_error). Waits until it exists.
  T& local_value() const {
    const auto& r = *record();
    if (!detail::rref_is_owner(r)) detail::rref_throw_not_owner(r);
    return *static_cast<T*>(detail::rref_local_object(r, typeid(T), true).get());
  }

  worker_info owner() const { return detail::rref_owner_info(*record()); }
  std::string owner_name() const { return owner().name; }
  bool is_owner() const { return detail::rref_is_owner(*record()); }
  bool confirmed_by_owner() const { return detail::rref_confirmed(*record()); }

  /// Calls `target(args...)` on the owner (a member function: on the object) and waits.
  template <class M, class... Args> auto rpc_sync(M target, Args&&... args) const {
    auto f = rpc_async(target, std::forward<Args>(args)...);
    return detail::take_result(f);
  }

  /// Calls `target(args...)` on the owner (a member function: on the object); returns a
  /// future of its result at once.
  template <class M, class... Args> auto rpc_async(M target, Args&&... args) const {
    using traits = detail::target_traits<M>;
    using R = typename traits::result_type;
    using U = detail::unwrap_future_t<R>;
    check_target<M>();
    detail::check_function_signature<R>();
    const auto& self = record();
    detail::rref_check_usable(*self);
    future<U> f = detail::split_timeout(
        [&](auto&& all, double t, auto seq) {
          using Args_ = detail::arguments_of<std::decay_t<decltype(all)>, decltype(seq)>;
          if constexpr (!detail::arguments_fit<typename traits::parameters, Args_>(seq)) {
            return future<U>();
          } else {
            return detail::issue_call<typename traits::parameters, U>(
                detail::rref_owner_rank(*self), target_of(target), detail::on_rref,
                [&](detail::writer& w) { detail::rref_write_self(w, self); },
                std::forward<decltype(all)>(all), t, seq);
          }
        },
        std::forward<Args>(args)...);
    // A successful reply confirms the reference (the call itself carries its own weight).
    f.add_done_callback([self](const future<U>& done) {
      if (!detail::state_of(done)->error()) detail::rref_mark_confirmed(*self);
    });
    return f;
  }

  /// Calls `target(args...)` on the owner (a member function: on the object) and keeps the
  /// result there: returns a reference to it at once.
  template <class M, class... Args> auto remote(M target, Args&&... args) const {
    using traits = detail::target_traits<M>;
    using R = typename traits::result_type;
    using U = detail::unwrap_future_t<R>;
    check_target<M>();
    static_assert(!std::is_void_v<U>,
                  "mpirpc: remote() keeps the result on the owner; this function returns void");
    const auto& self = record();
    detail::rref_check_usable(*self);
    return detail::split_timeout(
        [&](auto&& all, double t, auto seq) {
          using Args_ = detail::arguments_of<std::decay_t<decltype(all)>, decltype(seq)>;
          if constexpr (!detail::arguments_fit<typename traits::parameters, Args_>(seq)) {
            return rref<U>();
          } else {
            return detail::create_remote<U, typename traits::parameters>(
                detail::rref_owner_rank(*self), target_of(target), self,
                std::forward<decltype(all)>(all), t, seq);
          }
        },
        std::forward<Args>(args)...);
  }

private:
  friend struct detail::rref_access;

  const std::shared_ptr<detail::rref_record>& record() const {
    if (!_record) throw error("mpirpc: use of an empty rref (default-constructed or moved from)");
    return _record;
  }

  T fetch(double timeout_s) const {
    static_assert(is_serializable_v<T> && std::is_default_constructible_v<T>,
                  "mpirpc: rref<T>::to_here() copies the value to the caller, so T must be "
                  "serializable and default-constructible (see mpirpc/serialization.hpp); call "
                  "members through rref.rpc_sync() or use local_value() on the owner instead");
    const auto& self = record();
    detail::rref_check_usable(*self);
    if (detail::rref_is_owner(*self)) {
      if (auto local = detail::rref_local_object(*self, typeid(T), false)) {
        return *static_cast<const T*>(local.get());
      }
    }
    future<T> f = detail::issue_call<std::tuple<>, T>(
        detail::rref_owner_rank(*self),
        detail::call_target{detail::rref_fetch_function(), nullptr, 0}, 0,
        [&](detail::writer& w) { detail::rref_write_self(w, self); }, std::tuple<>(), timeout_s,
        std::index_sequence<>{});
    T value = detail::take_result(f);
    detail::rref_mark_confirmed(*self);
    return value;
  }

  template <class M> static constexpr void check_target() {
    if constexpr (detail::member_traits<M>::is_member) {
      static_assert(std::is_same_v<typename detail::member_traits<M>::class_type, T>,
                    "mpirpc: a member function called through rref<T> must be a member of T "
                    "itself (register and call T's own member, e.g. one that forwards to the "
                    "base class)");
    } else {
      static_assert(detail::function_traits<M>::is_function,
                    "mpirpc: the target of an rref call must be a registered member function "
                    "of T (&T::method) or a registered free or static member function");
    }
  }

  template <class M> static detail::call_target target_of(const M& target) {
    if constexpr (detail::member_traits<M>::is_member) {
      return detail::call_target{nullptr, &target, sizeof target};
    } else {
      return detail::call_target{reinterpret_cast<detail::raw_function>(target), nullptr, 0};
    }
  }

  std::shared_ptr<detail::rref_record> _record;
};

/// Runs fn(args...) on `to` and returns at once a reference to its result, which stays on
/// `to` (see the header comment). A trailing mpirpc::timeout bounds the creation. Errors of the
/// creation surface at the reference's next use; an unknown worker or function, or a stopped
/// runtime, throw here.
template <class Fn, class... Args> auto remote(const destination& to, Fn fn, Args&&... args) {
  static_assert(detail::function_traits<Fn>::is_function,
                "mpirpc::remote: the function argument must be a registered free function, "
                "static member function or mpirpc::construct<T, P...>");
  using traits = detail::function_traits<Fn>;
  using R = typename traits::result_type;
  using T = detail::unwrap_future_t<R>;
  static_assert(!std::is_void_v<T>,
                "mpirpc::remote: the function must return the value to keep on the owner; this "
                "one returns void");
  return detail::split_timeout(
      [&](auto&& all, double t, auto seq) {
        using Args_ = detail::arguments_of<std::decay_t<decltype(all)>, decltype(seq)>;
        if constexpr (!detail::arguments_fit<typename traits::parameters, Args_>(seq)) {
          return rref<T>();
        } else {
          return detail::create_remote<T, typename traits::parameters>(
              to, detail::call_target{reinterpret_cast<detail::raw_function>(fn), nullptr, 0},
              nullptr, std::forward<decltype(all)>(all), t, seq);
        }
      },
      std::forward<Args>(args)...);
}

namespace detail {

/// rref<T> travels as a reference (a fork), whatever T is.
template <class T> struct composite_serializable<rref<T>> : std::true_type {};

template <class T> struct codec<rref<T>, void> {
  static constexpr std::size_t min_wire_size = 24;
  static void save(writer& w, const rref<T>& r) { rref_save(w, rref_access::record(r)); }
  static void load(reader& in, rref<T>& r) { r = rref_access::make<T>(rref_load(in)); }
};

} // namespace detail
} // namespace mpirpc
