// SPDX-License-Identifier: MIT
// lib/core/server: handler slots, the queue of requests that found none, posted tasks.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/server.hpp"

namespace {

namespace detail = mpirpc::detail;

struct recording_hooks final : detail::server_hooks {
  detail::server* owner = nullptr;
  std::vector<int> ran;  ///< sources of the requests run, in order
  int running_seen = -1; ///< slots taken while the last request ran
  int posted = 0;
  void run_queued_request(detail::incoming& m) override {
    ran.push_back(m.source);
    running_seen = owner->running();
  }
  void work_posted() noexcept override { ++posted; }
};

detail::incoming request_from(int source) {
  detail::incoming m;
  m.source = source;
  m.tag = 1;
  return m;
}

struct fixture {
  recording_hooks hooks;
  detail::session session{{{"worker0", 0}}, 0};
  detail::server server{2, hooks, session};
  fixture() { hooks.owner = &server; }
};

} // namespace

TEST_CASE("no more handlers run than there are slots", "[server]") {
  fixture f;
  CHECK(f.server.try_take_slot());
  CHECK(f.server.try_take_slot());
  CHECK_FALSE(f.server.try_take_slot());
  CHECK(f.server.running() == 2);
  f.server.release_slot();
  CHECK(f.server.try_take_slot());
  f.server.release_slot();
  f.server.release_slot();
  CHECK(f.server.running() == 0);
}

TEST_CASE("slots are never over-taken by racing threads", "[server]") {
  fixture f;
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        if (!f.server.try_take_slot()) continue;
        const int now = inside.fetch_add(1) + 1;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        inside.fetch_sub(1);
        f.server.release_slot();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(most.load() <= 2);
  CHECK(f.server.running() == 0);
}

TEST_CASE("queued requests run in order when a slot is free, then posted tasks", "[server]") {
  fixture f;
  CHECK(f.server.queue(request_from(1)));       // the first queued request asks for the warning
  CHECK_FALSE(f.server.queue(request_from(2))); // once
  int task_ran = 0;
  f.server.post([&] { ++task_ran; });
  CHECK(f.hooks.posted == 1);
  CHECK(f.server.queued() == 3);

  REQUIRE(f.server.try_take_slot());
  REQUIRE(f.server.try_take_slot());
  CHECK_FALSE(f.server.work_for_a_free_slot());
  f.server.run_queued(); // no slot: nothing runs
  CHECK(f.hooks.ran.empty());
  f.server.release_slot();
  CHECK(f.server.work_for_a_free_slot());
  f.server.run_queued();
  CHECK(f.hooks.ran == std::vector<int>{1, 2});
  CHECK(f.hooks.running_seen == 2); // each ran holding a slot of its own
  CHECK(task_ran == 1);
  CHECK(f.server.queued() == 0);
  CHECK(f.server.running() == 1); // only the slot taken above
  f.server.release_slot();
}

TEST_CASE("a task that throws is logged, and its slot given back", "[server]") {
  fixture f;
  f.server.post([] { throw std::runtime_error("no luck"); });
  f.server.run_queued();
  CHECK(f.server.running() == 0);
  CHECK(f.server.queued() == 0);
}

TEST_CASE("take_all hands over the requests and drops the tasks", "[server]") {
  fixture f;
  f.server.queue(request_from(3));
  bool ran = false;
  f.server.post([&] { ran = true; });
  const auto unserved = f.server.take_all();
  REQUIRE(unserved.size() == 1);
  CHECK(unserved.front().source == 3);
  CHECK(f.server.queued() == 0);
  f.server.run_queued();
  CHECK_FALSE(ran);
}
