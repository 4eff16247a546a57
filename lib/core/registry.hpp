// SPDX-License-Identifier: MIT
// The process-wide table of registered functions. Internal.
//
// Written only while no runtime runs (static registration, or register_function before
// init_rpc); read without locks by every thread while a runtime runs.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include <mpirpc/detail/invoke.hpp>

namespace mpirpc::detail {

struct function_entry {
  std::string name;
  std::uint64_t id = 0;
  raw_function fn = nullptr;   ///< null for a member function
  invoker_fn invoke = nullptr; ///< serves a plain request
  binder_fn bind = nullptr;    ///< decodes a call to run later (rref calls, remote()); may be null
  std::string member;          ///< a member function's pointer, as bytes
  const std::type_info* self_type = nullptr; ///< a member function's class
  /// One of the runtime's own functions (the rref protocol's): the receiver hands its
  /// requests to the flagged_request_handler instead of calling `invoke`.
  bool service = false;
};

/// FNV-1a of the name: a function's identity on the wire.
std::uint64_t function_id_of(std::string_view name) noexcept;

class registry {
public:
  static registry& instance();

  /// Adds a function. Conflicts (one name, two functions; two names with one hash) are
  /// remembered and reported by problems(), so that static registration never throws
  /// (add() throws only while frozen, which static registration never is).
  void add(std::string_view name, raw_function fn, invoker_fn invoke, binder_fn bind);
  void add_method(std::string_view name, std::string member, invoker_fn invoke, binder_fn bind,
                  const std::type_info& self_type);
  /// Adds one of the runtime's own functions (function_entry::service), named on the wire by
  /// `name` and in calls by `marker` (never called).
  void add_service(std::string_view name, raw_function marker);

  const function_entry* by_pointer(raw_function fn) const noexcept;
  const function_entry* by_member(const void* member, std::size_t size) const;
  const function_entry* by_id(std::uint64_t id) const noexcept;

  /// Conflicting registrations, one per line; empty when there are none.
  std::string problems() const;
  /// A digest of the set of registered names, equal on ranks with equal registries.
  std::uint64_t digest() const;

  /// While frozen (a runtime runs) add() throws init_error.
  void set_frozen(bool frozen);

private:
  /// Adds `entry` unless its name is taken; returns the entry now under that name's id, or
  /// null when the name was refused. Locked.
  const function_entry* insert(function_entry entry, bool same_target);
  /// Adds a function or service entry called by its pointer (`entry.fn`). Locks.
  void add_by_pointer(function_entry entry);

  mutable std::mutex _mutex;
  bool _frozen = false;
  std::deque<function_entry> _entries;
  std::unordered_map<raw_function, const function_entry*> _by_pointer;
  std::unordered_map<std::string, const function_entry*> _by_member;
  std::unordered_map<std::uint64_t, const function_entry*> _by_id;
  std::vector<std::string> _problems;
};

} // namespace mpirpc::detail
