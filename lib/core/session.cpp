// SPDX-License-Identifier: MIT
#include "core/session.hpp"

#include <cstdio>
#include <sstream>

#include <mpirpc/errors.hpp>

#include "core/registry.hpp"

namespace mpirpc::detail {

session::session(std::vector<worker_info> workers, int rank)
    : _workers(std::move(workers)), _rank(rank) {
  for (const auto& w : _workers)
    _rank_of_name.emplace(w.name, w.id);
}

int session::resolve(const destination& to) const {
  switch (to.which()) {
  case destination::kind::name: {
    auto it = _rank_of_name.find(std::string(to.name()));
    if (it == _rank_of_name.end()) {
      throw unknown_worker_error("mpirpc: no worker is named '" + std::string(to.name()) +
                                 "' (workers are " + _workers.front().name + " .. " +
                                 _workers.back().name + ")");
    }
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
