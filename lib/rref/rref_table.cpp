// SPDX-License-Identifier: MIT
// Remote references: the reference records, forks and the fork log, releases, the table's
// lifecycle and the entry points of rref.hpp that start from a record (runtime.cpp has the two
// that need the running session); the owner's side is in owned_objects.cpp. The weighted
// reference counting protocol is in include/mpirpc/rref.hpp, the message sequences in
// docs/rref.md.
#include "rref/rref_table.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>

#include <mpirpc/errors.hpp>

#include "errors_internal.hpp"
#include "rref/rref_wire.hpp"

namespace mpirpc::detail {

namespace {

// The weights and the encoding that travel (checked on receipt by rref_wire.hpp).
using wire::initial_weight;
using wire::replenish_weight;
using wire::wire_rref;

/// Most weight one fork carries; a record gives half of its weight when it has less.
constexpr std::uint64_t max_fork_weight = std::uint64_t(1) << 32;
/// A record whose weight falls below this asks its owner for replenish_weight more.
constexpr std::uint64_t low_weight = std::uint64_t(1) << 20;

/// Weight taken from records for messages being built on this thread (see fork_log_mark).
struct fork_entry {
  std::shared_ptr<rref_record> record;
  std::uint64_t weight;
};
std::vector<fork_entry>& fork_log() {
  thread_local std::vector<fork_entry> log;
  return log;
}

/// Reports the failure of a release, which nobody waits for; the text is built only then.
class release_sink final : public reply_sink {
public:
  release_sink(const session& s, std::uint64_t id, int owner)
      : _session(s), _id(id), _owner(owner) {}
  void on_reply(reader&) noexcept override {}
  void on_error(std::exception_ptr error) noexcept override {
    _session.log("releasing rref " + rref_id_text(_id) + " on " + _session.name_of(_owner) +
                 " failed (its object stays alive): " + describe_exception(error).message);
  }

private:
  const session& _session;
  std::uint64_t _id;
  int _owner;
};

} // namespace

// ---------------------------------------------------------------------------------------------
// Records

rref_record::~rref_record() {
  table->drop(*this);
}

rref_table::rref_table(const session& identity, sender& out, server& tasks)
    : _session(identity), _sender(out), _server(tasks) {}

rref_table::~rref_table() = default;

std::shared_ptr<rref_record> rref_table::new_record(int owner) {
  if (stopped()) throw shutdown_error("mpirpc: the RPC runtime has shut down");
  std::lock_guard<std::mutex> lock(_mutex);
  const std::uint64_t id =
      (static_cast<std::uint64_t>(_session.self().id) << 40) | (_next_sequence++);
  auto r =
      std::make_shared<rref_record>(*this, id, owner, owner == _session.self().id, initial_weight);
  _records[id] = r;
  return r;
}

void rref_table::track_creation(const std::shared_ptr<rref_record>& r, future<void> created,
                                std::shared_ptr<rref_record> self) {
  {
    std::lock_guard<std::mutex> lock(_mutex);
    r->has_creation = true;
    r->created = created;
  }
  std::weak_ptr<rref_record> weak = r;
  created.add_done_callback([weak, self](const future<void>& done) {
    auto record = weak.lock();
    if (!record) return;
    try {
      done.value();
      record->confirmed = true;
    } catch (const timeout_error&) {
    } catch (...) {
      record->confirmed = true; // the owner answered: it knows the object (and its error)
    }
  });
}

void rref_table::creation_not_sent(rref_record& r) noexcept {
  std::lock_guard<std::mutex> lock(_mutex);
  r.holds_weight = false;
}

void rref_table::check_usable(const rref_record& r) const {
  if (stopped()) {
    throw shutdown_error("mpirpc: this rref belongs to an RPC session that has shut down");
  }
  future<void> created;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    if (!r.has_creation) return;
    created = r.created;
  }
  if (created.done()) created.value(); // rethrows a failed or timed-out creation
}

std::uint64_t rref_table::take_weight(const std::shared_ptr<rref_record>& r, bool for_call) {
  if (r->table != this || stopped()) {
    throw shutdown_error("mpirpc: this rref belongs to an RPC session that has shut down");
  }
  std::uint64_t give = 0;
  bool ask = false;
  future<void> replenished;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    if (r->owner_is_self) {
      give = for_call ? 1 : max_fork_weight; // the owner mints weight: counted before it leaves
      object(r->id)->weight += static_cast<std::int64_t>(give);
    } else {
      if (r->weight >= 2) {
        give = for_call ? 1 : std::min(r->weight / 2, max_fork_weight);
        r->weight -= give;
      }
      if (r->weight < low_weight && !r->replenishing) {
        r->replenishing = true;
        r->replenished = future<void>();
        ask = true;
      }
      replenished = r->replenished;
    }
    if (give) fork_log().push_back(fork_entry{r, give});
  }
  if (ask) start_replenish(r);
  if (give == 0) throw rref_weight_exhausted(replenished);
  return give;
}

void rref_table::save(writer& w, const std::shared_ptr<rref_record>& r) {
  const std::uint64_t give = take_weight(r, false);
  w.write_plain(wire_rref{r->id, static_cast<std::uint32_t>(r->owner),
                          r->confirmed.load() || r->owner_is_self ? 1u : 0u, give});
}

void rref_table::lend(writer& w, const std::shared_ptr<rref_record>& r) {
  const std::uint64_t give = take_weight(r, true);
  w.write_plain(r->id);
  w.write_plain(give);
}

std::shared_ptr<rref_record> rref_table::load(reader& in) {
  const wire_rref v = wire::read_rref(in, _session.workers().size());
  if (v.id == 0) return nullptr;
  if (stopped()) throw shutdown_error("mpirpc: the RPC runtime has shut down");
  std::lock_guard<std::mutex> lock(_mutex);
  std::weak_ptr<rref_record>& slot = _records[v.id];
  if (auto r = slot.lock()) {
    if (r->owner != static_cast<int>(v.owner)) in.fail("rref owner differs from a known record");
    r->weight += v.weight;
    if (v.flags & 1) r->confirmed = true;
    return r;
  }
  const int owner = static_cast<int>(v.owner);
  auto r = std::make_shared<rref_record>(*this, v.id, owner, owner == _session.self().id, v.weight);
  r->confirmed = (v.flags & 1) != 0 || r->owner_is_self;
  slot = r;
  return r;
}

void rref_table::drop(rref_record& r) noexcept {
  std::uint64_t weight = 0;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    auto it = _records.find(r.id);
    if (it != _records.end() && it->second.expired()) _records.erase(it);
    if (r.holds_weight) weight = r.weight;
    r.weight = 0;
  }
  if (weight == 0) return;
  if (stopped()) return; // the shutdown report counted it
  if (r.owner_is_self) {
    release_owned(r.id, weight);
    return;
  }
  try {
    send_internal(r.owner, rref_release_entry(), r.id, weight,
                  std::make_shared<release_sink>(_session, r.id, r.owner));
  } catch (const shutdown_error&) {
    // Stopping: the shutdown report counts what is still alive.
  } catch (const std::exception& e) {
    _session.log("could not release rref " + rref_id_text(r.id) + " (its object on " +
                 _session.name_of(r.owner) + " stays alive): " + e.what());
  }
}

void rref_table::start_replenish(const std::shared_ptr<rref_record>& r) {
  class replenish_sink final : public reply_sink {
  public:
    explicit replenish_sink(std::shared_ptr<rref_record> r) : _r(std::move(r)) {}
    void on_reply(reader&) noexcept override { finish(true, nullptr); }
    void on_error(std::exception_ptr e) noexcept override { finish(false, e); }

  private:
    void finish(bool ok, std::exception_ptr e) noexcept {
      future<void> done;
      {
        std::lock_guard<std::mutex> lock(_r->table->_mutex);
        if (ok) _r->weight += replenish_weight;
        _r->replenishing = false;
        done = _r->replenished;
      }
      try {
        if (ok) {
          done.set_result();
        } else {
          done.set_exception(e);
        }
      } catch (...) {
      }
    }
    std::shared_ptr<rref_record> _r; // keeps the record (and its weight) until answered
  };
  auto sink = std::make_shared<replenish_sink>(r);
  try {
    send_internal(r->owner, rref_replenish_entry(), r->id, replenish_weight, sink);
  } catch (...) {
    sink->on_error(std::current_exception());
  }
}

void rref_table::send_internal(int dest, const function_entry& fn, std::uint64_t id,
                               std::uint64_t weight, std::shared_ptr<reply_sink> sink) {
  request_buffers request; // not the thread's scratch: a request may be under construction
  request.payload.resize(sizeof(wire::header));
  writer w(request.payload);
  w.write_plain(id);
  w.write_plain(weight);
  _sender.send_request(dest, fn, 0, request, std::move(sink), -1.0);
}

namespace {
/// The fork log behind the lending_log interface.
class fork_log_lending final : public lending_log {
public:
  std::size_t mark() const noexcept override { return rref_table::fork_log_mark(); }
  void commit(std::size_t mark) noexcept override { rref_table::fork_log_commit(mark); }
  void undo(std::size_t mark) noexcept override { rref_table::fork_log_undo(mark); }
};
} // namespace

lending_log& fork_lending() noexcept {
  static fork_log_lending log;
  return log;
}

std::size_t rref_table::fork_log_mark() noexcept {
  return fork_log().size();
}

void rref_table::fork_log_commit(std::size_t mark) noexcept {
  auto& log = fork_log();
  if (mark < log.size()) log.resize(mark);
}

void rref_table::fork_log_undo(std::size_t mark) noexcept {
  auto& log = fork_log();
  while (log.size() > mark) {
    fork_entry e = std::move(log.back());
    log.pop_back();
    rref_table& t = *e.record->table;
    if (e.record->owner_is_self) {
      t.release_owned(e.record->id, e.weight);
    } else {
      std::lock_guard<std::mutex> lock(t._mutex);
      e.record->weight += e.weight;
    }
  }
}

std::shared_ptr<void> rref_table::local_object(const rref_record& r, const std::type_info& type,
                                               bool wait) {
  std::shared_ptr<owned_object> o;
  future<void> settled;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    if (stopped()) throw shutdown_error("mpirpc: this rref's RPC session has shut down");
    // The creation request may not have been processed yet (its placeholder waits for it).
    o = object(r.id);
    settled = o->settled;
  }
  if (!settled.done()) {
    if (!wait) return nullptr;
    settled.wait();
  }
  std::lock_guard<std::mutex> lock(_mutex);
  if (o->status == owned_object::state::failed) std::rethrow_exception(o->error);
  if (!o->type || *o->type != type) {
    throw error("mpirpc: rref " + rref_id_text(r.id) + " holds a " +
                (o->type ? demangle(o->type->name()) : std::string("(nothing)")) + ", not a " +
                demangle(type.name()));
  }
  return o->value;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

std::uint64_t rref_table::owned_objects() const {
  std::lock_guard<std::mutex> lock(_mutex);
  std::uint64_t n = 0;
  for (const auto& [id, o] : _owned)
    n += o->registered ? 1 : 0;
  return n;
}

std::uint64_t rref_table::references() const {
  std::lock_guard<std::mutex> lock(_mutex);
  std::uint64_t n = 0;
  for (const auto& [id, r] : _records)
    n += r.expired() ? 0 : 1;
  return n;
}

std::string rref_table::leftovers() const {
  std::lock_guard<std::mutex> lock(_mutex);
  std::map<std::string, int> by_owner;
  int references = 0;
  for (const auto& [id, weak] : _records) {
    if (auto r = weak.lock()) {
      ++references;
      ++by_owner[_session.workers()[static_cast<std::size_t>(r->owner)].name];
    }
  }
  int owned = 0;
  int placeholders = 0;
  for (const auto& [id, o] : _owned)
    (o->registered ? owned : placeholders) += 1;
  std::string out;
  if (references > 0) {
    out += std::to_string(references) + " rref(s) still alive at shutdown (owners:";
    for (const auto& [name, n] : by_owner)
      out += " " + name + " x" + std::to_string(n);
    out += "); they can no longer be used";
  }
  if (owned > 0) {
    out += std::string(out.empty() ? "" : "; ") + std::to_string(owned) +
           " object(s) owned here still referenced at shutdown; destroyed now";
  }
  if (placeholders > 0) {
    out += std::string(out.empty() ? "" : "; ") + std::to_string(placeholders) +
           " reference(s) to objects whose creation never arrived";
  }
  return out;
}

void rref_table::clear() noexcept {
  std::unordered_map<std::uint64_t, std::shared_ptr<owned_object>> owned;
  std::vector<std::function<void(const std::shared_ptr<owned_object>&)>> waiting;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    _stopped.store(true, std::memory_order_release);
    owned.swap(_owned);
    for (auto& [id, o] : owned) {
      for (auto& task : o->waiting)
        waiting.push_back(std::move(task));
      o->waiting.clear();
    }
  }
  // The objects (and calls that waited for them) are destroyed here, outside the lock: their
  // destructors may drop rrefs, which takes the lock.
}

// ---------------------------------------------------------------------------------------------
// The seam used by the public templates (rref.hpp)

namespace {
rref_table& table_of(const rref_record& r) {
  return *r.table;
}
} // namespace

void rref_write_new(writer& w, const rref_record& r) {
  w.write_plain(r.id);
  w.write_plain(initial_weight);
}

void rref_write_self(writer& w, const std::shared_ptr<rref_record>& r) {
  table_of(*r).lend(w, r);
}

void rref_track_creation(const std::shared_ptr<rref_record>& r, future<void> created,
                         std::shared_ptr<rref_record> self) {
  table_of(*r).track_creation(r, std::move(created), std::move(self));
}

void rref_creation_not_sent(rref_record& r) noexcept {
  table_of(r).creation_not_sent(r);
}

int rref_owner_rank(const rref_record& r) noexcept {
  return r.owner;
}

worker_info rref_owner_info(const rref_record& r) {
  return table_of(r).identity().workers()[static_cast<std::size_t>(r.owner)];
}

bool rref_is_owner(const rref_record& r) noexcept {
  return r.owner_is_self;
}

bool rref_confirmed(const rref_record& r) noexcept {
  return r.owner_is_self || r.confirmed.load();
}

void rref_mark_confirmed(rref_record& r) noexcept {
  r.confirmed = true;
}

void rref_check_usable(const rref_record& r) {
  table_of(r).check_usable(r);
}

std::shared_ptr<void> rref_local_object(const rref_record& r, const std::type_info& type,
                                        bool wait) {
  return table_of(r).local_object(r, type, wait);
}

void rref_throw_not_owner(const rref_record& r) {
  const session& s = table_of(r).identity();
  throw not_owner_error("mpirpc: rref::local_value() called on " + s.self().name +
                        ", but the value lives on its owner " + s.name_of(r.owner) +
                        "; use to_here() for a copy or call it through rref.rpc_sync()");
}

void rref_save(writer& w, const std::shared_ptr<rref_record>& r) {
  if (!r) {
    w.write_plain(wire_rref{0, 0, 0, 0});
    return;
  }
  table_of(*r).save(w, r);
}

} // namespace mpirpc::detail
