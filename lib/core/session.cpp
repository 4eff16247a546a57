// SPDX-License-Identifier: MIT
#include "core/session.hpp"

#include <atomic>
#include <cstdio>
#include <sstream>

#include <mpirpc/errors.hpp>

#include "core/registry.hpp"

namespace mpirpc::detail {

namespace {
std::atomic<std::uint64_t> g_next_serial{1};

/// The name this thread resolved last, in which session: a loop of calls names one worker, and
/// comparing it first (a few ns) saves hashing the name into the table (25 ns here, a fifth of
/// what an rpc_ff costs its caller).
struct last_name {
  std::uint64_t session = 0;
  std::string name;
  int rank = -1;
};
thread_local last_name t_last_name;
} // namespace

session::session(std::vector<worker_info> workers, int rank)
    : _workers(std::move(workers)), _rank(rank),
      _serial(g_next_serial.fetch_add(1, std::memory_order_relaxed)) {
  for (const auto& w : _workers)
    _rank_of_name.emplace(w.name, w.id);
}

int session::resolve(const destination& to) const {
  switch (to.which()) {
  case destination::kind::name: {
    last_name& last = t_last_name;
    if (last.session == _serial && last.name == to.name()) return last.rank;
    auto it = _rank_of_name.find(std::string(to.name()));
    if (it == _rank_of_name.end()) {
      throw unknown_worker_error("mpirpc: no worker is named '" + std::string(to.name()) +
                                 "' (workers are " + _workers.front().name + " .. " +
                                 _workers.back().name + ")");
    }
    last.session = _serial;
    last.name = it->first;
    last.rank = it->second;
    return it->second;
  }
  case destination::kind::rank:
    if (to.rank() < 0 || to.rank() >= static_cast<int>(_workers.size())) {
      throw unknown_worker_error("mpirpc: no worker has rank " + std::to_string(to.rank()) +
                                 " (ranks are 0 .. " + std::to_string(_workers.size() - 1) + ")");
    }
    return to.rank();
  case destination::kind::info:
    if (to.rank() < 0 || to.rank() >= static_cast<int>(_workers.size()) ||
        _workers[static_cast<std::size_t>(to.rank())].name != to.name()) {
      throw unknown_worker_error("mpirpc: worker_info(name=" + std::string(to.name()) + ", id=" +
                                 std::to_string(to.rank()) + ") names no worker of this session");
    }
    return to.rank();
  }
  throw unknown_worker_error("mpirpc: invalid destination");
}

std::string session::function_name(std::uint64_t id) {
  if (const function_entry* e = registry::instance().by_id(id)) return e->name;
  std::ostringstream os;
  os << "function#" << std::hex << id;
  return os.str();
}

void session::log(const std::string& line) const noexcept {
  std::fprintf(stderr, "mpirpc[%s]: %s\n", self().name.c_str(), line.c_str());
}

} // namespace mpirpc::detail
