// SPDX-License-Identifier: MIT
// Helpers of the multi-rank tests.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include <mpi.h>

namespace mpirpc_test {
/// Waits for a request without busy-polling inside MPI (oversubscribed ranks need the core).
void wait_for(MPI_Request& request);
/// A barrier that sleeps while it waits.
void barrier(MPI_Comm comm = MPI_COMM_WORLD);
int world_rank();
int world_size();
/// Runs `body` with this process's stderr (fd 2) sent to a temporary file; returns what was
/// written there and echoes it to the real stderr.
std::string capture_stderr(const std::function<void()>& body);

/// The rank to the right of this one, in a ring over MPI_COMM_WORLD.
inline int next_rank() {
  return (world_rank() + 1) % world_size();
}
/// The default worker name of a rank.
inline std::string worker(int rank) {
  return "worker" + std::to_string(rank);
}

/// Polls `condition` with growing sleeps until it holds or `limit` passes; returns it.
template <class Condition> bool eventually(Condition condition, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::microseconds(100);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return condition();
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(5));
  }
  return true;
}

} // namespace mpirpc_test
