// SPDX-License-Identifier: MIT
// Test handlers whose replies are held: park() returns a future that only release_parked()
// completes. Include in one source file of a test executable and register what it calls.
#pragma once

#include <mutex>
#include <vector>

#include <mpirpc/future.hpp>

namespace mpirpc_test {

inline std::mutex& parked_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<mpirpc::future<int>>& parked() {
  static std::vector<mpirpc::future<int>> futures;
  return futures;
}

/// An async-execution handler: its reply waits until release_parked() runs on this rank.
inline mpirpc::future<int> park() {
  mpirpc::future<int> result;
  std::lock_guard<std::mutex> lock(parked_mutex());
  parked().push_back(result);
  return result;
}

inline int parked_count() {
  std::lock_guard<std::mutex> lock(parked_mutex());
  return static_cast<int>(parked().size());
}

/// Completes every parked future with `value`; returns how many there were.
inline int release_parked(int value) {
  std::vector<mpirpc::future<int>> ready;
  {
    std::lock_guard<std::mutex> lock(parked_mutex());
    ready.swap(parked());
  }
  for (auto& f : ready)
    f.set_result(value);
  return static_cast<int>(ready.size());
}

} // namespace mpirpc_test
