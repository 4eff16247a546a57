// SPDX-License-Identifier: MIT
// The remote-reference tables of one runtime session: the objects this worker owns and the
// reference records it holds. Internal; the protocol is described in include/mpirpc/rref.hpp
// and docs/rref.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include <mpirpc/rref.hpp>

#include "core/lending.hpp"
#include "core/receiver.hpp"
#include "core/registry.hpp"
#include "core/sender.hpp"
#include "core/server.hpp"
#include "core/session.hpp"

namespace mpirpc::detail {

class rref_table;

/// One worker's share of the references to one object (shared by its rref<T> copies).
struct rref_record {
  rref_record(rref_table& t, std::uint64_t id_, int owner_, bool own, std::uint64_t w)
      : table(&t), id(id_), owner(owner_), owner_is_self(own), weight(w) {}
  ~rref_record();
  rref_record(const rref_record&) = delete;
  rref_record& operator=(const rref_record&) = delete;

  rref_table* table; ///< of the session it belongs to (kept, like its session, for ever)
  const std::uint64_t id;
  const int owner;
  const bool owner_is_self;
  std::atomic<bool> confirmed{false};

  // Guarded by the table's mutex.
  std::uint64_t weight;
  bool replenishing = false;
  future<void> replenished;  ///< completes when the replenish in flight is answered
  bool holds_weight = true;  ///< false when the creation was never registered by the owner
  bool has_creation = false; ///< this worker created it: `created` is the creating call
  future<void> created;
};

/// An object this worker owns, or a placeholder for one whose creation has not arrived yet.
struct owned_object final : rref_slot, std::enable_shared_from_this<owned_object> {
  owned_object(rref_table& t, std::uint64_t i) : table(t), id(i) {}
  void set_value(std::shared_ptr<void> v, const std::type_info& type,
                 save_fn save) noexcept override;
  void set_error(std::exception_ptr e) noexcept override;

  rref_table& table;
  const std::uint64_t id;
  future<void> settled; ///< completes when the object exists or its creation failed

  // Guarded by the table's mutex.
  enum class state { pending, ready, failed };
  state status = state::pending;
  bool registered = false; ///< the creation request has been processed
  std::int64_t weight = 0; ///< see the protocol; negative while messages overtake creation
  std::shared_ptr<void> value;
  const std::type_info* type = nullptr;
  save_fn save = nullptr;
  std::exception_ptr error;
  std::vector<std::function<void(const std::shared_ptr<owned_object>&)>> waiting;
};

/// Per-session tables: the rref service of one session. Built on three parts of the core: it
/// names workers through the session, sends its protocol's requests through the sender, and
/// runs deferred work on the server's threads; the receiver hands it the requests it serves
/// (flagged_request_handler). Thread-safe (one mutex).
class rref_table final : public flagged_request_handler {
public:
  rref_table(const session& identity, sender& out, server& tasks);
  ~rref_table();

  const session& identity() const noexcept { return _session; }

  // ---- owner side (run by the receiver on a handler slot)
  /// Serves a request flagged on_rref and/or creates_rref, or a request for one of the
  /// protocol's own functions (fetch, release, replenish).
  void serve(std::uint16_t flags, const function_entry& fn, reader& in,
             reply_token& token) override;
  /// Refuses a flagged request for a function not registered here: the object it creates
  /// fails with unknown_function_error, the weight of the one it runs on goes back.
  void refuse_unknown(std::uint16_t flags, std::uint64_t function_id, reader& in,
                      reply_token& token) override;
  void serve_fetch(reader& in, reply_token& token);
  void serve_release(reader& in, reply_token& token);
  void serve_replenish(reader& in, reply_token& token);
  /// Settles `o` (owned_object::set_value / set_error).
  void settle(owned_object& o, std::shared_ptr<void> value, const std::type_info* type,
              save_fn save, std::exception_ptr error) noexcept;

  // ---- records (any thread)
  std::shared_ptr<rref_record> new_record(int owner);
  void creation_not_sent(rref_record& r) noexcept;
  void track_creation(const std::shared_ptr<rref_record>& r, future<void> created,
                      std::shared_ptr<rref_record> self);
  /// Writes a reference into a message (a fork), with part of `r`'s weight.
  void save(writer& w, const std::shared_ptr<rref_record>& r);
  /// Writes the id of the object a call runs on, with one unit of `r`'s weight, which the
  /// owner gives back when the call is over.
  void lend(writer& w, const std::shared_ptr<rref_record>& r);
  std::shared_ptr<rref_record> load(reader& in);
  /// The last handle of `r` died: give its weight back.
  void drop(rref_record& r) noexcept;
  std::shared_ptr<void> local_object(const rref_record& r, const std::type_info& type, bool wait);
  void check_usable(const rref_record& r) const;
  /// Weight given to messages since `mark` (a position of this thread's fork log): kept once
  /// the message was sent, given back otherwise.
  static std::size_t fork_log_mark() noexcept;
  static void fork_log_commit(std::size_t mark) noexcept;
  static void fork_log_undo(std::size_t mark) noexcept;

  // ---- lifecycle
  /// What is still alive, one line per kind; empty when nothing is.
  std::string leftovers() const;
  /// The runtime stopped: owned objects are destroyed, records no longer send anything.
  void clear() noexcept;
  bool stopped() const noexcept { return _stopped.load(std::memory_order_acquire); }

  std::uint64_t owned_objects() const;
  std::uint64_t references() const;

private:
  struct call_hold;
  /// Takes weight from `r` for a message (logged in the fork log); a call takes one unit.
  /// Throws rref_weight_exhausted when `r` has none to give.
  std::uint64_t take_weight(const std::shared_ptr<rref_record>& r, bool for_call);
  std::shared_ptr<owned_object>& object(std::uint64_t id);      // creates a placeholder; locked
  std::shared_ptr<owned_object> take_if_dead(std::uint64_t id); // locked
  /// Runs `task` once `id` is settled: now, on this thread, if it is; else on a server thread.
  void when_settled(std::uint64_t id,
                    std::function<void(const std::shared_ptr<owned_object>&)> task);
  void when_settled(const std::shared_ptr<owned_object>& o,
                    std::function<void(const std::shared_ptr<owned_object>&)> task);
  void start_replenish(const std::shared_ptr<rref_record>& r);
  void send_internal(int dest, const function_entry& fn, std::uint64_t id, std::uint64_t weight,
                     std::shared_ptr<reply_sink> sink);
  void release_owned(std::uint64_t id, std::uint64_t weight) noexcept;

  const session& _session;
  sender& _sender;
  server& _server;
  mutable std::mutex _mutex;
  std::unordered_map<std::uint64_t, std::shared_ptr<owned_object>> _owned;
  std::unordered_map<std::uint64_t, std::weak_ptr<rref_record>> _records;
  std::uint64_t _next_sequence = 1;
  std::atomic<bool> _stopped{false};
};

/// An object id as "owner-rank:sequence", for messages.
inline std::string rref_id_text(std::uint64_t id) {
  char text[32];
  std::snprintf(text, sizeof text, "%d:%llu", static_cast<int>(id >> 40),
                static_cast<unsigned long long>(id & ((std::uint64_t(1) << 40) - 1)));
  return text;
}

/// The fork log as the core sees it: what messages being built on the calling thread
/// borrowed from references (one log per thread, shared by every session).
lending_log& fork_lending() noexcept;

/// The internal functions of the protocol (registered in lib/rref/owned_objects.cpp).
const function_entry& rref_fetch_entry();
const function_entry& rref_release_entry();
const function_entry& rref_replenish_entry();

} // namespace mpirpc::detail
