// SPDX-License-Identifier: MIT
// init_rpc() on an MPI that the application initialised without MPI_THREAD_MULTIPLE: a clear
// init_error, and MPI left as the application set it up. Its own main: MPI is initialised
// here with MPI_THREAD_FUNNELED.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

#include <mpirpc/mpirpc.hpp>

TEST_CASE("init_rpc refuses an MPI without MPI_THREAD_MULTIPLE", "[runtime]") {
  int provided = 0;
  MPI_Query_thread(&provided);
  REQUIRE(provided < MPI_THREAD_MULTIPLE);
  CHECK_THROWS_AS(mpirpc::init_rpc(), mpirpc::init_error);
  CHECK_THROWS_WITH(mpirpc::init_rpc(), Catch::Contains("needs MPI_THREAD_MULTIPLE") &&
                                            Catch::Contains("MPI_Init_thread"));
  CHECK_FALSE(mpirpc::is_running());
  int finalized = 1;
  MPI_Finalized(&finalized);
  CHECK_FALSE(finalized); // the application's MPI is untouched
}

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  const int result = Catch::Session().run(argc, argv);
  MPI_Finalize();
  return result;
}
