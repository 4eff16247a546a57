// SPDX-License-Identifier: MIT
// mpirpc/barrier.hpp on several ranks: after barrier() every call issued anywhere before it,
// and all that those calls issued in turn, has run (counts checked on every rank after each
// barrier); repeated use; futures, continuations and remote() covered; a timeout names what
// was busy; misuse from a handler, before init_rpc and after shutdown, and a barrier that
// meets another rank's shutdown, each have their error.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"
#include "parked_futures.hpp"

namespace {

using namespace std::chrono_literals;

/// Messages handled on this rank since the last reset, and what this rank sent to each rank.
std::atomic<long> g_handled{0};
std::mutex g_sent_mutex;
std::vector<long> g_sent_to;

void reset_counts() {
  g_handled = 0;
  std::lock_guard<std::mutex> lock(g_sent_mutex);
  g_sent_to.assign(static_cast<std::size_t>(mpirpc_test::world_size()), 0);
}

void count_sent(int dest) {
  std::lock_guard<std::mutex> lock(g_sent_mutex);
  ++g_sent_to[static_cast<std::size_t>(dest)];
}

int random_rank(std::uint64_t seed) {
  return static_cast<int>(seed % static_cast<std::uint64_t>(mpirpc_test::world_size()));
}

std::uint64_t next_seed(std::uint64_t seed) {
  return seed * 6364136223846793005ull + 1442695040888963407ull;
}

/// A one-way call that forwards itself `hops` more times, each to a rank picked by `seed`.
void hop(int hops, std::uint64_t seed) {
  g_handled.fetch_add(1);
  if (hops == 0) return;
  const std::uint64_t next = next_seed(seed);
  const int to = random_rank(next >> 33);
  count_sent(to);
  mpirpc::rpc_ff(to, hop, hops - 1, next);
}

/// The same through a request and its reply: an async-execution function whose nested call
/// goes on, and a continuation (on the progress path) that sends a one-way call when the reply
/// has come.
mpirpc::future<int> hop_async(int hops, std::uint64_t seed) {
  g_handled.fetch_add(1);
  if (hops == 0) {
    mpirpc::future<int> done;
    done.set_result(0);
    return done;
  }
  const std::uint64_t next = next_seed(seed);
  const int to = random_rank(next >> 33);
  count_sent(to);
  return mpirpc::rpc_async(to, hop_async, hops - 1, next).then([next](mpirpc::future<int> f) {
    const int to = random_rank(next >> 35);
    count_sent(to);
    mpirpc::rpc_ff(to, hop, 0, next);
    return f.value() + 1;
  });
}

/// Sums over ranks without a blocking MPI call (an oversubscribed rank must not spin).
std::vector<long> sum_over_ranks(const std::vector<long>& mine) {
  std::vector<long> total(mine.size());
  MPI_Request request;
  MPI_Iallreduce(mine.data(), total.data(), static_cast<int>(mine.size()), MPI_LONG, MPI_SUM,
                 MPI_COMM_WORLD, &request);
  mpirpc_test::wait_for(request);
  return total;
}

/// After a barrier: every rank has handled exactly what all ranks sent it.
void check_every_rank_handled_what_was_sent_to_it(int round) {
  std::vector<long> sent;
  {
    std::lock_guard<std::mutex> lock(g_sent_mutex);
    sent = g_sent_to;
  }
  const std::vector<long> sent_here = sum_over_ranks(sent);
  INFO("round " << round << " on rank " << mpirpc_test::world_rank());
  CHECK(g_handled.load() == sent_here[static_cast<std::size_t>(mpirpc_test::world_rank())]);
}

std::atomic<int> g_constructed{0};
struct counted {
  int value = 0;
  counted() = default;
  explicit counted(int v) : value(v) { g_constructed.fetch_add(1); }
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& value; }
};
counted make_counted(int v) {
  return counted(v);
}

/// A handler that calls barrier(): refused.
std::string barrier_in_handler() {
  try {
    mpirpc::barrier();
    return "returned";
  } catch (const mpirpc::future_error& e) {
    return e.what();
  }
}

} // namespace

MPIRPC_REGISTER(hop);
MPIRPC_REGISTER(hop_async);
MPIRPC_REGISTER(make_counted);
MPIRPC_REGISTER(barrier_in_handler);
MPIRPC_REGISTER_AS("park", mpirpc_test::park);
MPIRPC_REGISTER_AS("release", mpirpc_test::release_parked);

TEST_CASE("after barrier() every one-way call sent anywhere, and every call it forwarded, has "
          "run (random all-to-all, counts checked on every rank after each barrier)",
          "[barrier]") {
  mpirpc::runtime rt;
  const int me = mpirpc_test::world_rank();
  std::mt19937_64 random(12345u + static_cast<unsigned>(me));
  for (int round = 0; round < 6; ++round) {
    reset_counts();
    mpirpc::barrier(); // nobody sends before every rank has reset its counts
    // Rounds alternate between a burst (batched) and a trickle (sent one by one).
    const int calls = round % 2 == 0 ? 3000 : 200;
    for (int i = 0; i < calls; ++i) {
      const std::uint64_t seed = random();
      const int to = random_rank(seed >> 40);
      count_sent(to);
      mpirpc::rpc_ff(to, hop, static_cast<int>(seed % 5), seed);
      if (round % 2 == 1 && i % 16 == 0) std::this_thread::sleep_for(100us);
    }
    mpirpc::barrier();
    check_every_rank_handled_what_was_sent_to_it(round);
  }
  CHECK(mpirpc::stats().one_way_failed == 0);
}

TEST_CASE("after barrier() every call, its nested calls and their continuations have run, and "
          "every future is done",
          "[barrier]") {
  mpirpc::runtime rt;
  const int me = mpirpc_test::world_rank();
  std::mt19937_64 random(777u + static_cast<unsigned>(me));
  for (int round = 0; round < 3; ++round) {
    reset_counts();
    mpirpc::barrier();
    std::vector<std::pair<int, mpirpc::future<int>>> futures;
    for (int i = 0; i < 300; ++i) {
      const std::uint64_t seed = random();
      const int to = random_rank(seed >> 40);
      const int hops = static_cast<int>(seed % 4);
      count_sent(to);
      futures.emplace_back(hops, mpirpc::rpc_async(to, hop_async, hops, seed));
    }
    mpirpc::barrier();
    check_every_rank_handled_what_was_sent_to_it(round);
    for (auto& [hops, f] : futures) {
      REQUIRE(f.done());
      CHECK(f.value() == hops); // each hop added one on its way back
    }
  }
}

TEST_CASE("after barrier() the objects of every remote() issued before it exist on their owners",
          "[barrier]") {
  mpirpc::runtime rt;
  const int me = mpirpc_test::world_rank();
  const int n = mpirpc_test::world_size();
  g_constructed = 0;
  mpirpc::barrier();
  std::vector<mpirpc::rref<counted>> refs;
  for (int i = 0; i < 50; ++i)
    refs.push_back(mpirpc::remote((me + i) % n, make_counted, i));
  mpirpc::barrier();
  // Each rank owns 50 of the 50 * n objects.
  CHECK(g_constructed.load() == 50);
  CHECK(refs.back().to_here().value == 49);
  refs.clear();
  mpirpc::barrier(); // the releases have arrived too
  CHECK(mpirpc::stats().rref_owned_objects == 0);
}

TEST_CASE("barrier() on an idle runtime returns, again and again", "[barrier]") {
  mpirpc::runtime rt;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i)
    mpirpc::barrier();
  const double each_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      200;
  WARN("an idle barrier took " << each_us << " us on rank " << mpirpc_test::world_rank());
}

TEST_CASE("barrier(timeout) gives up on every rank alike, names what was busy, and the runtime "
          "goes on",
          "[barrier]") {
  mpirpc::runtime rt;
  const int me = mpirpc_test::world_rank();
  const int n = mpirpc_test::world_size();
  std::vector<mpirpc::future<int>> waiting;
  if (me == 0) waiting.push_back(mpirpc::rpc_async(n - 1, mpirpc_test::park));
  try {
    mpirpc::barrier(300ms);
    FAIL("barrier(300 ms) returned while a call awaited its reply");
  } catch (const mpirpc::timeout_error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("barrier() timed out") != std::string::npos);
    CHECK(what.find("worker0: 1 call awaiting its reply") != std::string::npos);
  }
  CHECK(mpirpc::is_running());
  if (me == 0) CHECK(mpirpc::rpc_sync(n - 1, mpirpc_test::release_parked, 7) == 1);
  mpirpc::barrier();
  if (me == 0) {
    REQUIRE(waiting.front().done());
    CHECK(waiting.front().value() == 7);
  }
}

TEST_CASE("barrier() from a handler is refused with future_error", "[barrier]") {
  mpirpc::runtime rt;
  const std::string answer = mpirpc::rpc_sync(mpirpc_test::next_rank(), barrier_in_handler);
  CHECK(answer.find("barrier() cannot be called from a handler") != std::string::npos);
  mpirpc::barrier();
}

TEST_CASE("barrier() before init_rpc and after shutdown throws shutdown_error", "[barrier]") {
  CHECK_THROWS_AS(mpirpc::barrier(), mpirpc::shutdown_error);
  {
    mpirpc::runtime rt;
    mpirpc::barrier();
  }
  CHECK_THROWS_AS(mpirpc::barrier(), mpirpc::shutdown_error);
}

TEST_CASE("a barrier() that meets another rank's shutdown() ends the session on every rank",
          "[barrier]") {
  mpirpc::runtime rt;
  mpirpc::barrier();
  if (mpirpc_test::world_rank() == 0) {
    const std::string err = mpirpc_test::capture_stderr([] { mpirpc::shutdown(); });
    CHECK(err.find("workers called barrier() while the others called shutdown()") !=
          std::string::npos);
  } else {
    try {
      mpirpc::barrier();
      FAIL("barrier() returned while rank 0 shut down");
    } catch (const mpirpc::shutdown_error& e) {
      CHECK(std::string(e.what()).find("the runtime has shut down") != std::string::npos);
    }
  }
  CHECK_FALSE(mpirpc::is_running());
}
