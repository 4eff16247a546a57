// SPDX-License-Identifier: MIT
#include "registry.hpp"

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

void registry::add(std::string_view name, raw_function fn, invoker_fn invoke) {
  std::lock_guard<std::mutex> lock(_mutex);
  if (_frozen) {
    throw init_error("mpirpc: cannot register '" + std::string(name) +
                     "' while the runtime is running; register functions before init_rpc()");
  }
  if (name.empty()) {
    _problems.push_back("a function was registered with an empty name");
    return;
  }
  const std::uint64_t id = function_id_of(name);
  if (auto it = _by_id.find(id); it != _by_id.end()) {
    const function_entry& old = *it->second;
    if (old.name != name) {
      _problems.push_back("the names '" + old.name + "' and '" + std::string(name) +
                          "' hash to the same function id; rename one");
    } else if (old.fn != fn) {
      _problems.push_back("two different functions are registered as '" + std::string(name) + "'");
    }
    return; // same function, same name: harmless repeat
  }
  _entries.push_back(function_entry{std::string(name), id, fn, invoke});
  const function_entry* e = &_entries.back();
  _by_id.emplace(id, e);
  _by_pointer.emplace(fn, e); // a function registered under two names is called by the first
}

const function_entry* registry::by_pointer(raw_function fn) const noexcept {
  auto it = _by_pointer.find(fn);
  return it == _by_pointer.end() ? nullptr : it->second;
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

void register_raw_function(std::string_view name, raw_function fn, invoker_fn invoke) {
  registry::instance().add(name, fn, invoke);
}

std::string registered_name_of(raw_function fn) {
  const function_entry* e = registry::instance().by_pointer(fn);
  return e ? e->name : std::string();
}

} // namespace mpirpc::detail
