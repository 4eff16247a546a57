// SPDX-License-Identifier: MIT
// lib/core/session: how a destination resolves, and that the per-thread memory of the last name
// resolved never answers for another session.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <mpirpc/errors.hpp>

#include "core/session.hpp"

namespace {
namespace detail = mpirpc::detail;

std::vector<mpirpc::worker_info> workers(std::vector<std::string> names) {
  std::vector<mpirpc::worker_info> out;
  for (std::size_t i = 0; i < names.size(); ++i)
    out.push_back(mpirpc::worker_info{names[i], static_cast<int>(i)});
  return out;
}
} // namespace

TEST_CASE("names, ranks and worker_infos resolve; unknown ones are refused") {
  const detail::session s(workers({"a", "b", "c"}), 0);
  CHECK(s.resolve(std::string("b")) == 1);
  CHECK(s.resolve(std::string("b")) == 1); // again, from the thread's memory
  CHECK(s.resolve(std::string("c")) == 2);
  CHECK(s.resolve(2) == 2);
  CHECK(s.resolve(mpirpc::worker_info{"a", 0}) == 0);
  CHECK_THROWS_AS(s.resolve(std::string("d")), mpirpc::unknown_worker_error);
  CHECK(s.resolve(std::string("c")) == 2); // a refused name leaves the memory as it was
  CHECK_THROWS_AS(s.resolve(3), mpirpc::unknown_worker_error);
  CHECK_THROWS_AS(s.resolve(mpirpc::worker_info{"a", 1}), mpirpc::unknown_worker_error);
}

TEST_CASE("a later session, even at the same address, never answers from an earlier one") {
  for (int round = 0; round < 3; ++round) {
    // The same names at other ranks each round; each session likely reuses the last one's
    // storage.
    const std::vector<std::string> names =
        round % 2 == 0 ? std::vector<std::string>{"x", "y"} : std::vector<std::string>{"y", "x"};
    const detail::session s(workers(names), 0);
    CHECK(s.resolve(std::string("y")) == (round % 2 == 0 ? 1 : 0));
    CHECK(s.resolve(std::string("y")) == (round % 2 == 0 ? 1 : 0));
  }
  const detail::session only_x(workers({"x"}), 0);
  CHECK_THROWS_AS(only_x.resolve(std::string("y")), mpirpc::unknown_worker_error);
}
