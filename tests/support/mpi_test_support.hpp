// SPDX-License-Identifier: MIT
// Helpers of the multi-rank tests.
#pragma once

#include <functional>
#include <string>

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
} // namespace mpirpc_test
