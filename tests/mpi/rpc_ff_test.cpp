// SPDX-License-Identifier: MIT
// mpirpc/rpc.hpp's one-way call, rpc_ff, on several ranks: every call runs, in the order sent;
// a later call sees them run; failures are logged and counted; shutdown waits for them. Also
// the batching of bursts of calls that carries them (lib/core/sender.cpp, outbox_set.cpp).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"

namespace {

/// What each source's one-way calls recorded here, in the order they ran.
std::mutex g_mutex;
std::map<int, std::vector<long>> g_seen;

void reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_seen.clear();
}

void record(int source, long seq) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_seen[source].push_back(seq);
}

void record_padded(int source, long seq, std::string pad) {
  if (!pad.empty()) record(source, seq);
}

/// How many one-way calls from `source` have run here, and whether they ran in order.
std::pair<long, bool> seen_from(int source) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const std::vector<long>& s = g_seen[source];
  bool ordered = true;
  for (std::size_t i = 0; i < s.size(); ++i)
    ordered = ordered && s[i] == static_cast<long>(i);
  return {static_cast<long>(s.size()), ordered};
}

std::atomic<long> g_sum{0};
void add_up(std::vector<double> v) {
  g_sum.fetch_add(static_cast<long>(std::accumulate(v.begin(), v.end(), 0.0)));
}

void ff_throws(int x) {
  throw std::runtime_error("ff boom " + std::to_string(x));
}

std::atomic<int> g_slow_done{0};
void slow(int) {
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  g_slow_done.fetch_add(1);
}

int add(int a, int b) {
  return a + b;
}

/// A one-way call that blocks until a later one-way call from the same sender has run: it
/// waits (through a call to its own rank) on a gate that only `open_gate` opens.
std::mutex g_gate_mutex;
mpirpc::future<int> g_gate;
std::atomic<int> g_gate_passed{0};
mpirpc::future<int> gate() {
  std::lock_guard<std::mutex> lock(g_gate_mutex);
  return g_gate;
}
void wait_at_gate() {
  if (mpirpc::rpc_sync(mpirpc::get_worker_info().id, gate) == 7) g_gate_passed.fetch_add(1);
}
void open_gate() {
  std::lock_guard<std::mutex> lock(g_gate_mutex);
  g_gate.set_result(7);
}

/// Async execution through rpc_ff: the call is over when the nested call's future is.
std::atomic<int> g_async_done{0};
mpirpc::future<void> async_one_way(int source, int x) {
  return mpirpc::rpc_async(source, add, x, 2).then([](mpirpc::future<int> f) {
    if (f.value() > 0) g_async_done.fetch_add(1);
  });
}

/// A handler that is itself part of a burst and blocks on a nested call.
int nested_add(int to, int x) {
  return mpirpc::rpc_sync(to, add, x, 10);
}

void not_registered(int) {}

/// A one-way handler that sends a large (out-of-line) argument back to its caller while the
/// caller's own in-order run is busy with the one-way call it sent here.
std::atomic<int> g_big_received{0};
void big_sink(std::vector<double> v) {
  if (v.size() == (1u << 17) && v.back() == 1.0) g_big_received.fetch_add(1);
}
void send_big_back(int back) {
  std::this_thread::sleep_for(std::chrono::milliseconds(50));           // both runs are busy now
  mpirpc::rpc_async(back, big_sink, std::vector<double>(1 << 17, 1.0)); // 1 MiB, out of line
}

/// User synchronization between handlers of one burst: `wait_for_gate` blocks (up to 10 s)
/// until `open_user_gate` runs on the same worker. Returns 1 if it was opened, -1 if not.
std::mutex g_user_gate_mutex;
std::condition_variable g_user_gate_cv;
bool g_user_gate_open = false;
int wait_for_gate(int) {
  std::unique_lock<std::mutex> lock(g_user_gate_mutex);
  return g_user_gate_cv.wait_for(lock, std::chrono::seconds(10), [] { return g_user_gate_open; })
             ? 1
             : -1;
}
int open_user_gate(int) {
  {
    std::lock_guard<std::mutex> lock(g_user_gate_mutex);
    g_user_gate_open = true;
  }
  g_user_gate_cv.notify_all();
  return 2;
}
void close_user_gate() {
  std::lock_guard<std::mutex> lock(g_user_gate_mutex);
  g_user_gate_open = false;
}

} // namespace

MPIRPC_REGISTER(record);
MPIRPC_REGISTER(wait_for_gate);
MPIRPC_REGISTER(open_user_gate);
MPIRPC_REGISTER(record_padded);
MPIRPC_REGISTER(seen_from);
MPIRPC_REGISTER(add_up);
MPIRPC_REGISTER(ff_throws);
MPIRPC_REGISTER(slow);
MPIRPC_REGISTER(add);
MPIRPC_REGISTER(gate);
MPIRPC_REGISTER(wait_at_gate);
MPIRPC_REGISTER(open_gate);
MPIRPC_REGISTER(async_one_way);
MPIRPC_REGISTER(nested_add);
MPIRPC_REGISTER(big_sink);
MPIRPC_REGISTER(send_big_back);

using mpirpc_test::next_rank;
using mpirpc_test::world_rank;

TEST_CASE("rpc_ff runs every call once, in the order sent, before a later rpc_sync", "[rpc_ff]") {
  reset();
  mpirpc::runtime rt;
  const int me = world_rank();
  const int to = next_rank();
  constexpr long n = 20000;
  const auto before = mpirpc::stats();
  for (long i = 0; i < n; ++i)
    mpirpc::rpc_ff(to, record, me, i);
  // No waiting, no retries: the sync call starts after every one-way call before it has run.
  const auto [count, ordered] = mpirpc::rpc_sync(to, seen_from, me);
  CHECK(count == n);
  CHECK(ordered);
  const auto after = mpirpc::stats();
  CHECK(after.one_way_sent - before.one_way_sent == static_cast<std::uint64_t>(n));
  // They travelled in batches, far fewer MPI messages than calls.
  CHECK(after.batches_sent > before.batches_sent);
  CHECK(after.messages_batched - before.messages_batched >= static_cast<std::uint64_t>(n) / 2);
  mpirpc_test::barrier();
  const auto mine = mpirpc::stats();
  CHECK(mine.one_way_run >= static_cast<std::uint64_t>(n));
  CHECK(mine.one_way_failed == 0);
}

TEST_CASE("rpc_ff calls too large for a posted receive (sent in envelopes) keep their order "
          "among small ones",
          "[rpc_ff]") {
  reset();
  mpirpc::runtime rt;
  const int me = world_rank();
  const int to = next_rank();
  constexpr long n = 3000;
  for (long i = 0; i < n; ++i) {
    // Every seventh call carries an inline string of 5-12 KB (under the out-of-line threshold):
    // its control message exceeds 4 KiB and travels in an envelope; the rest are batched.
    const std::size_t bytes = i % 7 == 3 ? 5000 + static_cast<std::size_t>(i) * 2 : 1;
    mpirpc::rpc_ff(to, record_padded, me, i, std::string(bytes, 'p'));
  }
  const auto [count, ordered] = mpirpc::rpc_sync(to, seen_from, me);
  CHECK(count == n);
  CHECK(ordered);
}

TEST_CASE("rpc_async and rpc_sync calls start after the rpc_ff calls sent before them",
          "[rpc_ff]") {
  reset();
  mpirpc::runtime rt;
  const int me = world_rank();
  const int to = next_rank();
  std::vector<std::pair<long, mpirpc::future<std::pair<long, bool>>>> checks;
  long sent = 0;
  for (int round = 0; round < 200; ++round) {
    for (int k = 0; k < 1 + round % 7; ++k)
      mpirpc::rpc_ff(to, record, me, sent++);
    checks.emplace_back(sent, mpirpc::rpc_async(to, seen_from, me));
    if (round % 50 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  for (auto& [expected_at_least, f] : checks) {
    const auto [count, ordered] = f.wait();
    CHECK(count >= expected_at_least);
    CHECK(ordered);
  }
  CHECK(mpirpc::rpc_sync(to, seen_from, me).first == sent);
}

TEST_CASE("rpc_ff carries large arguments out of line", "[rpc_ff]") {
  g_sum = 0;
  mpirpc::runtime rt;
  const int to = next_rank();
  std::vector<double> big(1 << 20, 1.0); // 8 MiB: its own MPI message
  mpirpc::rpc_ff(to, add_up, std::vector<double>{1, 2, 3});
  mpirpc::rpc_ff(to, add_up, big);
  mpirpc::rpc_ff(to, add_up, std::vector<double>{4});
  rt.shutdown(); // graceful: every rank's calls have run
  CHECK(g_sum.load() == 6 + (1 << 20) + 4);
}

TEST_CASE("a throwing rpc_ff handler is logged and counted on the callee", "[rpc_ff]") {
  const int me = world_rank();
  const int from = (me + mpirpc_test::world_size() - 1) % mpirpc_test::world_size();
  std::uint64_t failed = 0;
  const std::string log = mpirpc_test::capture_stderr([&] {
    mpirpc::runtime rt;
    mpirpc::rpc_ff(next_rank(), ff_throws, me);
    // Starts after the one-way call has run (and failed); once every rank is past it, the
    // call to this rank has run too.
    CHECK(mpirpc::rpc_sync(next_rank(), add, 1, 1) == 2);
    mpirpc_test::barrier();
    failed = mpirpc::stats().one_way_failed;
  });
  CHECK(failed == 1);
  CHECK(log.find("a one-way call of 'ff_throws' from worker" + std::to_string(from) +
                 " failed: std::runtime_error: ff boom " + std::to_string(from)) !=
        std::string::npos);
}

TEST_CASE("rpc_ff checks what it can at the call site", "[rpc_ff]") {
  {
    mpirpc::runtime rt;
    CHECK_THROWS_AS(mpirpc::rpc_ff("nobody", record, 0, 0L), mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::rpc_ff(mpirpc_test::world_size(), record, 0, 0L),
                    mpirpc::unknown_worker_error);
    CHECK_THROWS_AS(mpirpc::rpc_ff(0, not_registered, 1), mpirpc::unknown_function_error);
    CHECK(mpirpc::stats().one_way_sent == 0);
  }
  CHECK_THROWS_AS(mpirpc::rpc_ff(0, record, 0, 0L), mpirpc::shutdown_error);
}

TEST_CASE("graceful shutdown waits for every rpc_ff call, async ones included", "[rpc_ff]") {
  g_slow_done = 0;
  g_async_done = 0;
  const int me = world_rank();
  {
    mpirpc::runtime rt;
    for (int i = 0; i < 50; ++i)
      mpirpc::rpc_ff(next_rank(), slow, i);
    for (int i = 0; i < 20; ++i)
      mpirpc::rpc_ff(next_rank(), async_one_way, me, i);
  } // the destructor shuts down gracefully
  CHECK(g_slow_done.load() == 50);
  CHECK(g_async_done.load() == 20);
}

TEST_CASE("an rpc_ff handler that blocks does not hold back the calls behind it", "[rpc_ff]") {
  g_gate = mpirpc::future<int>();
  g_gate_passed = 0;
  reset();
  const int me = world_rank();
  {
    mpirpc::runtime rt;
    mpirpc::rpc_ff(next_rank(), wait_at_gate); // blocks until open_gate has run
    for (long i = 0; i < 100; ++i)
      mpirpc::rpc_ff(next_rank(), record, me, i);
    mpirpc::rpc_ff(next_rank(), open_gate);
    // Run in order around the blocked one.
    const auto [count, ordered] = mpirpc::rpc_sync(next_rank(), seen_from, me);
    CHECK(count == 100);
    CHECK(ordered);
  }
  CHECK(g_gate_passed.load() == 1);
}

TEST_CASE("bursts of rpc_async are batched; spaced calls are not", "[rpc_ff][batching]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  const auto before = mpirpc::stats();
  std::vector<mpirpc::future<int>> futures;
  for (int i = 0; i < 5000; ++i)
    futures.push_back(mpirpc::rpc_async(to, add, i, 1));
  for (int i = 0; i < 5000; ++i)
    REQUIRE(futures[static_cast<std::size_t>(i)].wait() == i + 1);
  const auto burst = mpirpc::stats();
  CHECK(burst.batches_sent > before.batches_sent);
  CHECK(burst.messages_batched > before.messages_batched);
  mpirpc_test::barrier(); // every rank's burst and its reply batches are over
  // Only worker0 calls now, and nobody calls it: whatever it batches is its own request.
  const auto quiet = mpirpc::stats();
  if (world_rank() == 0) {
    for (int i = 0; i < 50; ++i)
      CHECK(mpirpc::rpc_sync(to, add, i, 2) == i + 2);
  }
  mpirpc_test::barrier();
  // A call with nothing else in flight is sent on its own at once.
  const auto spaced = mpirpc::stats();
  INFO("batches " << spaced.batches_sent - quiet.batches_sent << ", requests sent "
                  << spaced.requests_sent - quiet.requests_sent << ", served "
                  << spaced.requests_served - quiet.requests_served);
  CHECK(spaced.messages_batched == quiet.messages_batched);
}

TEST_CASE("a burst of calls whose handlers block on nested calls completes", "[rpc_ff][batching]") {
  // Fewer blocking handlers than server threads (16): each blocked one hands the rest of its
  // batch on, and the nested calls, batched too, find a free thread.
  mpirpc::runtime rt;
  const int to = next_rank();
  const int back = world_rank();
  for (int round = 0; round < 20; ++round) {
    std::vector<mpirpc::future<int>> futures;
    for (int i = 0; i < 10; ++i)
      futures.push_back(mpirpc::rpc_async(to, nested_add, back, i));
    for (int i = 0; i < 10; ++i)
      CHECK(futures[static_cast<std::size_t>(i)].wait() == i + 10);
  }
}

TEST_CASE("a large request waiting behind an in-order run does not hold its sender", "[rpc_ff]") {
  // Each rank's one-way handler sends 1 MiB back to a rank whose in-order run from it is busy
  // in the same way: the waiting request's buffer is received at once, or both senders block.
  g_big_received = 0;
  {
    mpirpc::runtime rt;
    mpirpc::rpc_ff(next_rank(), send_big_back, world_rank());
  }
  CHECK(g_big_received.load() == 1);
}

TEST_CASE("a batch to the caller's own rank never blocks the thread that polls", "[rpc_ff]") {
  // Open MPI sends to its own rank eagerly only up to 1 KiB. A batch of one-way calls to this
  // rank, bigger than that and left for the polling thread to send, used to block that thread
  // in MPI_Send until a receive was posted, which only it could post: the rank hung for good.
  reset();
  mpirpc::runtime rt;
  const int me = world_rank();
  const std::string pad(40, 'x');
  for (long i = 0; i < 60; ++i) // about 6 KiB in batches; the last one is left to the poller
    mpirpc::rpc_ff(me, record_padded, me, i, pad);
  std::this_thread::sleep_for(std::chrono::milliseconds(20)); // the poller sends it meanwhile
  auto check = std::async(std::launch::async, [&] { return mpirpc::rpc_sync(me, seen_from, me); });
  if (check.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    std::fprintf(stderr, "worker%d: a call to itself did not return within 30 s: deadlocked\n", me);
    std::fflush(stderr);
    std::_Exit(3); // nothing can unblock it; the other ranks are ended by mpiexec
  }
  const auto [count, ordered] = check.get();
  CHECK(count == 60);
  CHECK(ordered);
}

TEST_CASE("a handler of a burst that waits for a later call of the burst does not hold it back",
          "[rpc_ff][batching]") {
  // The burst travels as one batch and runs on one thread; a handler blocked on user
  // synchronization (not on a future) is noticed by a poller, which hands the rest on.
  close_user_gate();
  mpirpc::runtime rt;
  const int to = next_rank();
  const auto before = mpirpc::stats();
  // A burst by the rule of lib/core/sender.hpp: calls back to back, 4 or more outstanding. Under
  // TSan the rule's times are scaled (batch_time_scale), or its 10-50 us between calls would
  // make none of them part of a burst and the case untested.
  constexpr int n = 64;
  std::vector<mpirpc::future<int>> futures;
  for (int i = 0; i < n; ++i)
    futures.push_back(mpirpc::rpc_async(to, add, i, 1));
  futures.push_back(mpirpc::rpc_async(to, wait_for_gate, 0));
  futures.push_back(mpirpc::rpc_async(to, open_user_gate, 0));
  CHECK(futures[n].wait() == 1);
  CHECK(futures[n + 1].wait() == 2);
  for (int i = 0; i < n; ++i)
    CHECK(futures[static_cast<std::size_t>(i)].wait() == i + 1);
  CHECK(mpirpc::stats().messages_batched > before.messages_batched); // the case under test
  mpirpc_test::barrier();
}

TEST_CASE("replies made before a handler that blocks are not held until it returns",
          "[rpc_ff][batching]") {
  // The caller opens the gate only once the replies sent before the blocked handler started
  // have come; they leave without waiting for the batch to finish.
  close_user_gate();
  mpirpc::runtime rt;
  const int to = next_rank();
  std::vector<mpirpc::future<int>> futures;
  for (int i = 0; i < 8; ++i)
    futures.push_back(mpirpc::rpc_async(to, add, i, 1));
  auto blocked = mpirpc::rpc_async(to, wait_for_gate, 0);
  for (int i = 0; i < 8; ++i)
    CHECK(futures[static_cast<std::size_t>(i)].wait() == i + 1);
  CHECK(mpirpc::rpc_sync(to, open_user_gate, 0) == 2);
  CHECK(blocked.wait() == 1);
  mpirpc_test::barrier();
}
