// SPDX-License-Identifier: MIT
// mpirpc/runtime.hpp without mpiexec: calls before init, and sessions on one rank (a singleton).
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpirpc/mpirpc.hpp>

namespace {

int add(int a, int b) {
  return a + b;
}
std::string whoami() {
  return mpirpc::get_worker_info().name;
}
std::vector<int> iota_vector(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = i;
  return v;
}
int throws_out_of_range(int i) {
  throw std::out_of_range("index " + std::to_string(i));
}
int sleepy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int unregistered(int x) {
  return x;
}

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER(whoami);
MPIRPC_REGISTER(iota_vector);
MPIRPC_REGISTER(throws_out_of_range);
MPIRPC_REGISTER(sleepy);

TEST_CASE("before init_rpc every call throws shutdown_error naming init_rpc", "[runtime]") {
  REQUIRE_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::rpc_sync("worker0", add, 1, 2), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::rpc_sync("worker0", add, 1, 2), Catch::Contains("init_rpc"));
  CHECK_THROWS_AS(mpirpc::rpc_async(0, add, 1, 2), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::rpc_async(0, add, 1, 2), Catch::Contains("init_rpc"));
  CHECK_THROWS_AS(mpirpc::get_worker_info(), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::get_worker_info(), Catch::Contains("init_rpc"));
  CHECK_THROWS_AS(mpirpc::get_worker_info("worker0"), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::get_worker_infos(), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::stats(), mpirpc::shutdown_error);
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("shutdown when not running does nothing", "[runtime]") {
  REQUIRE_FALSE(mpirpc::is_running());
  CHECK_NOTHROW(mpirpc::shutdown());
  CHECK_NOTHROW(mpirpc::shutdown(false));
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("a single-process session: worker0, self calls, errors", "[runtime]") {
  mpirpc::runtime rt; // RAII: a failed REQUIRE still shuts the session down
  REQUIRE(mpirpc::is_running());

  SECTION("this worker and the worker list") {
    const mpirpc::worker_info self = mpirpc::get_worker_info();
    CHECK(self.name == "worker0");
    CHECK(self.id == 0);
    const std::vector<mpirpc::worker_info> all = mpirpc::get_worker_infos();
    REQUIRE(all.size() == 1);
    CHECK(all[0] == self);
    CHECK(mpirpc::get_worker_info("worker0") == self);
  }
  SECTION("a self call by name, rank and worker_info") {
    CHECK(mpirpc::rpc_sync("worker0", add, 1, 2) == 3);
    CHECK(mpirpc::rpc_sync(0, add, 40, 2) == 42);
    CHECK(mpirpc::rpc_sync(mpirpc::get_worker_info(), add, -1, 1) == 0);
    CHECK(mpirpc::rpc_sync(std::string("worker0"), whoami) == "worker0");
    mpirpc::future<int> f = mpirpc::rpc_async(0, add, 5, 6);
    CHECK(f.wait() == 11);
    CHECK(f.done());
  }
  SECTION("a large result comes back intact") {
    const int n = static_cast<int>(mpirpc::large_payload_threshold / sizeof(int)) * 3;
    const std::vector<int> v = mpirpc::rpc_sync(0, iota_vector, n);
    REQUIRE(v.size() == static_cast<std::size_t>(n));
    CHECK(v.front() == 0);
    CHECK(v[12345] == 12345);
    CHECK(v.back() == n - 1);
  }
  SECTION("counters move") {
    const mpirpc::runtime_stats before = mpirpc::stats();
    CHECK(mpirpc::rpc_sync(0, add, 2, 2) == 4);
    const mpirpc::runtime_stats after = mpirpc::stats();
    CHECK(after.requests_sent == before.requests_sent + 1);
    CHECK(after.requests_served == before.requests_served + 1);
    CHECK(after.replies_received == before.replies_received + 1);
  }
  SECTION("a throwing handler comes back as remote_error") {
    try {
      mpirpc::rpc_sync(0, throws_out_of_range, 9);
      FAIL("no exception");
    } catch (const mpirpc::remote_error& e) {
      CHECK(e.origin_worker() == "worker0");
      CHECK(e.remote_type() == "std::out_of_range");
      CHECK(e.remote_message() == "index 9");
    }
  }
  SECTION("unknown destinations and functions fail at the call site") {
    CHECK_THROWS_AS(mpirpc::rpc_sync("nobody", add, 1, 2), mpirpc::unknown_worker_error);
    CHECK_THROWS_WITH(mpirpc::rpc_sync("nobody", add, 1, 2), Catch::Contains("nobody"));
    CHECK_THROWS_AS(mpirpc::rpc_sync(1, add, 1, 2), mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::rpc_sync(-1, add, 1, 2), mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::rpc_sync(mpirpc::worker_info{"worker0", 3}, add, 1, 2),
                    mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::get_worker_info("nobody"), mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::rpc_sync(0, unregistered, 1), mpirpc::unknown_function_error);
  }
  SECTION("a per-call timeout") {
    mpirpc::future<int> f =
        mpirpc::rpc_async(0, sleepy, 400, mpirpc::timeout(std::chrono::milliseconds(50)));
    CHECK_THROWS_AS(f.wait(), mpirpc::timeout_error);
    CHECK(mpirpc::rpc_sync(0, sleepy, 1, mpirpc::timeout(std::chrono::seconds(30))) == 1);
  }

  rt.shutdown();
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("a custom worker name through options or init_rpc(name)", "[runtime]") {
  SECTION("options::name") {
    mpirpc::options opts;
    opts.name = "trainer-1";
    mpirpc::runtime rt(opts);
    CHECK(mpirpc::get_worker_info().name == "trainer-1");
    CHECK(mpirpc::rpc_sync("trainer-1", whoami) == "trainer-1");
    CHECK_THROWS_AS(mpirpc::rpc_sync("worker0", add, 1, 1), mpirpc::unknown_worker_error);
  }
  SECTION("runtime(name)") {
    mpirpc::runtime rt("ps:main");
    CHECK(mpirpc::get_worker_info().name == "ps:main");
    CHECK(mpirpc::get_worker_infos().at(0).name == "ps:main");
  }
  SECTION("init_rpc(name)") {
    mpirpc::init_rpc("ps_2");
    const bool named = mpirpc::is_running() && mpirpc::get_worker_info().name == "ps_2";
    mpirpc::shutdown();
    CHECK(named);
  }
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("invalid options make init_rpc throw init_error and leave nothing running", "[runtime]") {
  SECTION("a name with a space and a '!'") {
    CHECK_THROWS_AS(mpirpc::init_rpc("bad name!"), mpirpc::init_error);
    CHECK_THROWS_WITH(mpirpc::init_rpc("bad name!"),
                      Catch::Contains("invalid worker name") && Catch::Contains("bad name!"));
    mpirpc::options opts;
    opts.name = "bad name!";
    CHECK_THROWS_AS(mpirpc::runtime(opts), mpirpc::init_error);
  }
  SECTION("a name that is too long") {
    CHECK_THROWS_AS(mpirpc::init_rpc(std::string(200, 'x')), mpirpc::init_error);
  }
  SECTION("zero worker threads") {
    mpirpc::options opts;
    opts.num_worker_threads = 0;
    CHECK_THROWS_AS(mpirpc::init_rpc(opts), mpirpc::init_error);
    CHECK_THROWS_WITH(mpirpc::init_rpc(opts), Catch::Contains("num_worker_threads"));
  }
  SECTION("a negative timeout") {
    mpirpc::options opts;
    opts.rpc_timeout = std::chrono::seconds(-1);
    CHECK_THROWS_AS(mpirpc::init_rpc(opts), mpirpc::init_error);
  }
  SECTION("a null communicator") {
    mpirpc::options opts;
    opts.comm = MPI_COMM_NULL;
    CHECK_THROWS_AS(mpirpc::init_rpc(opts), mpirpc::init_error);
  }
  CHECK_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::get_worker_info(), mpirpc::shutdown_error);

  // A failed start leaves the process able to start properly.
  mpirpc::runtime rt;
  CHECK(mpirpc::rpc_sync(0, add, 3, 4) == 7);
}

TEST_CASE("a second init while running throws init_error", "[runtime]") {
  mpirpc::runtime rt;
  CHECK_THROWS_AS(mpirpc::init_rpc(), mpirpc::init_error);
  CHECK_THROWS_WITH(mpirpc::init_rpc("other"), Catch::Contains("already running"));
  CHECK_THROWS_AS(mpirpc::runtime(), mpirpc::init_error);
  // The session that was running is untouched.
  CHECK(mpirpc::is_running());
  CHECK(mpirpc::get_worker_info().name == "worker0");
  CHECK(mpirpc::rpc_sync(0, add, 1, 1) == 2);
}

TEST_CASE("shutdown twice is harmless; calls after shutdown throw shutdown_error", "[runtime]") {
  {
    mpirpc::runtime rt;
    CHECK(mpirpc::rpc_sync(0, add, 1, 2) == 3);
    rt.shutdown();
    CHECK_FALSE(mpirpc::is_running());
    CHECK_NOTHROW(rt.shutdown());
    CHECK_NOTHROW(mpirpc::shutdown());
    CHECK_NOTHROW(mpirpc::shutdown(false));
  } // the destructor after an explicit shutdown does nothing
  CHECK_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::rpc_sync(0, add, 1, 2), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::rpc_sync(0, add, 1, 2), Catch::Contains("shut down"));
  CHECK_THROWS_WITH(mpirpc::rpc_async("worker0", add, 1, 2), Catch::Contains("shut down"));
  CHECK_THROWS_AS(mpirpc::get_worker_info(), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::get_worker_infos(), mpirpc::shutdown_error);
}

TEST_CASE("a non-graceful shutdown stops the session too", "[runtime]") {
  mpirpc::runtime rt;
  CHECK(mpirpc::rpc_sync(0, add, 2, 3) == 5);
  rt.shutdown(false);
  CHECK_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::rpc_sync(0, add, 1, 2), mpirpc::shutdown_error);
}

TEST_CASE("a new session after shutdown works", "[runtime]") {
  for (int session = 0; session < 3; ++session) {
    mpirpc::options opts;
    opts.name = "round" + std::to_string(session);
    opts.num_worker_threads = 1 + session;
    mpirpc::runtime rt(opts);
    CHECK(mpirpc::get_worker_info().name == opts.name);
    CHECK(mpirpc::rpc_sync(opts.name, add, session, 10) == session + 10);
    CHECK(mpirpc::rpc_sync(0, whoami) == opts.name);
    // Counters start afresh with each session.
    CHECK(mpirpc::stats().requests_sent == 2);
    rt.shutdown();
    CHECK_FALSE(mpirpc::is_running());
  }
}

TEST_CASE("a runtime object stops only the session it started", "[runtime]") {
  auto first = std::make_unique<mpirpc::runtime>();
  first->shutdown();
  CHECK_FALSE(mpirpc::is_running());
  mpirpc::init_rpc(); // a later session, not first's
  first.reset();      // ~runtime: its own session is gone, so it must leave this one alone
  CHECK(mpirpc::is_running());
  CHECK(mpirpc::get_worker_info().name == "worker0");
  mpirpc::shutdown();
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("init_rpc and shutdown are refused inside a progress-path continuation", "[runtime]") {
  mpirpc::detail::progress_callback_scope scope;
  CHECK_THROWS_WITH(mpirpc::init_rpc(), Catch::Contains("cannot be called from a handler"));
  CHECK_THROWS_WITH(mpirpc::shutdown(), Catch::Contains("cannot be called from a handler"));
}
