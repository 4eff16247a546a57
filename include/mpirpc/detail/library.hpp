// SPDX-License-Identifier: MIT
// Internal: the seam between the public templates and the compiled library, lib/.
//
// Every internal function and variable that code in include/mpirpc/ uses and lib/ defines is
// declared here and nowhere else (as UPC++'s src/backend_fwd.hpp): a header that calls into the
// library includes this one. (The public functions that lib/ defines, init_rpc or mpi_error's
// constructor, are declared where users read them: runtime.hpp, errors.hpp.) The types they take
// are only forward-declared; each is defined in the detail header named beside it. Reading this
// file top to bottom is reading everything the templates ask of the runtime. "Any thread" includes
// handlers and continuations.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <typeinfo>

#include <boost/archive/detail/archive_serializer_map.hpp>

namespace mpirpc {

class destination;               // worker.hpp
struct worker_info;              // worker.hpp
template <class T> class future; // future.hpp

namespace detail {

class writer;            // detail/message_buffer.hpp
class reader;            // detail/message_buffer.hpp
class checked_iarchive;  // detail/checked_iarchive.hpp
class checked_oarchive;  // detail/checked_oarchive.hpp
class future_state_base; // detail/future_state.hpp
struct reply_token;      // detail/bound_call.hpp
class bound_call;        // detail/bound_call.hpp
class reply_sink;        // detail/call_state.hpp
struct request_buffers;  // detail/request.hpp
struct call_target;      // detail/request.hpp
/// This worker's share of the references to one object: all rref<T> copies here share it.
/// Defined in lib/ only (lib/rref/rref_table.hpp).
struct rref_record;

/// A registered function, its type erased (the registry's key on the caller).
using raw_function = void (*)();
/// Serializes the value at the pointer (of a type the function was made for) into a message.
using save_fn = void (*)(writer&, const void*);
/// Decodes a request's arguments, calls the registered function and replies.
using invoker_fn = void (*)(raw_function, reader&, reply_token&);
/// Decodes the arguments of a registered function (`fn`) or member function (`member` points
/// at its member-function pointer) from `in`, into a call to run later.
using binder_fn = std::unique_ptr<bound_call> (*)(raw_function fn, const void* member, reader& in);

// ---- requests: detail/request.hpp, detail/call.hpp, rref.hpp (lib/runtime.cpp)

/// Clears and returns the calling thread's scratch for building one request. Any thread; the
/// buffers are the caller's own until it sends or abandons the request.
request_buffers& begin_request();
/// The request being built on this thread will not be sent: gives back the weight that the
/// rrefs written into it took. The thread that built it.
void abandon_request() noexcept;
/// Resolves the destination and target, then sends the request; its reply goes to `sink`.
/// Throws at the call site for an unknown worker or function or a stopped runtime.
/// `timeout_s` < 0 means the runtime's default. False if the call timed out waiting for room
/// (flow control) and was never sent: `sink` has that error. Any thread, with the request
/// built on it.
bool send_call(const destination& to, const call_target& target, std::uint16_t flags,
               request_buffers& request, std::shared_ptr<reply_sink> sink, double timeout_s);
/// Resolves the destination and target, then sends a one-way request (rpc_ff), or adds it to
/// the destination's batch. Throws as send_call. Any thread, with the request built on it.
void send_one_way(const destination& to, const call_target& target, request_buffers& request);

// ---- replies: detail/bound_call.hpp (lib/runtime.cpp, lib/errors.cpp)

/// Sends the reply to `token`: `save(value)`, or no value when `save` is null. False only if
/// sending it failed part way: MPI may still read `value`'s buffers. Once per token: the
/// handler's thread, or after hold_reply() any thread.
bool send_reply_value(reply_token& token, save_fn save, const void* value) noexcept;
/// Sends `error` as the reply to `token` (logged and counted for a one-way call). Once per
/// token: the handler's thread, or after hold_reply() any thread.
void send_reply_error(reply_token& token, std::exception_ptr error) noexcept;
/// The reply will be sent after the handler returns (from a continuation); shutdown waits for
/// it. The handler's thread, before it returns.
void hold_reply(reply_token& token) noexcept;
/// Rethrows the exception in flight as the error "the arguments could not be deserialized".
/// Any thread, inside a catch block.
[[noreturn]] void rethrow_argument_error();
/// The error for a result that cannot travel: its type is not serializable. Any thread.
std::exception_ptr unserializable_result_error(const char* type_name);

// ---- futures: detail/future_state.hpp, future.hpp (lib/runtime.cpp, lib/errors.cpp)

/// Blocks until `state` is done, driving progress (polling for replies) while a runtime runs
/// on this process. Any thread off the progress path (future_state_base::wait checks first).
void wait_for_state(future_state_base& state);
/// True while the calling thread runs continuations on mpirpc's progress path, where waiting
/// on an incomplete future would stall progress. Any thread, about itself.
bool in_progress_callback() noexcept;
/// Marks the calling thread as running progress-path continuations for the guard's lifetime.
/// The runtime's threads, around the continuations they run.
class progress_callback_scope {
public:
  progress_callback_scope() noexcept;
  ~progress_callback_scope();
  progress_callback_scope(const progress_callback_scope&) = delete;
  progress_callback_scope& operator=(const progress_callback_scope&) = delete;

private:
  bool _previous;
};
/// Logs to stderr, and otherwise ignores, an exception that a future's done-callback raised.
/// The thread that ran the callback.
void report_callback_exception(std::exception_ptr e) noexcept;

// ---- the function registry: functions.hpp, detail/invoke.hpp (lib/core/registry.cpp)

/// Registers a free or static member function under `name`. Any thread, before init_rpc
/// (static registration does); throws init_error while a runtime runs.
void register_raw_function(std::string_view name, raw_function fn, invoker_fn invoke,
                           binder_fn bind);
/// Registers a member function: `member` points at its member-function pointer (`size`
/// bytes), which identifies it at the caller; `self_type` is its class. As
/// register_raw_function.
void register_raw_method(std::string_view name, const void* member, std::size_t size,
                         invoker_fn invoke, binder_fn bind, const std::type_info& self_type);
/// The name `fn` is registered under, or an empty string. Any thread.
std::string registered_name_of(raw_function fn);
/// The invoker of a member function reached without an object (only a forged or mismatched
/// request can): throws error naming the function. The handler's thread.
[[noreturn]] void method_without_object(raw_function, reader&, reply_token& token);

// ---- remote references: rref.hpp (lib/rref/rref_table.cpp). Any thread, unless said otherwise.

/// A new record for an object that the caller is about to create on `owner`. Throws at the
/// call site for an unknown worker or a stopped runtime.
std::shared_ptr<rref_record> rref_new_record(const destination& owner);
/// Writes the new object's id and the weight its creation carries (the creation request).
void rref_write_new(writer& w, const rref_record& r);
/// Writes the id of the object a call runs on, lending the call one unit of weight (the
/// owner gives it back when the call is over). Throws rref_weight_exhausted.
void rref_write_self(writer& w, const std::shared_ptr<rref_record>& r);
/// Remembers the creating call's outcome; keeps `self` (the object a proxy remote() runs on,
/// may be null) alive until the creation is answered. Once the creation request has left.
void rref_track_creation(const std::shared_ptr<rref_record>& r, future<void> created,
                         std::shared_ptr<rref_record> self);
/// The creation request was never sent: the record has no weight to give back.
void rref_creation_not_sent(rref_record& r) noexcept;
/// The owner's rank.
int rref_owner_rank(const rref_record& r) noexcept;
/// The owner's name and rank.
worker_info rref_owner_info(const rref_record& r);
/// True on the owner.
bool rref_is_owner(const rref_record& r) noexcept;
/// True once this worker knows the owner has the object (rref::confirmed_by_owner).
bool rref_confirmed(const rref_record& r) noexcept;
/// Records that the owner has the object (a call through the reference succeeded).
void rref_mark_confirmed(rref_record& r) noexcept;
/// Throws what is known here to make the reference unusable: a failed or timed-out creation,
/// a stopped runtime.
void rref_check_usable(const rref_record& r);
/// On the owner: the object, of type `type`. With `wait`, waits until it exists (rethrowing
/// its creation error; a thread that may wait, as for future::wait); without, returns null
/// while it does not exist yet.
std::shared_ptr<void> rref_local_object(const rref_record& r, const std::type_info& type,
                                        bool wait);
/// Throws not_owner_error for a local_value() call away from the owner.
[[noreturn]] void rref_throw_not_owner(const rref_record& r);
/// The internal function that answers to_here().
raw_function rref_fetch_function() noexcept;
/// Serializes a reference (a fork) into a message being built; an empty one as id 0.
void rref_save(writer& w, const std::shared_ptr<rref_record>& r);
/// Deserializes a reference; null for an empty one. The thread that decodes the message.
std::shared_ptr<rref_record> rref_load(reader& in);

// ---- spare vectors: detail/spare_buffers.hpp (lib/spare_buffers.cpp). Any thread.

/// The most bytes the spare vectors of all types may hold at once in this process (set from
/// options::spare_buffer_bytes; one per process, not one per shared object that includes this).
extern std::atomic<std::size_t> spare_budget;
/// What they hold now.
extern std::atomic<std::size_t> spare_held;
/// How many decodes have received into a kept vector (for tests and diagnostics).
extern std::atomic<std::uint64_t> spare_takes;
/// Registers a pool's release function, once per pool type (under that pool's mutex).
void register_spare_pool(void (*release)() noexcept);
/// Frees every kept vector of every type (the runtime calls it at shutdown).
void release_spare_buffers() noexcept;

// ---- the Boost path: detail/codec.hpp (lib/serialization.cpp). Any thread.

/// Rethrows the exception in flight as serialization_error naming the type and the direction
/// ("serialize" or "deserialize"). Inside a catch block.
[[noreturn]] void rethrow_as_serialization_error(const char* direction, const char* type_name);

} // namespace detail
} // namespace mpirpc

/// The maps of pointer serializers of the checked archives, which Boost.Serialization's
/// templates use for classes serialized through a pointer to a base (BOOST_CLASS_EXPORT).
/// Boost instantiates one per archive in the library that defines the archive: those of ours
/// in lib/serialization.cpp.
extern template class boost::archive::detail::archive_serializer_map<
    mpirpc::detail::checked_iarchive>;
extern template class boost::archive::detail::archive_serializer_map<
    mpirpc::detail::checked_oarchive>;
