// SPDX-License-Identifier: MIT
// Catch2 main of the single-process tests. MPI is initialised (as a singleton, no launcher)
// because Boost.MPI's packed archives need it.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  const int result = Catch::Session().run(argc, argv);
  MPI_Finalize();
  return result;
}
