// SPDX-License-Identifier: MIT
// The workers of one runtime session: who is who, how a destination resolves, how lines are
// logged. Internal. Immutable once built, so any thread reads it without locks.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <mpirpc/rpc.hpp>
#include <mpirpc/worker.hpp>

namespace mpirpc::detail {

class session {
public:
  /// `workers` by rank, as agreed at start-up; `rank` is this process's.
  session(std::vector<worker_info> workers, int rank);

  const worker_info& self() const noexcept { return _workers[static_cast<std::size_t>(_rank)]; }
  const std::vector<worker_info>& workers() const noexcept { return _workers; }
  int rank() const noexcept { return _rank; }
  int size() const noexcept { return static_cast<int>(_workers.size()); }
  /// The name of the worker at `rank`, which must be valid.
  const std::string& name_of(int rank) const noexcept {
    return _workers[static_cast<std::size_t>(rank)].name;
  }
  /// The rank of a destination; throws unknown_worker_error.
  int resolve(const destination& to) const;
  /// The registered name of a function id, or "function#<hex id>".
  static std::string function_name(std::uint64_t id);
  /// Writes "mpirpc[<self>]: <line>" to stderr.
  void log(const std::string& line) const noexcept;

private:
  std::vector<worker_info> _workers;
  std::unordered_map<std::string, int> _rank_of_name;
  int _rank;
  std::uint64_t _serial; ///< tells this session from every other of the process (never 0)
};

} // namespace mpirpc::detail
