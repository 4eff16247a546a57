// SPDX-License-Identifier: MIT
// mpirpc/rref.hpp without a running runtime: empty references, what travels, and calls made
// before init_rpc (the multi-rank behaviour is in tests/mpi/rref_test.cpp).
#include <catch2/catch.hpp>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <mpirpc/mpirpc.hpp>

namespace {

/// Not serializable (a mutex), but it can live on an owner and be referenced.
struct guarded {
  std::mutex lock;
  int value = 0;
  guarded() = default;
  guarded(guarded&& other) noexcept : value(other.value) {}
  int get() const { return value; }
};

struct point {
  int x = 0;
  int y = 0;
};

} // namespace

MPIRPC_REGISTER_CONSTRUCTOR(guarded);
MPIRPC_REGISTER_CONSTRUCTOR(point, int, int);
MPIRPC_REGISTER_METHOD(guarded::get);

using Catch::Contains;

TEST_CASE("an rref travels whatever its value type, alone and in containers", "[rref]") {
  STATIC_REQUIRE(mpirpc::is_serializable_v<mpirpc::rref<guarded>>);
  STATIC_REQUIRE_FALSE(mpirpc::is_serializable_v<guarded>);
  STATIC_REQUIRE(mpirpc::is_serializable_v<std::vector<mpirpc::rref<guarded>>>);
  STATIC_REQUIRE(mpirpc::is_serializable_v<std::optional<mpirpc::rref<point>>>);
  STATIC_REQUIRE(mpirpc::is_serializable_v<std::map<std::string, mpirpc::rref<point>>>);
}

TEST_CASE("an empty rref is false and every use throws error naming the cause", "[rref]") {
  mpirpc::rref<point> r;
  CHECK_FALSE(r);
  CHECK_THROWS_AS(r.to_here(), mpirpc::error);
  CHECK_THROWS_WITH(r.to_here(), Contains("empty rref"));
  CHECK_THROWS_WITH(r.owner(), Contains("empty rref"));
  CHECK_THROWS_WITH(r.is_owner(), Contains("empty rref"));
  CHECK_THROWS_WITH(r.confirmed_by_owner(), Contains("empty rref"));
  CHECK_THROWS_WITH(r.local_value(), Contains("empty rref"));
  mpirpc::rref<guarded> g;
  CHECK_THROWS_WITH(g.rpc_sync(&guarded::get), Contains("empty rref"));
  CHECK_THROWS_WITH(g.rpc_async(&guarded::get), Contains("empty rref"));
  CHECK_THROWS_WITH(g.remote(&guarded::get), Contains("empty rref"));
  // A moved-from reference is empty too; copies of an empty one are empty.
  mpirpc::rref<point> copy = r;
  CHECK_FALSE(copy);
}

TEST_CASE("remote() before init_rpc throws shutdown_error at the call site", "[rref]") {
  REQUIRE_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::remote("worker0", mpirpc::construct<point, int, int>, 1, 2),
                  mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::remote(0, mpirpc::construct<guarded>), Contains("init_rpc"));
}

TEST_CASE("construct<T, P...> builds a T and is registered under its spelled name", "[rref]") {
  const point p = mpirpc::construct<point, int, int>(3, 4);
  CHECK(p.x == 3);
  CHECK(p.y == 4);
  CHECK(mpirpc::registered_name(&mpirpc::construct<point, int, int>) ==
        "mpirpc::construct<point, int, int>");
  CHECK(mpirpc::registered_name(&mpirpc::construct<guarded>) == "mpirpc::construct<guarded>");
}
