// SPDX-License-Identifier: MIT
// Helpers of the multi-rank tests.
#pragma once

#include <mpi.h>

namespace mpirpc_test {
/// Waits for a request without busy-polling inside MPI (oversubscribed ranks need the core).
void wait_for(MPI_Request& request);
/// A barrier that sleeps while it waits.
void barrier(MPI_Comm comm = MPI_COMM_WORLD);
int world_rank();
int world_size();
} // namespace mpirpc_test
