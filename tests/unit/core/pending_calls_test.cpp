// SPDX-License-Identifier: MIT
// lib/core/pending_calls: the room per destination that flow control reserves, and when a
// caller sleeping for room is woken: once a quarter of the window is free, not by every reply.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "core/pending_calls.hpp"

namespace {

namespace detail = mpirpc::detail;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// Fills the window to `dest` with `limit` calls; returns their ids.
std::vector<std::uint64_t> fill(detail::pending_calls& p, int dest, int limit) {
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < limit; ++i) {
    REQUIRE(p.try_reserve(dest, limit));
    detail::pending_call call;
    call.dest = dest;
    ids.push_back(p.insert(std::move(call)));
  }
  CHECK_FALSE(p.try_reserve(dest, limit));
  return ids;
}

/// A thread sleeping in wait_for_room(dest, limit) for up to 10 s.
struct sleeper {
  std::atomic<bool> woke{false};
  std::thread thread;
  sleeper(detail::pending_calls& p, int dest, int limit)
      : thread([&p, dest, limit, this] {
          p.wait_for_room(dest, limit, clock_type::now() + 10s);
          woke = true;
        }) {}
  ~sleeper() { thread.join(); }
  /// Whether it woke within `within`.
  bool wakes(std::chrono::milliseconds within) const {
    const auto until = clock_type::now() + within;
    while (!woke.load() && clock_type::now() < until)
      std::this_thread::sleep_for(1ms);
    return woke.load();
  }
};

} // namespace

TEST_CASE("a caller waiting for room is woken once a quarter of the window is free") {
  detail::pending_calls p(3);
  const int limit = 8; // wakes at 8 - 2 = 6 outstanding
  std::vector<std::uint64_t> ids = fill(p, 1, limit);
  sleeper s(p, 1, limit);
  std::this_thread::sleep_for(20ms);
  CHECK(p.take(ids[0]));
  CHECK_FALSE(s.wakes(100ms)); // one reply: 7 outstanding, still asleep
  CHECK(p.outstanding(1) == 7);
  CHECK(p.take(ids[1]));
  CHECK(s.wakes(2000ms)); // 6 outstanding: a quarter free
  CHECK(p.try_reserve(1, limit));
  CHECK(p.try_reserve(1, limit));
  CHECK_FALSE(p.try_reserve(1, limit));
}

TEST_CASE("replies from another destination do not wake a caller waiting for room") {
  detail::pending_calls p(3);
  std::vector<std::uint64_t> to_1 = fill(p, 1, 4);
  std::vector<std::uint64_t> to_2 = fill(p, 2, 4);
  sleeper s(p, 1, 4);
  std::this_thread::sleep_for(20ms);
  for (std::uint64_t id : to_2)
    CHECK(p.take(id));
  CHECK_FALSE(s.wakes(100ms));
  CHECK(p.take(to_1[3]));
  CHECK(s.wakes(2000ms)); // limits below 8: one free slot wakes, as before
}

TEST_CASE("a small window wakes its caller at the first free slot; stop wakes it too") {
  detail::pending_calls p(2);
  std::vector<std::uint64_t> ids = fill(p, 1, 1);
  {
    sleeper s(p, 1, 1);
    std::this_thread::sleep_for(20ms);
    CHECK(p.take(ids[0]));
    CHECK(s.wakes(2000ms));
  }
  fill(p, 1, 4);
  sleeper s(p, 1, 4);
  std::this_thread::sleep_for(20ms);
  CHECK(p.take_all().size() == 4); // as stop() does
  CHECK(s.wakes(2000ms));
}

TEST_CASE("a wait for room ends at its deadline, and at once without a limit") {
  detail::pending_calls p(2);
  fill(p, 1, 2);
  auto start = clock_type::now();
  p.wait_for_room(1, 2, start + 50ms);
  CHECK(clock_type::now() - start >= 50ms);
  start = clock_type::now();
  p.wait_for_room(1, 0, start + 10s);
  CHECK(clock_type::now() - start < 5s);
}
