// SPDX-License-Identifier: MIT
// mpirpc/errors.hpp: the exception tree, remote_error's accessors and mpi_error's code and text.
#include <catch2/catch.hpp>

#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <mpi.h>

#include <mpirpc/errors.hpp>

namespace {

template <class E>
constexpr bool in_tree_v =
    std::is_base_of_v<mpirpc::error, E>&& std::is_base_of_v<std::runtime_error, E>&&
        std::is_convertible_v<E*, mpirpc::error*>&& std::is_convertible_v<E*, std::runtime_error*>;

static_assert(std::is_base_of_v<std::runtime_error, mpirpc::error>);
static_assert(in_tree_v<mpirpc::remote_error>);
static_assert(in_tree_v<mpirpc::timeout_error>);
static_assert(in_tree_v<mpirpc::unknown_function_error>);
static_assert(in_tree_v<mpirpc::unknown_worker_error>);
static_assert(in_tree_v<mpirpc::shutdown_error>);
static_assert(in_tree_v<mpirpc::init_error>);
static_assert(in_tree_v<mpirpc::serialization_error>);
static_assert(in_tree_v<mpirpc::future_error>);
static_assert(in_tree_v<mpirpc::mpi_error>);

// Siblings are distinct: catching one kind never catches another.
static_assert(!std::is_base_of_v<mpirpc::timeout_error, mpirpc::shutdown_error>);
static_assert(!std::is_base_of_v<mpirpc::shutdown_error, mpirpc::timeout_error>);
static_assert(!std::is_base_of_v<mpirpc::remote_error, mpirpc::serialization_error>);

// Accessors do not throw.
static_assert(noexcept(std::declval<const mpirpc::remote_error&>().origin_worker()));
static_assert(noexcept(std::declval<const mpirpc::remote_error&>().remote_type()));
static_assert(noexcept(std::declval<const mpirpc::remote_error&>().remote_message()));
static_assert(noexcept(std::declval<const mpirpc::mpi_error&>().code()));

/// Throws `e` and reports what a catch of mpirpc::error sees, proving the dynamic path.
template <class E> std::string caught_as_error(E e) {
  try {
    throw e;
  } catch (const mpirpc::error& caught) {
    CHECK(dynamic_cast<const E*>(&caught) != nullptr);
    return caught.what();
  } catch (...) {
    FAIL("not caught as mpirpc::error");
  }
  return {};
}

} // namespace

TEST_CASE("every message-only error keeps its message and is caught as mpirpc::error", "[errors]") {
  CHECK(caught_as_error(mpirpc::error("root")) == "root");
  CHECK(caught_as_error(mpirpc::timeout_error("slow")) == "slow");
  CHECK(caught_as_error(mpirpc::unknown_function_error("no fn")) == "no fn");
  CHECK(caught_as_error(mpirpc::unknown_worker_error("no worker")) == "no worker");
  CHECK(caught_as_error(mpirpc::shutdown_error("stopped")) == "stopped");
  CHECK(caught_as_error(mpirpc::init_error("bad start")) == "bad start");
  CHECK(caught_as_error(mpirpc::serialization_error("bad bytes")) == "bad bytes");
  CHECK(caught_as_error(mpirpc::future_error("misuse")) == "misuse");
  CHECK(caught_as_error(mpirpc::remote_error("w", "T", "m")).find("w") != std::string::npos);
  CHECK(caught_as_error(mpirpc::mpi_error("MPI_Send", 1, "x")).find("MPI_Send") !=
        std::string::npos);
}

TEST_CASE("mpirpc errors are std::runtime_errors and std::exceptions", "[errors]") {
  CHECK_THROWS_AS(throw mpirpc::timeout_error("t"), std::runtime_error);
  CHECK_THROWS_AS(throw mpirpc::init_error("i"), std::exception);
  CHECK_THROWS_AS(throw mpirpc::remote_error("w", "T", "m"), std::runtime_error);
  CHECK_THROWS_AS(throw mpirpc::mpi_error("MPI_Recv", 3, "text"), std::runtime_error);
  CHECK_THROWS_WITH(throw mpirpc::shutdown_error("gone"), "gone");
}

TEST_CASE("catching a sibling type does not catch another kind", "[errors]") {
  bool caught_by_wrong_handler = false;
  bool caught_by_right_handler = false;
  try {
    try {
      throw mpirpc::shutdown_error("stopped");
    } catch (const mpirpc::timeout_error&) {
      caught_by_wrong_handler = true;
    }
  } catch (const mpirpc::shutdown_error&) {
    caught_by_right_handler = true;
  }
  CHECK_FALSE(caught_by_wrong_handler);
  CHECK(caught_by_right_handler);
}

TEST_CASE("remote_error carries the worker, type and message", "[errors]") {
  const mpirpc::remote_error e("worker3", "std::out_of_range", "vector index 9 >= 4");
  CHECK(e.origin_worker() == "worker3");
  CHECK(e.remote_type() == "std::out_of_range");
  CHECK(e.remote_message() == "vector index 9 >= 4");
  const std::string what = e.what();
  CHECK_THAT(what, Catch::Contains("worker3"));
  CHECK_THAT(what, Catch::Contains("std::out_of_range"));
  CHECK_THAT(what, Catch::Contains("vector index 9 >= 4"));
  // The worker and type come before the message.
  CHECK(what.find("worker3") < what.find("vector index 9 >= 4"));
  CHECK(what.find("std::out_of_range") < what.find("vector index 9 >= 4"));
}

TEST_CASE("remote_error without a message still names worker and type", "[errors]") {
  const mpirpc::remote_error e("trainer", "int", "");
  CHECK(e.remote_message().empty());
  const std::string what = e.what();
  CHECK_THAT(what, Catch::Contains("trainer") && Catch::Contains("int"));
  CHECK_THAT(what, !Catch::EndsWith(": "));
}

TEST_CASE("remote_error survives copying and rethrow through exception_ptr", "[errors]") {
  std::exception_ptr p;
  try {
    throw mpirpc::remote_error("ps0", "my::custom_error", "boom");
  } catch (...) {
    p = std::current_exception();
  }
  REQUIRE(p);
  try {
    std::rethrow_exception(p);
  } catch (const mpirpc::remote_error& e) {
    const mpirpc::remote_error copy = e;
    CHECK(copy.origin_worker() == "ps0");
    CHECK(copy.remote_type() == "my::custom_error");
    CHECK(copy.remote_message() == "boom");
    CHECK(std::string(copy.what()) == e.what());
  }
}

TEST_CASE("mpi_error carries the code and MPI's text", "[errors]") {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  REQUIRE(MPI_Error_string(MPI_ERR_RANK, text, &length) == MPI_SUCCESS);
  const std::string mpi_text(text, static_cast<std::size_t>(length));
  REQUIRE_FALSE(mpi_text.empty());

  const mpirpc::mpi_error e("MPI_Isend", MPI_ERR_RANK, mpi_text);
  CHECK(e.code() == MPI_ERR_RANK);
  const std::string what = e.what();
  CHECK_THAT(what, Catch::Contains("MPI_Isend"));
  CHECK_THAT(what, Catch::Contains(mpi_text));
  CHECK_THAT(what, Catch::Contains(std::to_string(MPI_ERR_RANK)));

  const mpirpc::mpi_error other("MPI_Comm_dup", MPI_ERR_COMM, "invalid communicator");
  CHECK(other.code() == MPI_ERR_COMM);
  CHECK(other.code() != e.code());
  CHECK_THAT(std::string(other.what()),
             Catch::Contains("MPI_Comm_dup") && Catch::Contains("invalid communicator"));
}
