// SPDX-License-Identifier: MIT
// mpirpc/future.hpp without a runtime: completion, callbacks, then(), errors, collect_all.
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpirpc/future.hpp>

using mpirpc::future;
using mpirpc::future_error;

TEST_CASE("a new future is not done and value() refuses", "[future]") {
  future<int> f;
  CHECK_FALSE(f.done());
  CHECK_THROWS_WITH(f.value(), Catch::Contains("before the future completed"));
}

TEST_CASE("set_result completes once; a second completion is an error", "[future]") {
  future<int> f;
  f.set_result(7);
  CHECK(f.done());
  CHECK(f.value() == 7);
  CHECK(f.wait() == 7);
  CHECK_THROWS_AS(f.set_result(8), future_error);
  CHECK_THROWS_WITH(f.set_result(8), Catch::Contains("already completed"));
  CHECK_THROWS_AS(f.set_exception(std::runtime_error("late")), future_error);
  CHECK(f.value() == 7);
}

TEST_CASE("set_exception makes wait and value rethrow the original type", "[future]") {
  future<std::string> f;
  f.set_exception(std::out_of_range("index 9"));
  CHECK(f.done());
  CHECK_THROWS_AS(f.wait(), std::out_of_range);
  CHECK_THROWS_WITH(f.value(), "index 9");
  CHECK_THROWS_AS(f.set_result("x"), future_error);
  CHECK_THROWS_AS(f.set_exception(std::current_exception()), future_error);
}

TEST_CASE("future<void> completes without a value", "[future]") {
  future<void> f;
  CHECK_FALSE(f.done());
  f.set_result();
  CHECK(f.done());
  CHECK_NOTHROW(f.wait());
  CHECK_THROWS_AS(f.set_result(), future_error);
}

TEST_CASE("copies share one state", "[future]") {
  future<int> a;
  future<int> b = a;
  b.set_result(3);
  CHECK(a.done());
  CHECK(a.value() == 3);
}

TEST_CASE("add_done_callback runs exactly once, now or on completion", "[future]") {
  future<int> f;
  int calls = 0;
  int seen = 0;
  f.add_done_callback([&](future<int> done) {
    ++calls;
    seen = done.value();
  });
  CHECK(calls == 0);
  f.set_result(5);
  CHECK(calls == 1);
  CHECK(seen == 5);
  int late = 0;
  f.add_done_callback([&](const future<int>& done) { late = done.value() + 1; });
  CHECK(late == 6);
  CHECK(calls == 1);
}

TEST_CASE("a throwing done-callback does not stop the others", "[future]") {
  future<int> f;
  int after = 0;
  f.add_done_callback([](const future<int>&) { throw std::runtime_error("callback failed"); });
  f.add_done_callback([&](const future<int>&) { ++after; });
  CHECK_NOTHROW(f.set_result(1));
  CHECK(after == 1);
}

TEST_CASE("then passes the completed future and returns a future of the result", "[future]") {
  future<int> f;
  future<double> g = f.then([](future<int> done) { return done.wait() * 1.5; });
  CHECK_FALSE(g.done());
  f.set_result(2);
  REQUIRE(g.done());
  CHECK(g.value() == 3.0);
}

TEST_CASE("then on a failed future: the callback sees the error, which propagates", "[future]") {
  future<int> f;
  bool called = false;
  future<int> g = f.then([&](future<int> done) {
    called = true;
    return done.wait() + 1; // rethrows
  });
  f.set_exception(std::invalid_argument("bad input"));
  CHECK(called);
  CHECK_THROWS_AS(g.value(), std::invalid_argument);
}

TEST_CASE("then can recover from an error", "[future]") {
  future<int> f;
  future<int> g = f.then([](future<int> done) {
    try {
      return done.wait();
    } catch (const std::exception&) {
      return -1;
    }
  });
  f.set_exception(std::runtime_error("x"));
  CHECK(g.value() == -1);
}

TEST_CASE("then flattens a returned future", "[future]") {
  future<int> f;
  future<std::string> inner;
  future<std::string> g = f.then([&](future<int>) { return inner; });
  static_assert(std::is_same_v<decltype(g), future<std::string>>);
  f.set_result(1);
  CHECK_FALSE(g.done());
  inner.set_result("flat");
  REQUIRE(g.done());
  CHECK(g.value() == "flat");
}

TEST_CASE("then flattens a failed inner future", "[future]") {
  future<int> f;
  future<int> inner;
  auto g = f.then([&](future<int>) { return inner; });
  f.set_result(1);
  inner.set_exception(std::logic_error("inner failed"));
  CHECK_THROWS_AS(g.value(), std::logic_error);
}

TEST_CASE("then with a void callback gives future<void>", "[future]") {
  future<int> f;
  int seen = 0;
  future<void> g = f.then([&](future<int> done) { seen = done.value(); });
  f.set_result(4);
  CHECK(g.done());
  CHECK(seen == 4);
}

TEST_CASE("then on an already completed future runs at once on this thread", "[future]") {
  future<int> f;
  f.set_result(10);
  const auto me = std::this_thread::get_id();
  std::thread::id ran_on;
  auto g = f.then([&](future<int> done) {
    ran_on = std::this_thread::get_id();
    return done.value() * 2;
  });
  CHECK(g.done());
  CHECK(g.value() == 20);
  CHECK(ran_on == me);
}

TEST_CASE("a callback that throws fails the future returned by then", "[future]") {
  future<int> f;
  auto g = f.then([](future<int>) -> int { throw std::domain_error("in callback"); });
  f.set_result(1);
  CHECK_THROWS_AS(g.wait(), std::domain_error);
}

TEST_CASE("set_result from another thread wakes a waiting thread", "[future]") {
  future<int> f;
  std::thread setter([f]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    f.set_result(42);
  });
  CHECK(f.wait() == 42);
  setter.join();
}

TEST_CASE("set_exception from another thread wakes a waiting thread", "[future]") {
  future<void> f;
  std::thread setter([f]() mutable {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    f.set_exception(std::runtime_error("from thread"));
  });
  CHECK_THROWS_WITH(f.wait(), "from thread");
  setter.join();
}

TEST_CASE("racing completions: exactly one wins, callbacks run once", "[future]") {
  for (int round = 0; round < 200; ++round) {
    future<int> f;
    std::atomic<int> callbacks{0};
    f.add_done_callback([&](const future<int>&) { callbacks.fetch_add(1); });
    std::atomic<int> winners{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t]() mutable {
        try {
          f.set_result(t);
          winners.fetch_add(1);
        } catch (const future_error&) {
        }
      });
    }
    for (auto& t : threads)
      t.join();
    REQUIRE(winners.load() == 1);
    REQUIRE(callbacks.load() == 1);
  }
}

TEST_CASE("collect_all completes when all complete and keeps their errors", "[future]") {
  std::vector<future<int>> fs(3);
  auto all = mpirpc::collect_all(fs);
  fs[0].set_result(1);
  fs[2].set_exception(std::runtime_error("third"));
  CHECK_FALSE(all.done());
  fs[1].set_result(2);
  REQUIRE(all.done());
  const auto& listed = all.value();
  REQUIRE(listed.size() == 3);
  CHECK(listed[0].value() == 1);
  CHECK(listed[1].value() == 2);
  CHECK_THROWS_WITH(listed[2].value(), "third");
}

TEST_CASE("collect_all of nothing is done at once", "[future]") {
  auto all = mpirpc::collect_all(std::vector<future<int>>{});
  CHECK(all.done());
  CHECK(all.value().empty());
}

TEST_CASE("wait_all returns the values in order", "[future]") {
  std::vector<future<int>> fs(3);
  std::thread setter([fs]() mutable {
    for (int i = 2; i >= 0; --i)
      fs[static_cast<std::size_t>(i)].set_result(i * 10);
  });
  auto values = mpirpc::wait_all(fs);
  setter.join();
  CHECK(values == std::vector<int>{0, 10, 20});
}

TEST_CASE("wait_all rethrows the first error in list order", "[future]") {
  std::vector<future<int>> fs(3);
  fs[0].set_result(0);
  fs[1].set_exception(std::runtime_error("second"));
  fs[2].set_exception(std::logic_error("third"));
  CHECK_THROWS_AS(mpirpc::wait_all(fs), std::runtime_error);
}

TEST_CASE("wait_all of future<void>", "[future]") {
  std::vector<future<void>> fs(2);
  fs[0].set_result();
  fs[1].set_result();
  CHECK_NOTHROW(mpirpc::wait_all(fs));
}

TEST_CASE("set_exception with a null pointer is refused", "[future]") {
  future<int> f;
  CHECK_THROWS_AS(f.set_exception(std::exception_ptr()), future_error);
  CHECK_FALSE(f.done());
}

TEST_CASE("a future captured by copy in a non-mutable lambda can be completed", "[future]") {
  future<int> source;
  future<int> result;
  source.add_done_callback([result](future<int> done) { result.set_result(done.value() + 1); });
  const future<void> flag;
  source.set_result(1);
  CHECK(result.value() == 2);
  flag.set_result();
  CHECK(flag.done());
}
