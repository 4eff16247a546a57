// SPDX-License-Identifier: MIT
// Ranks whose registries differ: rank 0 registers a function at run time that the other ranks
// lack. Start-up warns; calling it on a rank that lacks it fails with unknown_function_error,
// and so does a remote reference to what it was to create.
// Its own executable, because the extra registration stays in this process's registry.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"

namespace {

int add(int a, int b) {
  return a + b;
}
int only_on_rank0(int x) {
  return x * 3;
}
int read_ref(mpirpc::rref<int> ref) {
  return ref.to_here();
}
int late_function(int x) {
  return x;
}

std::string worker(int rank) {
  return "worker" + std::to_string(rank);
}

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER(read_ref);

TEST_CASE("a function registered on rank 0 only fails elsewhere with unknown_function_error",
          "[registry]") {
  const int rank = mpirpc_test::world_rank();
  const int size = mpirpc_test::world_size();
  if (rank == 0) mpirpc::register_function("only_on_rank0", only_on_rank0);
  CHECK(mpirpc::registered_name(only_on_rank0) == (rank == 0 ? "only_on_rank0" : ""));

  std::unique_ptr<mpirpc::runtime> rt;
  if (rank == 0) {
    const std::string warning =
        mpirpc_test::capture_stderr([&] { rt = std::make_unique<mpirpc::runtime>(); });
    // Rank 0 warns about the ranks whose registries differ from its own.
    CHECK_THAT(warning, Catch::Contains("warning") && Catch::Contains("differ"));
    for (int r = 1; r < size; ++r)
      CHECK_THAT(warning, Catch::Contains(worker(r)));
  } else {
    rt = std::make_unique<mpirpc::runtime>();
  }

  if (rank == 0) {
    for (int r = 1; r < size; ++r) {
      try {
        mpirpc::rpc_sync(r, only_on_rank0, 5);
        FAIL("no exception");
      } catch (const mpirpc::unknown_function_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("only_on_rank0") && Catch::Contains(worker(r)));
      }
      // Through a future as well; it is an mpirpc::error.
      auto f = mpirpc::rpc_async(worker(r), only_on_rank0, 6);
      CHECK_THROWS_AS(f.wait(), mpirpc::error);
      CHECK_THROWS_AS(f.value(), mpirpc::unknown_function_error);
    }
    // Rank 0 has the function, so calling itself works.
    CHECK(mpirpc::rpc_sync(0, only_on_rank0, 5) == 15);
  } else {
    // Elsewhere the function is not registered: the call fails at the call site.
    CHECK_THROWS_AS(mpirpc::rpc_sync(0, only_on_rank0, 5), mpirpc::unknown_function_error);
    CHECK_THROWS_WITH(mpirpc::rpc_async(0, only_on_rank0, 5), Catch::Contains("MPIRPC_REGISTER"));
  }
  // remote() of it: the owner lacks the function, so the reference fails at once, right after
  // remote() as later, with unknown_function_error (not after the call's timeout), and the
  // failed object goes away with its references.
  if (rank == 0) {
    for (int r = 1; r < size; ++r) {
      mpirpc::rref<int> ref = mpirpc::remote(r, only_on_rank0, 7);
      const auto start = std::chrono::steady_clock::now();
      try {
        ref.to_here(std::chrono::seconds(20));
        FAIL("to_here() of an object that was never created returned");
      } catch (const mpirpc::unknown_function_error& e) {
        CHECK_THAT(e.what(), Catch::Contains(worker(r)) && Catch::Contains("never created"));
      }
      CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
      CHECK_THROWS_AS(ref.to_here(), mpirpc::unknown_function_error);
      // Passed at once to its owner, where to_here() reads the failed object itself.
      mpirpc::rref<int> again = mpirpc::remote(r, only_on_rank0, 8);
      CHECK_THROWS_AS(mpirpc::rpc_sync(r, read_ref, again), mpirpc::unknown_function_error);
    }
  }
  mpirpc::barrier(); // every reference is gone on rank 0, its releases handled by the owners
  CHECK(mpirpc::stats().rref_owned_objects == 0);
  CHECK(mpirpc::stats().rref_references == 0);

  // Functions every rank has still work, in every direction.
  for (int r = 0; r < size; ++r)
    CHECK(mpirpc::rpc_sync(r, add, rank, r) == rank + r);

  // Registering while the runtime runs is refused.
  CHECK_THROWS_AS(mpirpc::register_function("late_function", late_function), mpirpc::init_error);
  CHECK_THROWS_WITH(mpirpc::register_function("late_function", late_function),
                    Catch::Contains("late_function") && Catch::Contains("init_rpc"));
  CHECK(mpirpc::registered_name(late_function).empty());
  rt.reset();
}

TEST_CASE("two different functions under one name fail the start on every rank", "[registry]") {
  // Rank 0 registers a second function as "add"; every rank must refuse to start.
  const int rank = mpirpc_test::world_rank();
  if (rank == 0) mpirpc::register_function("add", only_on_rank0);
  std::string message;
  try {
    mpirpc::init_rpc();
    mpirpc::shutdown(false); // started although it must not: fail without hanging
  } catch (const mpirpc::init_error& e) {
    message = e.what();
  }
  INFO("init_error: " << message);
  CHECK_THAT(message, Catch::Contains("rank 0") && Catch::Contains("conflicting"));
  CHECK_FALSE(mpirpc::is_running());
}
