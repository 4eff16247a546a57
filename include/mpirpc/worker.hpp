// SPDX-License-Identifier: MIT
// Workers: the named ranks of a running session, and the ways to name a call's destination.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

namespace mpirpc {

/// Identity of one worker: its unique name and its id (its rank in the runtime's
/// communicator). Plain value; copy freely.
struct worker_info {
  std::string name;
  int id = -1;

  friend bool operator==(const worker_info& a, const worker_info& b) {
    return a.id == b.id && a.name == b.name;
  }
  friend bool operator!=(const worker_info& a, const worker_info& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const worker_info& w) {
    return os << "worker_info(name=" << w.name << ", id=" << w.id << ")";
  }
};

/// Where a call goes: a worker name, a rank, or a worker_info. Implicit from each, so every
/// call accepts all three. Holds a view of the name: use it only within the call expression.
/// An unknown destination throws unknown_worker_error at the call site.
class destination {
public:
  enum class kind { name, rank, info };
  destination(const char* name) : _kind(kind::name), _name(name) {}
  destination(const std::string& name) : _kind(kind::name), _name(name) {}
  destination(std::string_view name) : _kind(kind::name), _name(name) {}
  destination(int rank) : _kind(kind::rank), _rank(rank) {}
  destination(const worker_info& info) : _kind(kind::info), _name(info.name), _rank(info.id) {}

  kind which() const noexcept { return _kind; }
  std::string_view name() const noexcept { return _name; }
  int rank() const noexcept { return _rank; }

private:
  kind _kind;
  std::string_view _name;
  int _rank = -1;
};

} // namespace mpirpc
