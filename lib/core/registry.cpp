// SPDX-License-Identifier: MIT
#include "core/registry.hpp"

#include <algorithm>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

std::uint64_t function_id_of(std::string_view name) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h == 0 ? 1 : h;
}

registry& registry::instance() {
  static registry r;
  return r;
}

const function_entry* registry::insert(function_entry entry, bool same_target) {
  if (_frozen) {
    throw init_error("mpirpc: cannot register '" + entry.name +
                     "' while the runtime is running; register functions before init_rpc()");
  }
  if (entry.name.empty()) {
    _problems.push_back("a function was registered with an empty name");
    return nullptr;
  }
  entry.id = function_id_of(entry.name);
  if (auto it = _by_id.find(entry.id); it != _by_id.end()) {
    const function_entry& old = *it->second;
    if (old.name != entry.name) {
      _problems.push_back("the names '" + old.name + "' and '" + entry.name +
                          "' hash to the same function id; rename one");
    } else if (!same_target) {
      _problems.push_back("two different functions are registered as '" + entry.name + "'");
    }
    return nullptr; // same function, same name: harmless repeat
  }
  _entries.push_back(std::move(entry));
  const function_entry* e = &_entries.back();
  _by_id.emplace(e->id, e);
  return e;
}

void registry::add(std::string_view name, raw_function fn, invoker_fn invoke, binder_fn bind) {
  function_entry entry;
  entry.name = std::string(name);
  entry.fn = fn;
  entry.invoke = invoke;
  entry.bind = bind;
  add_by_pointer(std::move(entry));
}

void registry::add_by_pointer(function_entry entry) {
  std::lock_guard<std::mutex> lock(_mutex);
  const auto existing = _by_id.find(function_id_of(entry.name));
  const bool same = existing != _by_id.end() && existing->second->fn == entry.fn;
  const raw_function fn = entry.fn;
  if (const function_entry* e = insert(std::move(entry), same)) {
    _by_pointer.emplace(fn, e); // a function registered under two names is called by the first
  }
}

namespace {
[[noreturn]] void served_elsewhere(raw_function, reader&, reply_token& token) {
  throw error("mpirpc: internal function " + std::to_string(token.function_id) +
              " reached the plain handler path");
}
} // namespace

void registry::add_service(std::string_view name, raw_function marker) {
  function_entry entry;
  entry.name = std::string(name);
  entry.fn = marker;
  entry.invoke = &served_elsewhere;
  entry.service = true;
  add_by_pointer(std::move(entry));
}

void registry::add_method(std::string_view name, std::string member, invoker_fn invoke,
                          binder_fn bind, const std::type_info& self_type) {
  std::lock_guard<std::mutex> lock(_mutex);
  const auto existing = _by_id.find(function_id_of(name));
  const bool same = existing != _by_id.end() && existing->second->member == member;
  function_entry entry;
  entry.name = std::string(name);
  entry.invoke = invoke;
  entry.bind = bind;
  entry.member = member;
  entry.self_type = &self_type;
  if (const function_entry* e = insert(std::move(entry), same)) {
    _by_member.emplace(std::move(member), e);
  }
}

const function_entry* registry::by_pointer(raw_function fn) const noexcept {
  auto it = _by_pointer.find(fn);
  return it == _by_pointer.end() ? nullptr : it->second;
}

const function_entry* registry::by_member(const void* member, std::size_t size) const {
  auto it = _by_member.find(std::string(static_cast<const char*>(member), size));
  return it == _by_member.end() ? nullptr : it->second;
}

const function_entry* registry::by_id(std::uint64_t id) const noexcept {
  auto it = _by_id.find(id);
  return it == _by_id.end() ? nullptr : it->second;
}

std::string registry::problems() const {
  std::lock_guard<std::mutex> lock(_mutex);
  std::string out;
  for (const auto& p : _problems)
    out += (out.empty() ? "" : "; ") + p;
  return out;
}

std::uint64_t registry::digest() const {
  std::lock_guard<std::mutex> lock(_mutex);
  std::vector<std::uint64_t> ids;
  for (const auto& e : _entries)
    ids.push_back(e.id);
  std::sort(ids.begin(), ids.end());
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint64_t id : ids) {
    for (int i = 0; i < 8; ++i) {
      h ^= (id >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return h;
}

void registry::set_frozen(bool frozen) {
  std::lock_guard<std::mutex> lock(_mutex);
  _frozen = frozen;
}

void register_raw_function(std::string_view name, raw_function fn, invoker_fn invoke,
                           binder_fn bind) {
  registry::instance().add(name, fn, invoke, bind);
}

void register_raw_method(std::string_view name, const void* member, std::size_t size,
                         invoker_fn invoke, binder_fn bind, const std::type_info& self_type) {
  registry::instance().add_method(name, std::string(static_cast<const char*>(member), size), invoke,
                                  bind, self_type);
}

void method_without_object(raw_function, reader&, reply_token& token) {
  const function_entry* e = registry::instance().by_id(token.function_id);
  throw error("mpirpc: '" + (e ? e->name : std::string("?")) +
              "' is a member function: call it through an rref to an object "
              "(rref.rpc_sync(&Class::method, ...))");
}

std::string registered_name_of(raw_function fn) {
  const function_entry* e = registry::instance().by_pointer(fn);
  return e ? e->name : std::string();
}

} // namespace mpirpc::detail
