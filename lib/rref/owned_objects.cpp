// SPDX-License-Identifier: MIT
// Remote references, the owner's side: the objects this worker owns, their settling, the calls
// that wait for them, and the requests flagged on_rref/creates_rref and the internal functions
// (fetch, release, replenish) served on them. Protocol: include/mpirpc/rref.hpp, docs/rref.md.
#include "rref/rref_table.hpp"

#include <mpirpc/errors.hpp>

#include "errors_internal.hpp"
#include "rref/rref_wire.hpp"

namespace mpirpc::detail {

// ---------------------------------------------------------------------------------------------
// The protocol's own functions

namespace {
// The internal functions are identified by these markers' addresses (never called).
void rref_fetch_marker() {}
void rref_release_marker() {}
void rref_replenish_marker() {}

/// Registers the protocol's functions on every rank alike (this file is always linked: the
/// runtime builds its rref_table, whose records call in here). The receiver hands their requests to
/// rref_table::serve.
const bool rref_functions_registered = [] {
  registry& r = registry::instance();
  r.add_service("mpirpc::rref::to_here", &rref_fetch_marker);
  r.add_service("mpirpc::rref::release", &rref_release_marker);
  r.add_service("mpirpc::rref::replenish", &rref_replenish_marker);
  return true;
}();

const function_entry& internal_entry(raw_function marker) {
  const function_entry* e = registry::instance().by_pointer(marker);
  if (!e) throw error("mpirpc: internal function missing from the registry");
  return *e;
}

} // namespace

const function_entry& rref_fetch_entry() {
  static const function_entry& e = internal_entry(&rref_fetch_marker);
  return e;
}
const function_entry& rref_release_entry() {
  static const function_entry& e = internal_entry(&rref_release_marker);
  return e;
}
const function_entry& rref_replenish_entry() {
  static const function_entry& e = internal_entry(&rref_replenish_marker);
  return e;
}

raw_function rref_fetch_function() noexcept {
  return &rref_fetch_marker;
}

// ---------------------------------------------------------------------------------------------
// Owner side

std::shared_ptr<owned_object>& rref_table::object(std::uint64_t id) {
  std::shared_ptr<owned_object>& o = _owned[id];
  if (!o) o = std::make_shared<owned_object>(*this, id);
  return o;
}

std::shared_ptr<owned_object> rref_table::take_if_dead(std::uint64_t id) {
  auto it = _owned.find(id);
  if (it == _owned.end()) return nullptr;
  owned_object& o = *it->second;
  if (o.registered && o.weight < 0) {
    _session.log("rref " + rref_id_text(id) +
                 ": released more weight than it was given (protocol error)");
  }
  if (!o.registered || o.weight > 0 || o.status == owned_object::state::pending) return nullptr;
  std::shared_ptr<owned_object> dead = std::move(it->second);
  _owned.erase(it);
  return dead;
}

void rref_table::release_owned(std::uint64_t id, std::uint64_t weight) noexcept {
  std::shared_ptr<owned_object> dead;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    if (stopped() && _owned.find(id) == _owned.end()) return;
    object(id)->weight -= static_cast<std::int64_t>(weight);
    dead = take_if_dead(id);
  }
  // `dead` (and the user's object) is destroyed here, outside the lock.
}

void owned_object::set_value(std::shared_ptr<void> v, const std::type_info& type,
                             save_fn save) noexcept {
  table.settle(*this, std::move(v), &type, save, nullptr);
}

void owned_object::set_error(std::exception_ptr e) noexcept {
  table.settle(*this, nullptr, nullptr, nullptr, std::move(e));
}

void rref_table::settle(owned_object& o, std::shared_ptr<void> value, const std::type_info* type,
                        save_fn save, std::exception_ptr error) noexcept {
  std::vector<std::function<void(const std::shared_ptr<owned_object>&)>> waiting;
  std::shared_ptr<owned_object> self;
  std::shared_ptr<owned_object> dead;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    if (o.status != owned_object::state::pending) return;
    if (error) {
      o.status = owned_object::state::failed;
      o.error = std::move(error);
    } else {
      o.status = owned_object::state::ready;
      o.value = std::move(value);
      o.type = type;
      o.save = save;
    }
    waiting.swap(o.waiting);
    self = o.shared_from_this();
    dead = take_if_dead(o.id);
  }
  try {
    o.settled.set_result();
  } catch (...) {
  }
  for (auto& task : waiting) {
    // On a server thread: settling may happen on a progress-path continuation, where a
    // user's member function must not run (it may block).
    _server.post([task = std::move(task), self] { task(self); });
  }
}

void rref_table::when_settled(std::uint64_t id,
                              std::function<void(const std::shared_ptr<owned_object>&)> task) {
  std::shared_ptr<owned_object> o;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    o = object(id);
  }
  when_settled(o, std::move(task));
}

void rref_table::when_settled(const std::shared_ptr<owned_object>& o,
                              std::function<void(const std::shared_ptr<owned_object>&)> task) {
  {
    std::lock_guard<std::mutex> lock(_mutex);
    if (o->status == owned_object::state::pending) {
      o->waiting.push_back(std::move(task));
      return;
    }
  }
  task(o);
}

/// The weight a call through an rref carries: given back when the call is over (its last
/// holder is the call's continuation, or the task that ran it).
struct rref_table::call_hold {
  call_hold(rref_table& t, std::uint64_t i, std::uint64_t w) : table(t), id(i), weight(w) {}
  call_hold(const call_hold&) = delete;
  call_hold& operator=(const call_hold&) = delete;
  ~call_hold() { table.release_owned(id, weight); }
  rref_table& table;
  std::uint64_t id;
  std::uint64_t weight;
};

void rref_table::serve(std::uint16_t flags, const function_entry& fn, reader& in,
                       reply_token& token) {
  if (fn.service && !(flags & wire::request_rref_flags)) {
    if (&fn == &rref_fetch_entry()) return serve_fetch(in, token);
    if (&fn == &rref_release_entry()) return serve_release(in, token);
    if (&fn == &rref_replenish_entry()) return serve_replenish(in, token);
    throw error("mpirpc: '" + fn.name + "' is not a function of the rref protocol");
  }
  wire::request_prefix prefix;
  try {
    prefix = wire::read_request_prefix(in, flags);
    if (!(flags & on_rref) && fn.self_type) {
      in.fail("member function '" + fn.name + "' called without an object");
    }
  } catch (...) {
    rethrow_argument_error();
  }
  const std::uint64_t new_id = prefix.new_id;
  const std::uint64_t weight = prefix.new_weight;
  const std::uint64_t self_id = prefix.self_id;
  const std::uint64_t self_weight = prefix.self_weight;
  // The call's weight keeps the object it runs on alive until the call is over.
  std::shared_ptr<void> hold;
  if (flags & on_rref) hold = std::make_shared<call_hold>(*this, self_id, self_weight);
  // The creation's weight counts from here on, whatever happens to the call.
  std::shared_ptr<owned_object> created;
  if (flags & creates_rref) {
    std::lock_guard<std::mutex> lock(_mutex);
    created = object(new_id);
    if (created->registered) {
      throw argument_error("rref " + rref_id_text(new_id) +
                           " is created twice (forged or repeated request)");
    }
    created->registered = true;
    created->weight += static_cast<std::int64_t>(weight);
  }
  std::shared_ptr<bound_call> call;
  try {
    if (!fn.bind) {
      throw error("mpirpc: '" + fn.name + "' cannot be called through an rref or by remote()");
    }
    call = fn.bind(fn.fn, fn.member.empty() ? nullptr : fn.member.data(), in);
  } catch (...) {
    if (!created) throw;
    created->set_error(std::current_exception());
    throw;
  }
  hold_reply(token); // answered below, now or once the object the call runs on exists
  auto run = [call, token, created, hold, this](void* self) mutable {
    if (created) {
      call->store(self, std::move(hold), created);
      when_settled(created, [token](const std::shared_ptr<owned_object>& o) mutable {
        if (o->status == owned_object::state::failed) {
          send_reply_error(token, o->error);
        } else {
          send_reply_value(token, nullptr, nullptr);
        }
      });
      return;
    }
    try {
      call->reply(self, std::move(hold), token);
    } catch (...) {
      send_reply_error(token, std::current_exception());
    }
  };
  if (!(flags & on_rref)) {
    run(nullptr);
    return;
  }
  const std::type_info* self_type = fn.self_type;
  const std::string name = fn.name;
  when_settled(self_id, [run, token, created, self_type, name,
                         this](const std::shared_ptr<owned_object>& o) mutable {
    std::exception_ptr failure;
    if (o->status == owned_object::state::failed) {
      failure = o->error;
    } else if (self_type && (!o->type || *o->type != *self_type)) {
      failure = std::make_exception_ptr(
          error("mpirpc: '" + name + "' is a member of " + demangle(self_type->name()) +
                ", but the rref's object on " + _session.self().name + " is a " +
                (o->type ? demangle(o->type->name()) : std::string("(nothing)"))));
    }
    if (!failure) {
      run(o->value.get());
      return;
    }
    if (created) created->set_error(failure);
    send_reply_error(token, failure);
  });
}

void rref_table::refuse_unknown(std::uint16_t flags, std::uint64_t function_id, reader& in,
                                reply_token& token) {
  wire::request_prefix prefix;
  try {
    prefix = wire::read_request_prefix(in, flags);
  } catch (...) {
    rethrow_argument_error();
  }
  const std::string missing = "the function it names (" + session::function_name(function_id) +
                              ") is not registered on " + _session.self().name +
                              " (the ranks' registries differ)";
  // The weight the call carries goes back at once: it ran on nothing.
  if (flags & on_rref) release_owned(prefix.self_id, prefix.self_weight);
  if (!(flags & creates_rref)) {
    throw unknown_rref_function_error("mpirpc: a call through rref " +
                                      rref_id_text(prefix.self_id) + " failed: " + missing);
  }
  // The object that was to be made exists, failed, with the creation's weight: calls on it
  // fail at once (fetches that came first included), and its references release it as usual.
  std::shared_ptr<owned_object> created;
  {
    std::lock_guard<std::mutex> lock(_mutex);
    created = object(prefix.new_id);
    if (created->registered) {
      throw argument_error("rref " + rref_id_text(prefix.new_id) +
                           " is created twice (forged or repeated request)");
    }
    created->registered = true;
    created->weight += static_cast<std::int64_t>(prefix.new_weight);
  }
  const auto failure = std::make_exception_ptr(
      unknown_rref_function_error("mpirpc: the object of rref " + rref_id_text(prefix.new_id) +
                                  " was never created: " + missing));
  created->set_error(failure);
  send_reply_error(token, failure);
}

void rref_table::serve_fetch(reader& in, reply_token& token) {
  std::uint64_t id = 0;
  std::uint64_t weight = 0;
  try {
    std::tie(id, weight) = wire::read_fetch_request(in);
  } catch (...) {
    rethrow_argument_error();
  }
  auto hold = std::make_shared<call_hold>(*this, id, weight); // released once answered
  hold_reply(token);
  when_settled(id, [token, hold](const std::shared_ptr<owned_object>& o) mutable {
    if (o->status == owned_object::state::failed) {
      send_reply_error(token, o->error);
    } else if (!o->save) {
      send_reply_error(token, unserializable_result_error(o->type ? o->type->name() : "?"));
    } else {
      send_reply_value(token, o->save, o->value.get());
    }
  });
}

namespace {
/// The payload of a release or replenish (rref_wire.hpp), failing as an argument error.
std::pair<std::uint64_t, std::uint64_t> read_id_and_weight(reader& in, std::uint64_t max,
                                                           const char* what) {
  try {
    return wire::read_id_and_weight(in, max, what);
  } catch (...) {
    rethrow_argument_error();
  }
}
} // namespace

void rref_table::serve_release(reader& in, reply_token& token) {
  const auto [id, weight] = read_id_and_weight(in, wire::max_release_weight, "release");
  release_owned(id, weight);
  send_reply_value(token, nullptr, nullptr);
}

void rref_table::serve_replenish(reader& in, reply_token& token) {
  const auto [id, weight] = read_id_and_weight(in, wire::replenish_weight, "replenish");
  {
    std::lock_guard<std::mutex> lock(_mutex);
    object(id)->weight += static_cast<std::int64_t>(weight);
  }
  send_reply_value(token, nullptr, nullptr);
}

} // namespace mpirpc::detail
