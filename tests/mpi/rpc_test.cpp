// SPDX-License-Identifier: MIT
// mpirpc/rpc.hpp on several ranks: every call form, value types, errors and concurrency.
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/serialization/split_member.hpp>

#include <mpirpc/mpirpc.hpp>

#include "error_text.hpp"
#include "mpi_test_support.hpp"

namespace {

struct point {
  double x = 0;
  double y = 0;
  std::string label; // not trivially copyable: takes the Boost path
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& x& y& label; }
  bool operator==(const point& o) const { return x == o.x && y == o.y && label == o.label; }
};

struct plain_pair {
  int a;
  double b;
};

int add(int a, int b) {
  return a + b;
}
double scale(double x, double factor) {
  return x * factor;
}
std::string concat(const std::string& a, std::string b) {
  return a + b;
}
/// Holds its server thread until the caller, on the same rank, has sent every call (at most
/// 10 s), then 30 ms more, so that the requests behind it wait in the queue however long each
/// call takes to send (under ThreadSanitizer one with 800 KB takes 60-100 ms).
std::atomic<bool> g_all_sent{false};
std::size_t slow_length(const std::vector<double>& v) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!g_all_sent.load() && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  return v.size();
}
std::vector<double> reverse(std::vector<double> v) {
  return {v.rbegin(), v.rend()};
}
point move_point(point p, double dx) {
  p.x += dx;
  p.label += "'";
  return p;
}
plain_pair swap_plain(plain_pair p) {
  return {static_cast<int>(p.b), static_cast<double>(p.a)};
}
std::map<std::string, int> count_words(std::vector<std::string> words) {
  std::map<std::string, int> out;
  for (auto& w : words)
    ++out[w];
  return out;
}
std::array<int, 3> triple(int x) {
  return {x, 2 * x, 3 * x};
}

std::atomic<int> void_calls{0};
void touch() {
  void_calls.fetch_add(1);
}
std::string whoami() {
  return mpirpc::get_worker_info().name;
}
int my_rank_plus(int x) {
  return mpirpc::get_worker_info().id + x;
}

/// How many large vectors this process has received into kept storage (spare_buffers.hpp).
std::uint64_t spare_takes_here() {
  return mpirpc::detail::spare_takes.load();
}
/// Every element must be seed + i; returns how many are not.
std::size_t count_wrong(const std::vector<double>& v, double seed) {
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < v.size(); ++i)
    wrong += v[i] != seed + static_cast<double>(i);
  return wrong;
}
/// Checks a vector against its seed on the callee and echoes it.
std::vector<double> echo_checked(std::vector<double> v, double seed) {
  if (count_wrong(v, seed) != 0) throw std::runtime_error("argument arrived corrupted");
  return v;
}
std::vector<double> seeded(std::size_t n, double seed) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = seed + static_cast<double>(i);
  return v;
}

struct calculator {
  static int multiply(int a, int b) { return a * b; }
};

struct custom_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int throws_runtime(int) {
  throw std::runtime_error("runtime went wrong");
}
int throws_custom(int x) {
  throw custom_error("custom " + std::to_string(x));
}
int throws_int(int) {
  throw 42;
}
int throws_out_of_range(int) {
  return std::vector<int>{}.at(3);
}

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER(scale);
MPIRPC_REGISTER(concat);
MPIRPC_REGISTER(slow_length);
MPIRPC_REGISTER(reverse);
MPIRPC_REGISTER(move_point);
MPIRPC_REGISTER(swap_plain);
MPIRPC_REGISTER(count_words);
MPIRPC_REGISTER(triple);
MPIRPC_REGISTER(touch);
MPIRPC_REGISTER(whoami);
MPIRPC_REGISTER(my_rank_plus);
MPIRPC_REGISTER(calculator::multiply);
MPIRPC_REGISTER(throws_runtime);
MPIRPC_REGISTER(throws_custom);
MPIRPC_REGISTER(throws_int);
MPIRPC_REGISTER(throws_out_of_range);
MPIRPC_REGISTER(spare_takes_here);
MPIRPC_REGISTER(echo_checked);

using mpirpc_test::next_rank;
using mpirpc_test::worker;

TEST_CASE("rpc_sync by name, rank and worker_info reaches the right worker", "[rpc]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  CHECK(mpirpc::rpc_sync(worker(to), whoami) == worker(to));
  CHECK(mpirpc::rpc_sync(to, whoami) == worker(to));
  const mpirpc::worker_info info = mpirpc::get_worker_info(worker(to));
  CHECK(info.id == to);
  CHECK(mpirpc::rpc_sync(info, whoami) == worker(to));
  CHECK(mpirpc::rpc_sync(info, my_rank_plus, 100) == to + 100);
}

TEST_CASE("self-calls work by name and by rank", "[rpc]") {
  mpirpc::runtime rt;
  const auto me = mpirpc::get_worker_info();
  CHECK(mpirpc::rpc_sync(me.name, add, 2, 3) == 5);
  CHECK(mpirpc::rpc_async(me.id, whoami).wait() == me.name);
  // Out-of-line buffers to the rank itself are copied, not sent through MPI (transport.hpp);
  // more at once than there are server threads, so that some wait in the queue.
  const std::string big(300000, 'x');
  CHECK(mpirpc::rpc_sync(me.id, concat, big, std::string("y")).size() == 300001);
  std::vector<mpirpc::future<std::string>> futures;
  for (int i = 0; i < 40; ++i)
    futures.push_back(mpirpc::rpc_async(me.id, concat, big, std::to_string(i)));
  for (int i = 0; i < 40; ++i)
    CHECK(futures[static_cast<std::size_t>(i)].wait() == big + std::to_string(i));
}

TEST_CASE("self-calls with large arguments wait in the queue and run from their copies", "[rpc]") {
  // One server thread: while it runs the first call, the others queue, their out-of-line
  // buffers already in memory (sent to self, nothing comes on MPI's data communicator).
  const std::string log = mpirpc_test::capture_stderr([] {
    mpirpc::options opts;
    opts.num_worker_threads = 1;
    mpirpc::runtime rt(opts);
    const int me = mpirpc::get_worker_info().id;
    std::vector<mpirpc::future<std::size_t>> futures;
    g_all_sent = false;
    for (std::size_t i = 0; i < 4; ++i)
      futures.push_back(mpirpc::rpc_async(me, slow_length, std::vector<double>(100000 + i, 1.0)));
    g_all_sent = true;
    for (std::size_t i = 0; i < 4; ++i)
      CHECK(futures[i].wait() == 100000 + i);
    CHECK(mpirpc::stats().malformed_messages == 0);
  });
  CHECK_THAT(log, Catch::Contains("all 1 server threads are busy, so requests wait in a queue"));
  CHECK_THAT(log, !Catch::Contains("malformed"));
}

TEST_CASE("values of every kind travel both ways", "[rpc]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  CHECK(mpirpc::rpc_sync(to, add, 20, 22) == 42);
  CHECK(mpirpc::rpc_sync(to, scale, 1.25, 4.0) == 5.0);
  CHECK(mpirpc::rpc_sync(to, scale, 3, 2) == 6.0); // ints converted to the double parameters
  CHECK(mpirpc::rpc_sync(to, concat, std::string("ab"), "cd") == "abcd");
  CHECK(mpirpc::rpc_sync(to, reverse, std::vector<double>{1, 2, 3}) ==
        std::vector<double>{3, 2, 1});
  CHECK(mpirpc::rpc_sync(to, reverse, std::vector<double>{}).empty());
  const point p = mpirpc::rpc_sync(to, move_point, point{1, 2, "p"}, 0.5);
  CHECK(p == point{1.5, 2, "p'"});
  const plain_pair q = mpirpc::rpc_sync(to, swap_plain, plain_pair{7, 9.0});
  CHECK(q.a == 9);
  CHECK(q.b == 7.0);
  const auto counts =
      mpirpc::rpc_sync(to, count_words, std::vector<std::string>{"a", "b", "a", ""});
  CHECK(counts == std::map<std::string, int>{{"", 1}, {"a", 2}, {"b", 1}});
  CHECK(mpirpc::rpc_sync(to, triple, 5) == std::array<int, 3>{5, 10, 15});
  CHECK(mpirpc::rpc_sync(to, calculator::multiply, 6, 7) == 42);
}

TEST_CASE("large vectors travel out of line and arrive intact", "[rpc]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  for (std::size_t n :
       {std::size_t(4095), std::size_t(4096), std::size_t(100000), std::size_t(1) << 21}) {
    std::vector<double> v(n);
    for (std::size_t i = 0; i < n; ++i)
      v[i] = static_cast<double>(i) * 0.5;
    const std::vector<double> back = mpirpc::rpc_sync(to, reverse, v);
    REQUIRE(back.size() == n);
    CHECK(back.front() == v.back());
    CHECK(back.back() == v.front());
    CHECK(back[n / 2] == v[n - 1 - n / 2]);
  }
  const std::string big(300000, 'x');
  CHECK(mpirpc::rpc_sync(to, concat, big, std::string("y")).size() == 300001);
}

TEST_CASE("requests and replies too large for a posted receive arrive whole (envelopes)",
          "[rpc]") {
  // Many short strings travel inline: the control messages both ways exceed 4 KiB.
  mpirpc::runtime rt;
  const int to = next_rank();
  std::vector<std::string> words;
  for (int i = 0; i < 3000; ++i)
    words.push_back("w" + std::to_string(i % 1500));
  std::vector<mpirpc::future<std::map<std::string, int>>> window;
  for (int k = 0; k < 8; ++k)
    window.push_back(mpirpc::rpc_async(to, count_words, words));
  const auto counts = mpirpc::rpc_sync(to, count_words, words);
  REQUIRE(counts.size() == 1500);
  CHECK(counts.at("w0") == 2);
  CHECK(counts.at("w1499") == 2);
  for (auto& f : window)
    CHECK(f.wait() == counts);
  const std::string half(10000, 'h'); // inline both ways, 20 KB of result
  CHECK(mpirpc::rpc_sync(to, concat, half, half) == half + half);
}

TEST_CASE("a large vector passed as an rvalue is moved from, and its echo arrives in kept "
          "storage; an lvalue is left alone",
          "[rpc][spare_buffers]") {
  // Only worker0 calls, and only worker1: no other large vector of this type is received by
  // either meanwhile, so the kept storage is there for the next one. Reuse is counted by the
  // pools themselves (an address compare would not prove it: malloc often hands back the block
  // just freed).
  mpirpc::runtime rt;
  if (mpirpc_test::world_rank() == 0) {
    constexpr std::size_t n = 100000;
    std::vector<double> v = seeded(n, 3.0);
    const std::vector<double> copy = v;
    // An lvalue is never touched. Its echo is the first vector<double> either side receives,
    // which lets both keep vectors of that type from now on.
    const std::uint64_t callee_before = mpirpc::rpc_sync(1, spare_takes_here);
    const std::vector<double> lvalue_back = mpirpc::rpc_sync(1, echo_checked, v, 3.0);
    CHECK(v == copy);
    CHECK(lvalue_back == copy);

    const std::uint64_t here_before = mpirpc::detail::spare_takes.load();
    constexpr int calls = 6;
    for (int i = 0; i < calls; ++i) {
      std::vector<double> back = mpirpc::rpc_sync(1, echo_checked, std::move(v), 3.0);
      CHECK(v.empty()); // kept once the request had left
      REQUIRE(back.size() == n);
      CHECK(count_wrong(back, 3.0) == 0);
      v = std::move(back);
    }
    // Each reply goes into kept storage: this argument's, or an earlier one's when another
    // thread of this rank took the reply before the sender, back from waiting for its send to
    // complete, kept the argument (a preemption in a window of nanoseconds; the argument then
    // serves the next reply). One such miss is allowed.
    CHECK(mpirpc::detail::spare_takes.load() - here_before >= calls - 1);
    // On worker1 each argument arrives in the storage of the result before it (the same race
    // on that side: its handler keeps the result only after the reply has left).
    const std::uint64_t callee_after = mpirpc::rpc_sync(1, spare_takes_here);
    CHECK(callee_after - callee_before >= calls - 2);
  }
}

TEST_CASE("with options::spare_buffer_bytes = 0 nothing is kept and rvalues are left alone",
          "[rpc][spare_buffers]") {
  mpirpc::options opts;
  opts.spare_buffer_bytes = 0;
  mpirpc::runtime rt(opts);
  const int to = next_rank();
  std::vector<double> v = seeded(50000, 1.0);
  const std::vector<double> back = mpirpc::rpc_sync(to, echo_checked, std::move(v), 1.0);
  CHECK(v.size() == 50000); // not kept, so not moved from
  CHECK(count_wrong(back, 1.0) == 0);
  CHECK(mpirpc::detail::spare_held.load() == 0);
}

TEST_CASE("large vectors of many sizes from many threads arrive intact through kept storage",
          "[rpc][spare_buffers]") {
  // Every rank calls every rank (itself too) from 4 threads with rvalue vectors of sizes
  // within a factor of two of each other, so that kept storage is taken and given back
  // concurrently on both sides. Each vector has its own seed, checked on both sides.
  mpirpc::runtime rt;
  const int size = mpirpc_test::world_size();
  const int me = mpirpc_test::world_rank();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<double> v;
      for (int i = 0; i < 12; ++i) {
        const int to = (me + t + i) % size;
        const double seed = 1e6 * me + 1e4 * t + 100.0 * i;
        const std::size_t n = 5000 + static_cast<std::size_t>((t * 7 + i * 13) % 10) * 500;
        if (v.capacity() >= n && i % 3 != 0) {
          v.resize(n); // reuse what came back, as a solver's buffer would be
          for (std::size_t k = 0; k < n; ++k)
            v[k] = seed + static_cast<double>(k);
        } else {
          v = seeded(n, seed);
        }
        try {
          std::vector<double> back = mpirpc::rpc_sync(to, echo_checked, std::move(v), seed);
          if (back.size() != n || count_wrong(back, seed) != 0) wrong.fetch_add(1);
          v = std::move(back);
        } catch (const std::exception& e) {
          UNSCOPED_INFO(e.what());
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(wrong.load() == 0);
}

TEST_CASE("void functions complete their future", "[rpc]") {
  void_calls = 0;
  {
    mpirpc::runtime rt;
    const int to = next_rank();
    mpirpc::rpc_sync(to, touch);
    mpirpc::future<void> f = mpirpc::rpc_async(to, touch);
    f.wait();
    CHECK(f.done());
  }
  // Every rank was called twice by its left neighbour; the runtime's shutdown waited for it.
  CHECK(void_calls.load() == 2);
}

TEST_CASE("rpc_async returns at once and futures complete in any order", "[rpc]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  std::vector<mpirpc::future<int>> futures;
  for (int i = 0; i < 500; ++i)
    futures.push_back(mpirpc::rpc_async(to, add, i, 1));
  for (int i = 499; i >= 0; --i) {
    CHECK(futures[static_cast<std::size_t>(i)].wait() == i + 1);
  }
  auto all = mpirpc::collect_all(futures).wait();
  CHECK(all.size() == 500);
  auto values = mpirpc::wait_all(futures);
  CHECK(values[123] == 124);
}

TEST_CASE("then on an rpc future chains work", "[rpc]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  auto f = mpirpc::rpc_async(to, add, 1, 2).then([](mpirpc::future<int> done) {
    return done.value() * 10;
  });
  CHECK(f.wait() == 30);
  // A continuation may issue another call; the result is flattened.
  auto g = mpirpc::rpc_async(to, add, 1, 1).then([to](mpirpc::future<int> done) {
    return mpirpc::rpc_async(to, add, done.value(), 100);
  });
  CHECK(g.wait() == 102);
}

TEST_CASE("a worker that keeps calling and never waits still serves requests and takes its "
          "replies",
          "[rpc]") {
  // While a thread of the user's sends calls, its rank's leader polls less often (the caller
  // is expected to wait and poll for its replies itself). Here no thread waits on a future:
  // the leader must still take every reply, so that the continuations run, and serve the
  // calls of the rank before this one, which does the same.
  mpirpc::runtime rt;
  const int to = next_rank();
  constexpr int calls = 3000;
  std::atomic<int> ran{0};
  std::atomic<int> wrong{0};
  std::vector<mpirpc::future<void>> continued;
  continued.reserve(calls);
  for (int i = 0; i < calls; ++i) {
    continued.push_back(mpirpc::rpc_async(to, add, i, 1).then([&, i](mpirpc::future<int> r) {
      if (r.value() != i + 1) wrong.fetch_add(1);
      ran.fetch_add(1);
    }));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (ran.load() < calls && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200)); // not future::wait: no poll
  CHECK(ran.load() == calls);
  CHECK(wrong.load() == 0);
}

TEST_CASE("calls from many threads at once all complete correctly", "[rpc]") {
  mpirpc::runtime rt;
  const int size = mpirpc_test::world_size();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const int to = (mpirpc_test::world_rank() + t + i) % size;
        if (i % 2) {
          if (mpirpc::rpc_sync(to, add, t, i) != t + i) wrong.fetch_add(1);
        } else {
          if (mpirpc::rpc_async(to, my_rank_plus, i).wait() != to + i) wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(wrong.load() == 0);
}

TEST_CASE("remote exceptions arrive as remote_error with worker, type and message", "[rpc]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  try {
    mpirpc::rpc_sync(to, throws_runtime, 1);
    FAIL("no exception");
  } catch (const mpirpc::remote_error& e) {
    CHECK(e.origin_worker() == worker(to));
    CHECK(e.remote_type() == "std::runtime_error");
    CHECK(e.remote_message() == "runtime went wrong");
    CHECK_THAT(e.what(), Catch::Contains(worker(to)) && Catch::Contains("std::runtime_error") &&
                             Catch::Contains("runtime went wrong"));
  }
  try {
    mpirpc::rpc_async(to, throws_custom, 5).wait();
    FAIL("no exception");
  } catch (const mpirpc::remote_error& e) {
    CHECK_THAT(e.remote_type(), Catch::Contains("custom_error"));
    CHECK(e.remote_message() == "custom 5");
  }
  try {
    mpirpc::rpc_sync(to, throws_int, 0);
    FAIL("no exception");
  } catch (const mpirpc::remote_error& e) {
    CHECK(e.remote_type() == "int");
    CHECK_THAT(e.remote_message(), Catch::Contains("not derived from std::exception"));
  }
  try {
    mpirpc::rpc_sync(to, throws_out_of_range, 0);
    FAIL("no exception");
  } catch (const mpirpc::remote_error& e) {
    CHECK(e.remote_type() == "std::out_of_range");
  }
  // The callee is unharmed and keeps serving.
  CHECK(mpirpc::rpc_sync(to, add, 1, 1) == 2);
  // remote_error is an mpirpc::error.
  CHECK_THROWS_AS(mpirpc::rpc_sync(to, throws_runtime, 0), mpirpc::error);
}

TEST_CASE("an unknown worker throws at the call site", "[rpc]") {
  mpirpc::runtime rt;
  CHECK_THROWS_AS(mpirpc::rpc_sync("nobody", add, 1, 2), mpirpc::unknown_worker_error);
  CHECK_THROWS_WITH(mpirpc::rpc_async("nobody", add, 1, 2),
                    Catch::Contains("no worker is named 'nobody'"));
  CHECK_THROWS_WITH(mpirpc::rpc_sync(mpirpc_test::world_size(), add, 1, 2),
                    Catch::Contains("no worker has rank"));
  CHECK_THROWS_AS(mpirpc::rpc_sync(-1, add, 1, 2), mpirpc::unknown_worker_error);
  CHECK_THROWS_AS(mpirpc::rpc_sync(mpirpc::worker_info{"worker0", 1}, add, 1, 2),
                  mpirpc::unknown_worker_error);
  CHECK_THROWS_AS(mpirpc::get_worker_info("nobody"), mpirpc::unknown_worker_error);
}

namespace {
int never_registered(int x) {
  return x;
}
} // namespace

TEST_CASE("calling an unregistered function throws at the call site", "[rpc]") {
  mpirpc::runtime rt;
  CHECK_THROWS_AS(mpirpc::rpc_sync(0, never_registered, 1), mpirpc::unknown_function_error);
  CHECK_THROWS_WITH(mpirpc::rpc_sync(0, never_registered, 1), Catch::Contains("MPIRPC_REGISTER"));
}

TEST_CASE("a trailing timeout argument is taken as the call's timeout, not as an argument",
          "[rpc]") {
  // Calls that time out are tested in runtime_mpi_test and async_execution_test; here the
  // trailing mpirpc::timeout must be peeled off the arguments (zero meaning none).
  mpirpc::runtime rt;
  const int to = next_rank();
  CHECK(mpirpc::rpc_sync(to, add, 1, 2, mpirpc::timeout(std::chrono::seconds(0))) == 3);
  CHECK(mpirpc::rpc_async(to, add, 2, 2, mpirpc::timeout(std::chrono::seconds(5))).wait() == 4);
}

namespace {
/// Serializable in type (Boost path), but its save() throws: a result of this type cannot be
/// sent back.
struct unsendable {
  int v = 0;
  std::string note;
  template <class Archive> void save(Archive&, unsigned) const {
    throw std::runtime_error("unsendable refuses to be saved (v=" + std::to_string(v) + ")");
  }
  template <class Archive> void load(Archive& a, unsigned) {
    a& v;
    a& note;
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};
unsendable make_unsendable(int v) {
  return unsendable{v, "made"};
}
mpirpc::future<unsendable> make_unsendable_later(int v) {
  mpirpc::future<unsendable> f;
  f.set_result(unsendable{v, "later"});
  return f;
}

/// Saved fine, but its load() throws: an argument of this type cannot be decoded by the callee
/// (and a result of this type cannot be decoded by the caller).
struct unreadable {
  int v = 0;
  std::string note;
  template <class Archive> void save(Archive& a, unsigned) const {
    a& v;
    a& note;
  }
  template <class Archive> void load(Archive& a, unsigned) {
    a& v;
    a& note;
    throw std::runtime_error("unreadable refuses to be loaded (v=" + std::to_string(v) + ")");
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};
int read_unreadable(int x, unreadable u) {
  return x + u.v;
}
unreadable make_unreadable(int v) {
  return unreadable{v, "r"};
}

/// The text of the serialization_error that `call` throws (a test failure if none or another).
template <class Call> std::string serialization_error_of(Call&& call) {
  return mpirpc_test::error_text_of<mpirpc::serialization_error>(call);
}
} // namespace

MPIRPC_REGISTER(make_unsendable);
MPIRPC_REGISTER_ASYNC(make_unsendable_later);
MPIRPC_REGISTER(read_unreadable);
MPIRPC_REGISTER(make_unreadable);

TEST_CASE("a result that fails to serialize reaches the caller as serialization_error naming "
          "the function, the worker and the cause",
          "[rpc][bad-input]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  const std::string w = worker(to);
  const std::string cause = "mpirpc: Boost.Serialization could not serialize a value of type "
                            "(anonymous namespace)::unsendable: unsendable refuses to be saved (v=";
  CHECK(serialization_error_of([&] { mpirpc::rpc_sync(to, make_unsendable, 7); }) ==
        "mpirpc: call to 'make_unsendable' on " + w + " failed: the result of 'make_unsendable' " +
            "could not be serialized on " + w + ": " + cause + "7)");
  CHECK(serialization_error_of([&] { mpirpc::rpc_async(to, make_unsendable, 8).wait(); }) ==
        "mpirpc: call to 'make_unsendable' on " + w + " failed: the result of 'make_unsendable' " +
            "could not be serialized on " + w + ": " + cause + "8)");
  // Async execution: the reply is sent from the returned future's continuation.
  CHECK(serialization_error_of([&] { mpirpc::rpc_sync(to, make_unsendable_later, 9); }) ==
        "mpirpc: call to 'make_unsendable_later' on " + w + " failed: the result of " +
            "'make_unsendable_later' could not be serialized on " + w + ": " + cause + "9)");
  // The callee keeps serving.
  CHECK(mpirpc::rpc_sync(to, add, 2, 2) == 4);
}

TEST_CASE("an argument that fails to deserialize on the callee reaches the caller as "
          "serialization_error naming the function, the worker and the cause",
          "[rpc][bad-input]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  const std::string w = worker(to);
  const std::string expected =
      "mpirpc: call to 'read_unreadable' on " + w + " failed: the arguments of 'read_unreadable' " +
      "could not be deserialized on " + w + ": mpirpc: Boost.Serialization could not " +
      "deserialize a value of type (anonymous namespace)::unreadable: unreadable refuses to be " +
      "loaded (v=5)";
  CHECK(serialization_error_of([&] {
          mpirpc::rpc_sync(to, read_unreadable, 1, unreadable{5, "a"});
        }) == expected);
  CHECK(serialization_error_of([&] {
          mpirpc::rpc_async(to, read_unreadable, 1, unreadable{5, "b"}).wait();
        }) == expected);
  CHECK(mpirpc::rpc_sync(to, add, 3, 3) == 6);
}

TEST_CASE("a result that fails to deserialize on the caller is a serialization_error",
          "[rpc][bad-input]") {
  mpirpc::runtime rt;
  const int to = next_rank();
  const std::string text =
      serialization_error_of([&] { mpirpc::rpc_sync(to, make_unreadable, 4); });
  CHECK_THAT(text, Catch::StartsWith("mpirpc: the result of 'make_unreadable' from " + worker(to) +
                                     " could not be decoded on " +
                                     worker(mpirpc_test::world_rank()) + ": ") &&
                       Catch::Contains("mpirpc: Boost.Serialization could not deserialize a "
                                       "value of type (anonymous namespace)::unreadable: "
                                       "unreadable refuses to be loaded (v=4)"));
  CHECK(mpirpc::rpc_sync(to, add, 4, 4) == 8);
}
