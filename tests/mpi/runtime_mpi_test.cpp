// SPDX-License-Identifier: MIT
// mpirpc/runtime.hpp on several ranks: start-up, identity, failed starts, sub-communicators,
// repeated sessions, calls after shutdown, timeouts and counters.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"
#include "parked_futures.hpp"

namespace {

int add(int a, int b) {
  return a + b;
}
std::string whoami() {
  return mpirpc::get_worker_info().name;
}
int world_rank_of() {
  return mpirpc_test::world_rank();
}
int sleepy(int milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
  return milliseconds;
}

/// An object kept by rrefs; counts its live instances on this rank.
struct tracked {
  static std::atomic<int> live;
  int value = 0;
  tracked() { ++live; }
  explicit tracked(int v) : value(v) { ++live; }
  tracked(const tracked& other) : value(other.value) { ++live; }
  ~tracked() { --live; }
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& value; }
};
std::atomic<int> tracked::live{0};

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER_AS("park", mpirpc_test::park);
MPIRPC_REGISTER_AS("parked_count", mpirpc_test::parked_count);
MPIRPC_REGISTER(whoami);
MPIRPC_REGISTER(world_rank_of);
MPIRPC_REGISTER(sleepy);
MPIRPC_REGISTER_CONSTRUCTOR(tracked, int);

namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using mpirpc_test::eventually;
using mpirpc_test::next_rank;
using mpirpc_test::worker;

/// Tries to start with `opts`. Returns the init_error's message, or an empty string when the
/// start succeeded, in which case the session is stopped at once (without waiting for other
/// ranks), so that a wrongly accepted start fails the test instead of hanging it.
std::string start_failure(mpirpc::options opts) {
  try {
    mpirpc::init_rpc(std::move(opts));
  } catch (const mpirpc::init_error& e) {
    return e.what();
  }
  mpirpc::shutdown(false);
  return "";
}

/// Stops a session started with init_rpc() when the test case leaves, even by an exception.
struct session_guard {
  ~session_guard() { mpirpc::shutdown(); }
};

} // namespace

TEST_CASE("before init_rpc, calls and queries throw shutdown_error naming init_rpc", "[runtime]") {
  // The first test case: no session has run in this process yet.
  CHECK_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::rpc_sync(0, add, 1, 2), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::rpc_async(0, add, 1, 2), Contains("init_rpc"));
  CHECK_THROWS_AS(mpirpc::get_worker_info(), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::get_worker_infos(), mpirpc::shutdown_error);
  CHECK_NOTHROW(mpirpc::shutdown()); // not running: does nothing
}

TEST_CASE("default names are worker0..N-1 and get_worker_infos is ordered by id", "[runtime]") {
  const int size = mpirpc_test::world_size();
  const int rank = mpirpc_test::world_rank();
  mpirpc::runtime rt;
  CHECK(mpirpc::is_running());
  const std::vector<mpirpc::worker_info> infos = mpirpc::get_worker_infos();
  REQUIRE(infos.size() == static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) {
    CHECK(infos[static_cast<std::size_t>(r)] == mpirpc::worker_info{worker(r), r});
    CHECK(mpirpc::get_worker_info(worker(r)).id == r);
  }
  CHECK(mpirpc::get_worker_info() == mpirpc::worker_info{worker(rank), rank});
  // Every worker answers under its own name.
  for (int r = 0; r < size; ++r) {
    CHECK(mpirpc::rpc_sync(worker(r), whoami) == worker(r));
  }
}

TEST_CASE("custom names from options.name are resolvable from every rank", "[runtime]") {
  const int size = mpirpc_test::world_size();
  const int rank = mpirpc_test::world_rank();
  mpirpc::options opts;
  opts.name = "trainer" + std::to_string(rank);
  mpirpc::runtime rt(opts);
  CHECK(mpirpc::get_worker_info().name == "trainer" + std::to_string(rank));
  const auto infos = mpirpc::get_worker_infos();
  REQUIRE(infos.size() == static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) {
    const std::string name = "trainer" + std::to_string(r);
    CHECK(infos[static_cast<std::size_t>(r)] == mpirpc::worker_info{name, r});
    CHECK(mpirpc::get_worker_info(name).id == r);
    CHECK(mpirpc::rpc_sync(name, whoami) == name);
    CHECK(mpirpc::rpc_sync(r, whoami) == name);
  }
  // The default names are not in use in this session.
  CHECK_THROWS_AS(mpirpc::get_worker_info("worker0"), mpirpc::unknown_worker_error);
  CHECK_THROWS_AS(mpirpc::rpc_sync("worker0", whoami), mpirpc::unknown_worker_error);
}

TEST_CASE("init_rpc(name) and runtime(name) take torch's spelling", "[runtime]") {
  const int size = mpirpc_test::world_size();
  const int rank = mpirpc_test::world_rank();
  {
    // Letters, digits, '_', '-' and ':' are all allowed.
    mpirpc::init_rpc("param_server-" + std::to_string(rank) + ":a");
    session_guard stop;
    for (int r = 0; r < size; ++r) {
      const std::string name = "param_server-" + std::to_string(r) + ":a";
      CHECK(mpirpc::get_worker_info(name).id == r);
      CHECK(mpirpc::rpc_sync(name, whoami) == name);
    }
  }
  CHECK_FALSE(mpirpc::is_running());
  {
    mpirpc::options opts;
    opts.name = "ignored"; // the explicit name wins
    mpirpc::runtime rt("peer" + std::to_string(rank), opts);
    CHECK(mpirpc::get_worker_info().name == "peer" + std::to_string(rank));
    CHECK(mpirpc::rpc_sync("peer" + std::to_string(next_rank()), whoami) ==
          "peer" + std::to_string(next_rank()));
  }
}

TEST_CASE("duplicate names fail the start with init_error on every rank", "[runtime]") {
  mpirpc::options opts;
  opts.name = "same";
  const std::string message = start_failure(opts);
  INFO("init_error: " << message);
  CHECK_FALSE(message.empty());
  CHECK_THAT(message, Contains("'same'") && Contains("used by ranks 0 and 1"));
  CHECK_FALSE(mpirpc::is_running());
  // A failed start leaves the process able to start again.
  mpirpc::runtime rt;
  CHECK(mpirpc::rpc_sync(next_rank(), add, 40, 2) == 42);
}

TEST_CASE("a clash between two ranks only is still reported on every rank", "[runtime]") {
  // Ranks 0 and size-1 both claim "shared"; the ranks in between keep distinct names.
  const int size = mpirpc_test::world_size();
  const int rank = mpirpc_test::world_rank();
  mpirpc::options opts;
  opts.name = (rank == 0 || rank == size - 1) ? "shared" : "solo" + std::to_string(rank);
  const std::string message = start_failure(opts);
  INFO("init_error: " << message);
  CHECK_THAT(message,
             Contains("'shared'") && Contains("used by ranks 0 and " + std::to_string(size - 1)));
}

TEST_CASE("an invalid name on one rank only fails the start on every rank", "[runtime]") {
  const int size = mpirpc_test::world_size();
  const int rank = mpirpc_test::world_rank();
  SECTION("a name with a space on the last rank") {
    mpirpc::options opts;
    if (rank == size - 1) opts.name = "bad name";
    const std::string message = start_failure(opts);
    INFO("init_error: " << message);
    CHECK_THAT(message, Contains("rank " + std::to_string(size - 1)) &&
                            Contains("invalid worker name 'bad name'"));
  }
  SECTION("a name of 128 characters on rank 0") {
    mpirpc::options opts;
    if (rank == 0) opts.name = std::string(128, 'n');
    const std::string message = start_failure(opts);
    INFO("init_error: " << message);
    CHECK_THAT(message, Contains("rank 0") && Contains("invalid worker name"));
  }
  SECTION("127 characters are still fine") {
    mpirpc::options opts;
    opts.name = std::string(120, 'n') + "-" + std::to_string(rank);
    mpirpc::runtime rt(opts);
    CHECK(mpirpc::get_worker_info().name == opts.name);
  }
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("bad options fail the start locally with init_error", "[runtime]") {
  // Checked before any collective step, so one rank can be tested alone.
  mpirpc::options threads;
  threads.num_worker_threads = 0;
  CHECK_THAT(start_failure(threads), Contains("num_worker_threads"));
  mpirpc::options negative;
  negative.rpc_timeout = -1s;
  CHECK_THAT(start_failure(negative), Contains("rpc_timeout"));
  mpirpc::options null_comm;
  null_comm.comm = MPI_COMM_NULL;
  CHECK_THAT(start_failure(null_comm), Contains("MPI_COMM_NULL"));
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("init_rpc while running throws init_error and leaves the session intact", "[runtime]") {
  mpirpc::runtime rt;
  CHECK_THROWS_AS(mpirpc::init_rpc(), mpirpc::init_error);
  CHECK_THROWS_WITH(mpirpc::runtime(), Contains("already running"));
  CHECK(mpirpc::is_running());
  CHECK(mpirpc::rpc_sync(next_rank(), add, 1, 2) == 3);
}

TEST_CASE("a runtime over a sub-communicator has its own workers and stays within them",
          "[runtime][subcomm]") {
  const int rank = mpirpc_test::world_rank();
  const int color = rank % 2;
  MPI_Comm half = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, color, rank, &half);
  int half_rank = 0;
  int half_size = 0;
  MPI_Comm_rank(half, &half_rank);
  MPI_Comm_size(half, &half_size);
  const auto world_rank_at = [&](int r) { return 2 * r + color; };
  {
    mpirpc::options opts;
    opts.comm = half;
    mpirpc::runtime rt(opts);
    // Ids and default names are local to the communicator.
    CHECK(mpirpc::get_worker_info() == mpirpc::worker_info{worker(half_rank), half_rank});
    const auto infos = mpirpc::get_worker_infos();
    REQUIRE(infos.size() == static_cast<std::size_t>(half_size));
    for (int r = 0; r < half_size; ++r) {
      CHECK(infos[static_cast<std::size_t>(r)] == mpirpc::worker_info{worker(r), r});
      // Each call lands on the process of the same parity.
      CHECK(mpirpc::rpc_sync(r, world_rank_of) == world_rank_at(r));
      CHECK(mpirpc::rpc_sync(worker(r), world_rank_of) == world_rank_at(r));
      CHECK(mpirpc::rpc_async(infos[static_cast<std::size_t>(r)], add, r, 1).wait() == r + 1);
    }
    // Processes of the other half are not workers of this session.
    CHECK_THROWS_AS(mpirpc::rpc_sync(half_size, world_rank_of), mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::get_worker_info(worker(half_size)), mpirpc::unknown_worker_error);
  }
  {
    // Custom names: "even<i>" and "odd<i>" live in separate sessions.
    const std::string prefix = color == 0 ? "even" : "odd";
    const std::string other = color == 0 ? "odd" : "even";
    mpirpc::options opts;
    opts.comm = half;
    opts.name = prefix + std::to_string(half_rank);
    mpirpc::runtime rt(opts);
    const std::string target = prefix + std::to_string((half_rank + 1) % half_size);
    CHECK(mpirpc::rpc_sync(target, whoami) == target);
    CHECK_THROWS_AS(mpirpc::rpc_sync(other + "0", whoami), mpirpc::unknown_worker_error);
  }
  // The application's communicator is untouched and still usable.
  int sum = 0;
  MPI_Request request;
  MPI_Iallreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, half, &request);
  mpirpc_test::wait_for(request);
  int expected = 0;
  for (int r = 0; r < half_size; ++r)
    expected += world_rank_at(r);
  CHECK(sum == expected);
  MPI_Comm_free(&half);
}

TEST_CASE("a runtime on a subset of the ranks leaves the other ranks free", "[runtime][subcomm]") {
  // Only the even ranks start a session; the odd ranks never call init_rpc.
  const int rank = mpirpc_test::world_rank();
  const int size = mpirpc_test::world_size();
  MPI_Comm evens = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2 == 0 ? 0 : MPI_UNDEFINED, rank, &evens);
  if (evens != MPI_COMM_NULL) {
    mpirpc::options opts;
    opts.name = "even_" + std::to_string(rank / 2);
    opts.comm = evens;
    mpirpc::runtime rt(opts);
    // The runtime works on its own duplicate: the application may free its handle at once.
    MPI_Comm_free(&evens);
    const int workers = (size + 1) / 2;
    CHECK(mpirpc::get_worker_infos().size() == static_cast<std::size_t>(workers));
    for (int r = 0; r < workers; ++r) {
      CHECK(mpirpc::rpc_sync("even_" + std::to_string(r), world_rank_of) == 2 * r);
    }
    CHECK_THROWS_AS(mpirpc::rpc_sync(workers, world_rank_of), mpirpc::unknown_worker_error);
  } else {
    CHECK_FALSE(mpirpc::is_running());
  }
  mpirpc_test::barrier();
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("several sessions run one after another in the same process", "[runtime]") {
  const int rank = mpirpc_test::world_rank();
  for (int session = 0; session < 4; ++session) {
    mpirpc::options opts;
    if (session % 2) opts.name = "s" + std::to_string(session) + "_" + std::to_string(rank);
    mpirpc::runtime rt(opts);
    const std::string target =
        session % 2 ? "s" + std::to_string(session) + "_" + std::to_string(next_rank())
                    : worker(next_rank());
    CHECK(mpirpc::rpc_sync(target, whoami) == target);
    // Every session starts its counters afresh.
    CHECK(mpirpc::stats().requests_sent == 1);
  }
  // And the init_rpc/shutdown spelling, twice.
  for (int session = 0; session < 2; ++session) {
    mpirpc::init_rpc();
    CHECK(mpirpc::rpc_async(next_rank(), add, session, 10).wait() == session + 10);
    mpirpc::shutdown();
    CHECK_FALSE(mpirpc::is_running());
  }
}

TEST_CASE("calls after shutdown throw shutdown_error at the call site", "[runtime]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  CHECK(mpirpc::rpc_sync(to, add, 1, 1) == 2);
  rt.shutdown();
  CHECK_FALSE(mpirpc::is_running());
  CHECK_THROWS_AS(mpirpc::rpc_sync(to, add, 1, 2), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::rpc_async(worker(to), add, 1, 2), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(mpirpc::rpc_sync(to, add, 1, 2), Contains("shut down"));
  CHECK_THROWS_AS(mpirpc::get_worker_info(), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::get_worker_info(worker(to)), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::get_worker_infos(), mpirpc::shutdown_error);
  CHECK_THROWS_AS(mpirpc::stats(), mpirpc::shutdown_error);
  // shutdown_error is an mpirpc::error; a second shutdown (and the destructor) does nothing.
  CHECK_THROWS_AS(mpirpc::rpc_sync(to, add, 1, 2), mpirpc::error);
  CHECK_NOTHROW(rt.shutdown());
}

TEST_CASE("shutdown(false) fails this rank's outstanding futures with shutdown_error",
          "[runtime]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  // The callee holds the reply of park() until release_parked(), which never comes in time.
  mpirpc::future<int> held = mpirpc::rpc_async(to, mpirpc_test::park);
  CHECK(eventually([&] { return mpirpc::rpc_sync(to, mpirpc_test::parked_count) == 1; }, 10000ms));
  mpirpc_test::barrier(); // no message is in flight anywhere now
  CHECK_FALSE(held.done());
  rt.shutdown(false);
  CHECK_FALSE(mpirpc::is_running());
  REQUIRE(held.done());
  CHECK_THROWS_AS(held.value(), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(held.value(),
                    Contains("'park'") && Contains(worker(to)) && Contains("abandoned"));
  // Completing the callee's held future afterwards sends nothing and harms nothing.
  CHECK(mpirpc_test::release_parked(5) == 1);
  // A new session starts normally.
  mpirpc::runtime again;
  CHECK(mpirpc::rpc_sync(to, add, 2, 2) == 4);
}

TEST_CASE("a per-call timeout fails with timeout_error naming function, worker and time",
          "[runtime][timeout]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  const auto start = std::chrono::steady_clock::now();
  try {
    mpirpc::rpc_sync(to, sleepy, 300, mpirpc::timeout(50ms));
    FAIL("the call did not time out");
  } catch (const mpirpc::timeout_error& e) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(elapsed >= 50ms);
    CHECK_THAT(e.what(),
               Contains("'sleepy'") && Contains(worker(to)) && Contains("timed out after"));
  }
  // The same through a future, and timeout_error is an mpirpc::error.
  auto f = mpirpc::rpc_async(worker(to), sleepy, 300, mpirpc::timeout(50ms));
  CHECK_THROWS_AS(f.wait(), mpirpc::error);
  CHECK(f.done());
  CHECK_THROWS_AS(f.value(), mpirpc::timeout_error);
  // A self-call times out just the same.
  const std::string self = mpirpc::get_worker_info().name;
  CHECK_THROWS_WITH(mpirpc::rpc_sync(self, sleepy, 300, mpirpc::timeout(50ms)),
                    Contains("'sleepy'") && Contains(self) && Contains("timed out after"));
  // then() sees the timeout like any other error.
  auto seen =
      mpirpc::rpc_async(to, sleepy, 300, mpirpc::timeout(50ms)).then([](mpirpc::future<int> done) {
        try {
          done.value();
        } catch (const mpirpc::timeout_error&) {
          return std::string("timeout_error");
        } catch (...) {
          return std::string("other");
        }
        return std::string("value");
      });
  CHECK(seen.wait() == "timeout_error");
  // A timeout that is long enough does not fire.
  CHECK(mpirpc::rpc_sync(to, sleepy, 20, mpirpc::timeout(10s)) == 20);
}

TEST_CASE("options.rpc_timeout is the default timeout of every call", "[runtime][timeout]") {
  mpirpc::options opts;
  opts.rpc_timeout = 100ms;
  mpirpc::runtime rt(opts);
  const int to = next_rank();
  CHECK(mpirpc::rpc_sync(to, add, 2, 3) == 5); // fast calls are unaffected
  try {
    mpirpc::rpc_async(to, sleepy, 400).wait();
    FAIL("the call did not time out");
  } catch (const mpirpc::timeout_error& e) {
    CHECK_THAT(e.what(), Contains("'sleepy'") && Contains(worker(to)) &&
                             Contains("timed out after") && Contains("0.100"));
  }
  // A per-call timeout overrides the default: zero means none, a longer one is honoured.
  CHECK(mpirpc::rpc_sync(to, sleepy, 200, mpirpc::timeout(0s)) == 200);
  CHECK(mpirpc::rpc_async(to, sleepy, 200, mpirpc::timeout(5s)).wait() == 200);
}

TEST_CASE("stats() counts requests, timeouts and the late replies it drops",
          "[runtime][timeout][stats]") {
  // Every rank calls its right neighbour and so serves its left neighbour's calls.
  mpirpc::runtime rt;
  const int to = next_rank();
  const mpirpc::runtime_stats fresh = mpirpc::stats();
  CHECK(fresh.requests_sent == 0);
  CHECK(fresh.timeouts == 0);
  CHECK(fresh.late_replies_dropped == 0);
  CHECK(fresh.malformed_messages == 0);

  for (int i = 0; i < 5; ++i)
    CHECK(mpirpc::rpc_sync(to, add, i, 1) == i + 1);
  mpirpc::runtime_stats s = mpirpc::stats();
  CHECK(s.requests_sent == 5);
  CHECK(s.replies_received == 5);
  CHECK(s.timeouts == 0);
  CHECK(eventually([] { return mpirpc::stats().requests_served >= 5; }, 5000ms));
  CHECK(mpirpc::stats().requests_served == 5);
  // Calls refused at the call site are not sent.
  CHECK_THROWS_AS(mpirpc::rpc_sync("nobody", add, 1, 2), mpirpc::unknown_worker_error);
  CHECK(mpirpc::stats().requests_sent == 5);
  mpirpc_test::barrier(); // every rank has read its counters before the next calls arrive

  CHECK_THROWS_AS(mpirpc::rpc_sync(to, sleepy, 300, mpirpc::timeout(50ms)), mpirpc::timeout_error);
  s = mpirpc::stats();
  CHECK(s.requests_sent == 6);
  CHECK(s.timeouts == 1);
  // The sleeping handler still replies, about 250 ms later; the caller drops that reply.
  CHECK(eventually([] { return mpirpc::stats().late_replies_dropped >= 1; }, 5000ms));
  CHECK(eventually([] { return mpirpc::stats().requests_served >= 6; }, 5000ms));
  s = mpirpc::stats();
  CHECK(s.late_replies_dropped == 1);
  CHECK(s.requests_served == 6);
  CHECK(s.timeouts == 1);
  CHECK(s.malformed_messages == 0);
}

TEST_CASE("many calls timing out together are each counted once and their replies dropped",
          "[runtime][timeout][stats]") {
  // 20 slow calls against 16 handler slots: some wait in the callee's queue, all time out.
  mpirpc::runtime rt;
  const int to = next_rank();
  constexpr int n = 20;
  std::vector<mpirpc::future<int>> calls;
  for (int i = 0; i < n; ++i)
    calls.push_back(mpirpc::rpc_async(to, sleepy, 150, mpirpc::timeout(20ms)));
  int timed_out = 0;
  for (auto& f : calls) {
    try {
      f.wait();
    } catch (const mpirpc::timeout_error&) {
      ++timed_out;
    }
  }
  CHECK(timed_out == n);
  CHECK(mpirpc::stats().timeouts == n);
  CHECK(eventually([] { return mpirpc::stats().late_replies_dropped >= n; }, 10000ms));
  CHECK(eventually([] { return mpirpc::stats().requests_served >= n; }, 10000ms));
  std::this_thread::sleep_for(20ms);
  const mpirpc::runtime_stats s = mpirpc::stats();
  CHECK(s.late_replies_dropped == n);
  CHECK(s.requests_served == n);
  CHECK(s.replies_received == 0);
  mpirpc_test::barrier(); // every rank has read its counters before the next call arrives
  // The runtime is healthy afterwards.
  CHECK(mpirpc::rpc_sync(to, add, 3, 4) == 7);
}

TEST_CASE("rrefs alive at graceful shutdown are reported with their owners, then unusable",
          "[runtime][rref]") {
  const int to = next_rank();
  mpirpc::rref<tracked> kept;
  const std::string report = mpirpc_test::capture_stderr([&] {
    mpirpc::runtime rt;
    kept = mpirpc::remote(to, mpirpc::construct<tracked, int>, 7);
    CHECK(kept.to_here().value == 7);
    rt.shutdown(); // every rank keeps its reference across it
  });
  // Each rank holds one reference (owned by the next rank) and owns one object (referenced by
  // the previous rank).
  CHECK_THAT(report, Contains("1 rref(s) still alive at shutdown (owners: " + worker(to) + " x1)"));
  CHECK_THAT(report, Contains("1 object(s) owned here still referenced at shutdown"));
  CHECK(tracked::live == 0); // the owner destroyed it when its runtime stopped
  CHECK_THROWS_AS(kept.to_here(), mpirpc::shutdown_error);
  CHECK_THROWS_WITH(kept.rpc_sync(&sleepy, 0), Contains("shut down"));
  CHECK(kept.owner_name() == worker(to)); // the identity stays readable
  kept = mpirpc::rref<tracked>();         // dropping it now sends nothing
}

TEST_CASE("graceful shutdown waits for the releases of rrefs dropped just before it",
          "[runtime][rref]") {
  const int to = next_rank();
  const std::string report = mpirpc_test::capture_stderr([&] {
    mpirpc::runtime rt;
    for (int i = 0; i < 20; ++i) {
      auto r = mpirpc::remote(to, mpirpc::construct<tracked, int>, i);
      auto copy = r;
      if (i % 2) CHECK(copy.to_here().value == i);
    } // each drop sends a release; shutdown must wait until the owners processed them
    rt.shutdown();
  });
  CHECK_THAT(report, !Contains("still alive") && !Contains("still referenced"));
  CHECK(tracked::live == 0);
}

TEST_CASE("a graceful shutdown with a timeout returns normally when nothing is left to do",
          "[runtime][shutdown]") {
  mpirpc::init_rpc();
  CHECK(mpirpc::rpc_sync(next_rank(), add, 2, 3) == 5);
  CHECK_NOTHROW(mpirpc::shutdown(true, 30s));
  CHECK_FALSE(mpirpc::is_running());
}

TEST_CASE("a graceful shutdown that times out stops every rank and names the busy workers",
          "[runtime][shutdown]") {
  const int rank = mpirpc_test::world_rank();
  mpirpc::init_rpc();
  mpirpc::future<int> slow;
  // worker0 waits for a handler on worker1 that takes far longer than the shutdown may.
  if (rank == 0) slow = mpirpc::rpc_async(1, sleepy, 1500);
  mpirpc_test::barrier();
  std::string message;
  try {
    mpirpc::shutdown(true, 200ms);
  } catch (const mpirpc::shutdown_error& e) {
    message = e.what();
  }
  // Every rank gave up, in the same round, with the same account of who was busy.
  CHECK_THAT(message, Contains("graceful shutdown timed out after"));
  CHECK_THAT(message, Contains("worker0: 1 call awaiting its reply"));
  CHECK_THAT(message, Contains("fail with shutdown_error"));
  CHECK_FALSE(mpirpc::is_running());
  if (rank == 0) {
    REQUIRE(slow.done());
    CHECK_THROWS_AS(slow.value(), mpirpc::shutdown_error);
  }
  // The stopped session leaves nothing behind: a new one starts and works.
  mpirpc::runtime rt;
  CHECK(mpirpc::rpc_sync(next_rank(), add, 1, 1) == 2);
}
