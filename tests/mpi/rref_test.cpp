// SPDX-License-Identifier: MIT
// Remote references: remote() of functions and constructors, to_here, ownership queries,
// local_value, the lifetime of the owner's objects under copies, forks passed along chains,
// rrefs returned from calls, self-owned rrefs, concurrent drops and many rrefs, proxies of
// every kind, errors of the creation, and mutation through proxies from several ranks.
//
// Objects count themselves (a live counter per rank): since an object is destroyed when its
// owner processes the last release, the owner checks its counter with eventually(...).
#include <catch2/catch.hpp>

#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"

using mpirpc_test::barrier;
using mpirpc_test::eventually;
using mpirpc_test::worker;
using mpirpc_test::world_rank;
using mpirpc_test::world_size;
using namespace std::chrono_literals;

namespace {

/// A serializable value that counts its live instances on this rank.
struct tracked {
  static std::atomic<int> live;

  tracked() { ++live; }
  tracked(int v, std::string l) : value(v), label(std::move(l)) { ++live; }
  tracked(const tracked& o) : value(o.value), label(o.label) { ++live; }
  tracked(tracked&& o) noexcept : value(o.value), label(std::move(o.label)) { ++live; }
  tracked& operator=(const tracked&) = default;
  tracked& operator=(tracked&&) = default;
  ~tracked() { --live; }

  int get() const { return value; }
  int add(int d) { return value += d; }

  template <class Archive> void serialize(Archive& a, unsigned) {
    a& value;
    a& label;
  }

  int value = 0;
  std::string label;
};
std::atomic<int> tracked::live{0};

/// A counter that is not serializable (it never leaves its owner) and is safe to call from
/// several server threads at once. Counts its live instances too.
class counter {
public:
  static std::atomic<int> live;

  counter() { ++live; }
  explicit counter(int start) : _total(start) { ++live; }
  counter(counter&& o) noexcept : _total(o._total.load()) { ++live; }
  counter(const counter&) = delete;
  ~counter() { --live; }

  int add(int n) { return _total += n; }
  int get() const { return _total.load(); }
  std::string where() const { return mpirpc::get_worker_info().name; }
  /// Async execution: adds what a nested call to `via` computes, from its continuation.
  mpirpc::future<int> add_via(int via, int n);

  static int twice(int x) { return 2 * x; }
  static std::string static_where() { return mpirpc::get_worker_info().name; }

private:
  std::atomic<int> _total{0};
};
std::atomic<int> counter::live{0};

/// 1000 * (the rank it runs on + 1) + n: shows where it ran.
int rank_plus(int n) {
  return 1000 * (mpirpc::get_worker_info().id + 1) + n;
}

mpirpc::future<int> counter::add_via(int via, int n) {
  return mpirpc::rpc_async(via, rank_plus, n).then([this](mpirpc::future<int> f) {
    return add(f.value());
  });
}

std::string where_am_i() {
  return mpirpc::get_worker_info().name;
}

/// Labels the value with the worker it was made on.
tracked make_tracked(int v) {
  return tracked(v, mpirpc::get_worker_info().name);
}

std::atomic<int> g_made{0};
tracked make_counted(int v) {
  ++g_made;
  return tracked(v, "counted");
}

tracked make_slowly(int v, int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return tracked(v, "slow");
}

tracked throwing_factory(int v) {
  throw std::invalid_argument("bad value " + std::to_string(v));
}

/// Never registered.
tracked unregistered_factory(int v) {
  return tracked(v, "never");
}

/// Async execution through remote(): the value is computed by a nested call to `via`.
mpirpc::future<int> value_via(int via, int n) {
  return mpirpc::rpc_async(via, rank_plus, n).then([](mpirpc::future<int> f) {
    return f.value() + 1;
  });
}

// ---- Functions that receive or return rrefs (run on the worker they are called on)

/// What a worker holding the reference sees: is_owner, confirmed_by_owner (on arrival),
/// owner_name, and (on the owner) local_value().value and to_here().value.
std::tuple<bool, bool, std::string, int, int> inspect(mpirpc::rref<tracked> r) {
  const bool owner = r.is_owner();
  const bool confirmed = r.confirmed_by_owner();
  const std::string name = r.owner_name();
  int local = -1;
  int here = -1;
  if (owner) {
    local = r.local_value().value;
    here = r.to_here().value;
  }
  return {owner, confirmed, name, local, here};
}

/// On the owner: changes the value itself through local_value().
int bump_local(mpirpc::rref<tracked> r, int d) {
  tracked& v = r.local_value();
  v.value += d;
  return r.local_value().value;
}

/// The message of the not_owner_error local_value() raises here, or a note if it did not.
std::string not_owner_message(mpirpc::rref<tracked> r) {
  try {
    (void)r.local_value();
    return "no exception";
  } catch (const mpirpc::not_owner_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception: ") + e.what();
  }
}

std::mutex g_mutex;
std::vector<mpirpc::rref<tracked>> g_kept;
std::vector<mpirpc::rref<counter>> g_counters;

std::vector<mpirpc::rref<tracked>> take_kept() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return std::exchange(g_kept, {});
}
std::vector<mpirpc::rref<counter>> take_counters() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return std::exchange(g_counters, {});
}

/// Keeps the references on this worker (until take_kept()); returns how many it holds now.
int keep_all(std::vector<mpirpc::rref<tracked>> rs) {
  std::lock_guard<std::mutex> lock(g_mutex);
  for (auto& r : rs)
    g_kept.push_back(std::move(r));
  return static_cast<int>(g_kept.size());
}

int keep_counter(mpirpc::rref<counter> c) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_counters.push_back(std::move(c));
  return static_cast<int>(g_counters.size());
}

/// One hop of a chain: keeps a copy here, adds 1 through the proxy and passes the reference
/// on; the last hop returns the value.
int chain_hop(mpirpc::rref<tracked> r, int hop, int hops) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_kept.push_back(r);
  }
  r.rpc_sync(&tracked::add, 1);
  if (hop + 1 == hops) return r.rpc_sync(&tracked::get);
  return mpirpc::rpc_sync((hop + 1) % mpirpc_test::world_size(), chain_hop, r, hop + 1, hops);
}

/// Reads the value through the proxy (the fork is dropped when this returns).
int touch(mpirpc::rref<tracked> r) {
  return r.rpc_sync(&tracked::get);
}

int sum_values(std::vector<mpirpc::rref<tracked>> rs) {
  int sum = 0;
  for (const auto& r : rs)
    sum += r.to_here().value;
  return sum;
}

bool is_empty(mpirpc::rref<tracked> r) {
  return !r;
}

/// Creates an object on `owner` and returns the reference to it.
mpirpc::rref<tracked> make_elsewhere(int owner, int v) {
  return mpirpc::remote(owner, make_tracked, v);
}

/// Creates an object on this very worker and returns the reference to it at once.
mpirpc::rref<tracked> make_here(int v) {
  return mpirpc::remote(mpirpc::get_worker_info(), make_tracked, v);
}

/// A reference this worker passes on many times (see the replenish test).
mpirpc::rref<tracked> g_relay;

/// `n` copies of g_relay in one reply: more forks than a received reference has weight for.
std::vector<mpirpc::rref<tracked>> copies_of_relay(int n) {
  return std::vector<mpirpc::rref<tracked>>(static_cast<std::size_t>(n), g_relay);
}

/// Every kind of proxy call from a worker that received the reference: the results (-1 for a
/// call that threw), the errors, where the member and the static member ran, and whether the
/// fork arrived confirmed.
std::tuple<std::vector<int>, std::string, std::string, std::string, bool>
use_counter_fork(mpirpc::rref<counter> c, int via) {
  const bool confirmed_on_arrival = c.confirmed_by_owner();
  std::vector<int> out;
  std::string errors;
  auto step = [&](const char* what, auto&& call) {
    try {
      out.push_back(call());
    } catch (const std::exception& e) {
      out.push_back(-1);
      errors += std::string(what) + ": " + e.what() + "\n";
    }
  };
  step("rpc_sync(add)", [&] { return c.rpc_sync(&counter::add, 100); });
  step("rpc_async(add)", [&] { return c.rpc_async(&counter::add, 10).wait(); });
  step("remote(get).to_here", [&] { return c.remote(&counter::get).to_here(); });
  step("rpc_sync(get)", [&] { return c.rpc_sync(&counter::get); });
  step("rpc_sync(twice)", [&] { return c.rpc_sync(&counter::twice, 4); });
  step("rpc_sync(add_via)", [&] { return c.rpc_sync(&counter::add_via, via, 1); });
  return {out, errors, c.rpc_sync(&counter::where), c.rpc_sync(&counter::static_where),
          confirmed_on_arrival};
}

/// How a failed creation looks here: "remote:<type>@<origin>" or, on the owner, the original
/// exception "local:<what>".
std::string failure_seen(mpirpc::rref<tracked> r) {
  try {
    if (r.is_owner()) {
      (void)r.local_value();
    } else {
      (void)r.to_here();
    }
    return "no exception";
  } catch (const mpirpc::remote_error& e) {
    return "remote:" + e.remote_type() + "@" + e.origin_worker();
  } catch (const std::invalid_argument& e) {
    return std::string("local:") + e.what();
  } catch (const std::exception& e) {
    return std::string("other:") + e.what();
  }
}

// ---- Helpers of the test bodies

/// A worker other than worker0 and worker1 when there is one, else worker1.
int third_or_owner() {
  return world_size() >= 3 ? 2 : 1;
}

/// This rank's counters before any rank of a new session did anything with rrefs (the
/// barrier keeps the others from creating objects here before they are read).
mpirpc::runtime_stats baseline() {
  const auto s = mpirpc::stats();
  barrier();
  return s;
}

/// Runs `body`; an unexpected exception fails the test case but does not skip what follows
/// (the barriers every rank must reach).
template <class Body> void guarded(Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    FAIL_CHECK("unexpected exception: " << e.what());
  }
}

bool rref_counts_are(const mpirpc::runtime_stats& base) {
  const auto s = mpirpc::stats();
  return s.rref_owned_objects == base.rref_owned_objects &&
         s.rref_references == base.rref_references;
}

/// After every rank dropped its references: this rank's rref counters return to `base`.
void check_counts_back_to(const mpirpc::runtime_stats& base) {
  CHECK(eventually([&] { return rref_counts_are(base); }, 10s));
  const auto s = mpirpc::stats();
  CHECK(s.rref_owned_objects == base.rref_owned_objects);
  CHECK(s.rref_references == base.rref_references);
}

} // namespace

MPIRPC_REGISTER(rank_plus);
MPIRPC_REGISTER(where_am_i);
MPIRPC_REGISTER(make_tracked);
MPIRPC_REGISTER(make_counted);
MPIRPC_REGISTER(make_slowly);
MPIRPC_REGISTER(throwing_factory);
MPIRPC_REGISTER_ASYNC(value_via);
MPIRPC_REGISTER(inspect);
MPIRPC_REGISTER(bump_local);
MPIRPC_REGISTER(not_owner_message);
MPIRPC_REGISTER(keep_all);
MPIRPC_REGISTER(keep_counter);
MPIRPC_REGISTER(chain_hop);
MPIRPC_REGISTER(touch);
MPIRPC_REGISTER(sum_values);
MPIRPC_REGISTER(is_empty);
MPIRPC_REGISTER(make_elsewhere);
MPIRPC_REGISTER(make_here);
MPIRPC_REGISTER(copies_of_relay);
MPIRPC_REGISTER(use_counter_fork);
MPIRPC_REGISTER(failure_seen);
MPIRPC_REGISTER_CONSTRUCTOR(tracked, int, std::string);
MPIRPC_REGISTER_CONSTRUCTOR(counter);
MPIRPC_REGISTER_CONSTRUCTOR(counter, int);
MPIRPC_REGISTER_METHOD(tracked::get);
MPIRPC_REGISTER_METHOD(tracked::add);
MPIRPC_REGISTER_METHOD(counter::add);
MPIRPC_REGISTER_METHOD(counter::get);
MPIRPC_REGISTER_METHOD(counter::where);
MPIRPC_REGISTER_METHOD(counter::add_via);
MPIRPC_REGISTER(counter::twice);
MPIRPC_REGISTER(counter::static_where);

// ---------------------------------------------------------------------------------------------
// 1. remote(), to_here, ownership

TEST_CASE("remote() of a function and of a constructor; to_here copies the value", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  if (world_rank() == 0)
    guarded([&] {
      mpirpc::rref<tracked> r = mpirpc::remote(worker(1), make_tracked, 7);
      mpirpc::rref<tracked> c =
          mpirpc::remote(1, mpirpc::construct<tracked, int, std::string>, 3, "three");
      CHECK(r);
      CHECK(r.owner() == mpirpc::get_worker_info("worker1"));
      CHECK(r.owner().id == 1);
      CHECK(r.owner_name() == "worker1");
      CHECK_FALSE(r.is_owner());
      CHECK(c.owner_name() == "worker1");

      tracked v = r.to_here();
      CHECK(v.value == 7);
      CHECK(v.label == "worker1"); // make_tracked ran on the owner
      CHECK(r.confirmed_by_owner());
      v.value = 100; // a copy: the owner's value is untouched
      CHECK(r.to_here(5s).value == 7);
      CHECK(r.to_here(std::chrono::milliseconds(5000)).label == "worker1");

      const tracked three = c.to_here(10s);
      CHECK(three.value == 3);
      CHECK(three.label == "three");
      CHECK(c.confirmed_by_owner());

      // Copies of one reference share one record here.
      const auto before = mpirpc::stats().rref_references;
      {
        mpirpc::rref<tracked> copy = r;
        std::vector<mpirpc::rref<tracked>> more(5, r);
        CHECK(mpirpc::stats().rref_references == before);
        CHECK(copy.to_here().value == 7);
      }

      // The owner sees itself as owner, the creator's confirmation travels with the fork, and
      // local_value() is the value itself.
      const auto [is_owner, confirmed, name, local, here] = mpirpc::rpc_sync(1, inspect, r);
      CHECK(is_owner);
      CHECK(confirmed);
      CHECK(name == "worker1");
      CHECK(local == 7);
      CHECK(here == 7);
      CHECK(mpirpc::rpc_sync(1, bump_local, r, 5) == 12);
      CHECK(r.to_here().value == 12);

      // Away from the owner, local_value() names the owner and the caller.
      try {
        (void)r.local_value();
        FAIL_CHECK("local_value() away from the owner did not throw");
      } catch (const mpirpc::not_owner_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("worker1") && Catch::Contains("worker0"));
      }
      const std::string msg = mpirpc::rpc_sync(third_or_owner() == 1 ? 0 : 2, not_owner_message, r);
      const std::string caller = worker(third_or_owner() == 1 ? 0 : 2);
      CHECK_THAT(msg, Catch::Contains("worker1") && Catch::Contains(caller));
      CHECK_THAT(msg, !Catch::Contains("no exception") && !Catch::Contains("wrong exception"));
      const std::string on_owner = mpirpc::rpc_sync(1, not_owner_message, r);
      CHECK(on_owner == "no exception");

      // rrefs inside a container, read on another worker.
      std::vector<mpirpc::rref<tracked>> several;
      for (int i = 1; i <= 5; ++i)
        several.push_back(mpirpc::remote(1, make_tracked, i));
      CHECK(mpirpc::rpc_sync(third_or_owner(), sum_values, several) == 15);
    });
  barrier();
  if (world_rank() == 1) {
    // Everything created above is gone once the last references were dropped.
    CHECK(eventually([&] { return tracked::live == live0; }, 10s));
    CHECK(tracked::live == live0);
  }
  check_counts_back_to(base);
}

TEST_CASE("an rref owned by its creator (remote to self)", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int me = world_rank();
  {
    mpirpc::rref<tracked> r = mpirpc::remote(me, make_tracked, 40 + me);
    CHECK(r.is_owner());
    CHECK(r.confirmed_by_owner());
    CHECK(r.owner_name() == worker(me));
    CHECK(r.owner() == mpirpc::get_worker_info());
    // A proxy call first: it waits for the object (the immediate local_value and to_here are
    // the next test case's subject).
    CHECK(r.rpc_sync(&tracked::get) == 40 + me);
    CHECK(r.local_value().value == 40 + me);
    CHECK(r.local_value().label == worker(me));
    CHECK(r.to_here().value == 40 + me);
    CHECK(r.rpc_sync(&tracked::add, 1) == 41 + me);
    CHECK(r.local_value().value == 41 + me);
    CHECK(tracked::live == live0 + 1);
    // A fork on another worker uses it through its proxy; the creator still holds it after.
    CHECK(mpirpc::rpc_sync(mpirpc_test::next_rank(), touch, r) == 41 + me);
    const auto [is_owner, confirmed, name, local, here] =
        mpirpc::rpc_sync(mpirpc_test::next_rank(), inspect, r);
    CHECK_FALSE(is_owner);
    CHECK(confirmed);
    CHECK(name == worker(me));
    CHECK(r.local_value().value == 41 + me);
  }
  // Dropped on the owner itself: destroyed without waiting for anyone (the forks' releases may
  // still be in flight).
  CHECK(eventually([&] { return tracked::live == live0; }, 10s));
  barrier();
  check_counts_back_to(base);
}

TEST_CASE("on the owner, local_value and to_here wait for an object not created yet", "[rref]") {
  const int live0 = tracked::live;
  // One server thread per worker: worker0 keeps it busy so that requests to worker0 queue.
  mpirpc::options one_thread;
  one_thread.num_worker_threads = 1;
  mpirpc::runtime rt(one_thread);
  const auto base = baseline();
  const int me = world_rank();
  // remote() to self returns before the creation request is served; local_value() is
  // documented to wait until the value exists, and to_here() to copy it.
  guarded([&] {
    mpirpc::rref<tracked> r = mpirpc::remote(me, make_tracked, 50 + me);
    CHECK(r.local_value().value == 50 + me);
  });
  guarded([&] {
    mpirpc::rref<tracked> r = mpirpc::remote(me, make_tracked, 60 + me);
    CHECK(r.to_here().value == 60 + me);
  });
  barrier();
  if (world_rank() == 0)
    guarded([&] {
      // worker0's only server thread sleeps, so the creation request worker1 sends to worker0
      // waits in worker0's queue, while the reply carrying the fork is taken at once.
      mpirpc::future<tracked> busy = mpirpc::rpc_async(0, make_slowly, 0, 300);
      mpirpc::rref<tracked> r = mpirpc::rpc_sync(1, make_elsewhere, 0, 70);
      CHECK(r.is_owner());
      guarded([&] { CHECK(r.to_here().value == 70); });
      guarded([&] { CHECK(r.local_value().value == 70); });
      CHECK(busy.wait().value == 0);
    });
  barrier();
  CHECK(eventually([&] { return tracked::live == live0; }, 10s));
  check_counts_back_to(base);
}

// ---------------------------------------------------------------------------------------------
// 2. Lifetime

TEST_CASE("an rref created, copied and dropped on one worker frees its object on the owner",
          "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int owner = mpirpc_test::next_rank();
  {
    // Every rank creates one object on the next one: each rank owns exactly one.
    mpirpc::rref<tracked> r = mpirpc::remote(owner, make_tracked, world_rank());
    std::vector<mpirpc::rref<tracked>> copies(10, r);
    mpirpc::rref<tracked> moved = std::move(copies.back());
    CHECK_FALSE(copies.back());
    CHECK(moved.to_here().value == world_rank());
    CHECK(mpirpc::stats().rref_references == base.rref_references + 1);
    barrier();
    CHECK(eventually([&] { return tracked::live == live0 + 1; }, 10s));
    CHECK(mpirpc::stats().rref_owned_objects == base.rref_owned_objects + 1);
    barrier();
    // Drop the copies first: the object stays while one handle remains.
    copies.clear();
    CHECK(moved.to_here().value == world_rank());
    barrier();
    std::this_thread::sleep_for(20ms);
    CHECK(tracked::live == live0 + 1);
    barrier();
  }
  barrier();
  CHECK(eventually([&] { return tracked::live == live0; }, 10s));
  CHECK(tracked::live == live0);
  check_counts_back_to(base);
}

TEST_CASE("an rref dropped at once, before its creation was answered, frees its object", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int owner = mpirpc_test::next_rank();
  // Never used: the release must not overtake the creation (nor leak the object).
  (void)mpirpc::remote(owner, make_tracked, 1);
  { auto r = mpirpc::remote(owner, make_slowly, 2, 150); }
  {
    auto r = mpirpc::remote(owner, make_slowly, 3, 100);
    auto copy = r;
    CHECK(mpirpc::rpc_sync(owner, touch, copy) == 3); // a call that overtakes the creation waits
  }
  barrier();
  CHECK(eventually([&] { return tracked::live == live0; }, 10s));
  CHECK(tracked::live == live0);
  check_counts_back_to(base);
}

TEST_CASE("a fork passed along a chain of every worker", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int owner = world_size() / 2; // 1 of 2, 1 of 3, 2 of 4: in the middle of the chain
  // Twice round the ring: worker0 -> worker1 -> ... -> worker(n-1) -> worker0 -> ...; every
  // worker, the owner included, receives the reference (some of them twice) and passes it on.
  const int hops = 2 * world_size();
  if (world_rank() == 0)
    guarded([&] {
      mpirpc::rref<tracked> r = mpirpc::remote(owner, make_tracked, 0);
      CHECK(mpirpc::rpc_sync(1, chain_hop, r, 1, hops) == hops - 1);
      CHECK(r.to_here().value == hops - 1);
    });
  barrier();
  // The creator's handle is gone; the copies kept along the chain still hold the object.
  std::this_thread::sleep_for(20ms);
  {
    auto kept = take_kept();
    // worker0 was visited once (hop n), the others twice.
    CHECK(kept.size() == (world_rank() == 0 ? 1u : 2u));
    for (const auto& r : kept) {
      CHECK(r.owner_name() == worker(owner));
      CHECK(r.confirmed_by_owner());
      CHECK(r.rpc_sync(&tracked::get) == hops - 1);
    }
    if (world_rank() == owner) {
      CHECK(tracked::live == live0 + 1);
      for (const auto& r : kept)
        CHECK(r.local_value().value == hops - 1);
    }
    barrier();
    // Dropped everywhere at about the same time.
  }
  barrier();
  if (world_rank() == owner) {
    CHECK(eventually([&] { return tracked::live == live0; }, 10s));
    CHECK(tracked::live == live0);
  }
  check_counts_back_to(base);
}

TEST_CASE("rrefs returned from remote functions", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  // The object's owner is a third worker (with two ranks: the caller itself).
  const int elsewhere = world_size() >= 3 ? 2 : 0;
  if (world_rank() == 0)
    guarded([&] {
      {
        mpirpc::rref<tracked> r = mpirpc::rpc_sync(1, make_elsewhere, elsewhere, 42);
        if (!r) {
          FAIL_CHECK("no rref returned");
          return;
        }
        CHECK(r.owner_name() == worker(elsewhere));
        CHECK(r.is_owner() == (elsewhere == 0));
        CHECK(r.to_here().value == 42);
        CHECK(r.to_here().label == worker(elsewhere));
        CHECK(r.rpc_sync(&tracked::add, 1) == 43);
        CHECK(r.confirmed_by_owner());
      }
      {
        // Created by worker1 on itself; worker1 dropped its handle as the call returned.
        mpirpc::rref<tracked> h = mpirpc::rpc_sync(1, make_here, 7);
        if (!h) {
          FAIL_CHECK("no rref returned");
          return;
        }
        CHECK(h.owner_name() == "worker1");
        CHECK(h.confirmed_by_owner()); // the sender was the owner
        CHECK(h.rpc_sync(&tracked::get) == 7);
        CHECK(h.to_here().label == "worker1");
        // Returned from an asynchronous call too.
        mpirpc::future<mpirpc::rref<tracked>> f = mpirpc::rpc_async(1, make_here, 8);
        CHECK(f.wait().to_here().value == 8);
      }
    });
  barrier();
  if (world_rank() == 1 || world_rank() == elsewhere) {
    CHECK(eventually([&] { return tracked::live == live0; }, 10s));
    CHECK(tracked::live == live0);
  }
  check_counts_back_to(base);
}

TEST_CASE("concurrent drops from every worker and several threads", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int owner = world_size() - 1;
  constexpr int objects = 4;
  constexpr int threads = 4;
  if (world_rank() == 0)
    guarded([&] {
      std::vector<mpirpc::rref<tracked>> rs;
      for (int i = 0; i < objects; ++i)
        rs.push_back(mpirpc::remote(owner, make_tracked, 10 * i));
      for (int k = 0; k < world_size(); ++k)
        CHECK(mpirpc::rpc_sync(k, keep_all, rs) == objects);
    }); // worker0's own handles are dropped here; the kept ones remain.
  barrier();
  if (world_rank() == owner) CHECK(tracked::live == live0 + objects);
  {
    std::vector<mpirpc::rref<tracked>> mine = take_kept();
    CHECK(mine.size() == static_cast<std::size_t>(objects));
    mine.resize(objects); // (never needed: keeps a failure above from hanging the others)
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::atomic<int> wrong{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t, copies = mine]() mutable {
        std::vector<mpirpc::rref<tracked>> more;
        for (int k = 0; k < 8; ++k)
          more.insert(more.end(), copies.begin(), copies.end());
        try {
          for (int i = 0; i < objects; ++i) {
            if (copies[static_cast<std::size_t>(i)].rpc_sync(&tracked::get) != 10 * i) ++wrong;
          }
          // Forks made from several threads at once, used and dropped on the next worker.
          const int i = t % objects;
          if (mpirpc::rpc_sync(mpirpc_test::next_rank(), touch,
                               copies[static_cast<std::size_t>(i)]) != 10 * i) {
            ++wrong;
          }
        } catch (...) {
          ++wrong;
        }
        ++ready;
        while (!go.load())
          std::this_thread::yield();
        copies.clear();
        more.clear();
      });
    }
    while (ready.load() < threads)
      std::this_thread::sleep_for(1ms);
    barrier(); // every rank's threads are ready: all drop at once
    mine.clear();
    go = true;
    for (auto& th : pool)
      th.join();
    CHECK(wrong.load() == 0);
  }
  barrier();
  if (world_rank() == owner) {
    CHECK(eventually([&] { return tracked::live == live0; }, 10s));
    CHECK(tracked::live == live0);
  }
  check_counts_back_to(base);
}

/// Heap bytes in use by this process (every malloc arena). Unlike resident memory, this does
/// not depend on which threads' arenas happened to serve the allocations.
long heap_in_use() {
  return static_cast<long>(mallinfo2().uordblks);
}

TEST_CASE("10 000 rrefs created and dropped in batches leave nothing behind", "[rref]") {
  const int live0 = tracked::live;
  g_made = 0; // before the collective start: no rank creates anything before every rank reset
  mpirpc::runtime rt;
  const auto base = baseline();
  constexpr int total = 10000;
  constexpr int batch = 500;
  const int owner = 0;
  const int creators = world_size() - 1;
  // Four rounds of 2 500. A leak grows the heap in every round; capacity (MPI's free lists,
  // table buckets, buffers) grows once, when concurrency reaches a new peak. So at least one
  // of the last three rounds must leave the heap in use (nearly) where it was, on the owner
  // and on the creators alike.
  constexpr int rounds = 4;
  std::vector<long> heap_after_round;
  for (int round = 0; round < rounds; ++round) {
    if (world_rank() != owner)
      guarded([&] {
        // Ranks 1..n-1 share the work; rank 1 takes the remainder.
        const int all = total / rounds;
        const int share = all / creators + (world_rank() == 1 ? all % creators : 0);
        std::vector<mpirpc::rref<tracked>> rs;
        rs.reserve(batch);
        int made = 0;
        int batches = 0;
        while (made < share) {
          const int n = std::min(batch, share - made);
          for (int i = 0; i < n; ++i)
            rs.push_back(mpirpc::remote(owner, make_counted, made + i));
          // This batch's records (those of earlier batches may live until their replies arrive).
          CHECK(eventually(
              [&] { return mpirpc::stats().rref_references == base.rref_references + n; }, 10s));
          if (batches++ % 4 == 0) CHECK(rs.back().rpc_sync(&tracked::get) == made + n - 1);
          made += n;
          rs.clear();
        }
        CHECK(made == share);
      });
    barrier();
    if (world_rank() == owner) {
      const int expected = total / rounds * (round + 1);
      CHECK(eventually([&] { return g_made == expected && tracked::live == live0; }, 15s));
      CHECK(g_made == expected);
      CHECK(tracked::live == live0);
    }
    check_counts_back_to(base);
    barrier();
    heap_after_round.push_back(heap_in_use());
  }
  long least_growth = std::numeric_limits<long>::max();
  std::string growths;
  for (int round = 1; round < rounds; ++round) {
    const long growth = heap_after_round[round] - heap_after_round[round - 1];
    least_growth = std::min(least_growth, growth);
    growths += std::to_string(growth / 1024) + " KiB ";
  }
  INFO("heap in use after the first round: " << heap_after_round[0] / 1024
                                             << " KiB; growth in the later rounds: " << growths);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizers' allocators do not report through mallinfo2.
  WARN("heap check skipped under a sanitizer");
#else
  CHECK(least_growth < 512 * 1024);
#endif
}

TEST_CASE("a reference passed on thousands of times gets more weight from its owner", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int owner = 1;
  const int target = world_size() > 2 ? 2 : 1;
  if (world_rank() == 0)
    guarded([&] {
      // A fork minted by the owner: far less weight than a creator's record, and halved by
      // every fork made from it.
      g_relay = mpirpc::rpc_sync(owner, make_here, 7);
      REQUIRE(g_relay);
      CHECK_FALSE(g_relay.is_owner());
      // 40 forks in one reply exhaust it: the reply waits for the owner's replenish and is
      // built again.
      std::vector<mpirpc::rref<tracked>> copies = mpirpc::rpc_sync(0, copies_of_relay, 40);
      CHECK(copies.size() == 40);
      CHECK(copies.front().to_here().value == 7);
      CHECK(copies.back().rpc_sync(&tracked::get) == 7);
      // 2 000 forks in flight at once, each dropped by the receiver.
      std::vector<mpirpc::future<bool>> sent;
      for (int i = 0; i < 2000; ++i)
        sent.push_back(mpirpc::rpc_async(target, is_empty, g_relay));
      int arrived = 0;
      for (auto& f : sent)
        arrived += f.wait() ? 0 : 1;
      CHECK(arrived == 2000);
      copies.clear();
      g_relay = mpirpc::rref<tracked>();
    });
  barrier();
  if (world_rank() == owner) CHECK(eventually([&] { return tracked::live == live0; }, 10s));
  check_counts_back_to(base);
}

// ---------------------------------------------------------------------------------------------
// 3. Proxies

TEST_CASE("proxies of every kind", "[rref]") {
  const int live0 = counter::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int via = world_size() >= 3 ? 2 : 0; // the nested call of add_via goes here
  if (world_rank() == 0)
    guarded([&] {
      mpirpc::rref<counter> c = mpirpc::remote(1, mpirpc::construct<counter, int>, 10);
      CHECK(c.owner_name() == "worker1");
      CHECK(c.rpc_sync(&counter::add, 5) == 15);
      CHECK(c.rpc_sync(&counter::add, 1, mpirpc::timeout(5s)) == 16);
      mpirpc::future<int> f = c.rpc_async(&counter::add, 1);
      CHECK(f.wait() == 17);
      CHECK(c.rpc_async(&counter::get, mpirpc::timeout(5s)).wait() == 17);
      // remote() through the proxy: the result stays on the owner.
      mpirpc::rref<int> v = c.remote(&counter::get);
      CHECK(v.owner_name() == "worker1");
      CHECK(v.to_here() == 17);
      CHECK(c.rpc_sync(&counter::add, 3) == 20);
      CHECK(v.to_here() == 17); // a snapshot, not a view
      // const member functions
      CHECK(c.rpc_sync(&counter::get) == 20);
      CHECK(c.rpc_sync(&counter::where) == "worker1");
      CHECK(c.remote(&counter::where).to_here() == "worker1");
      // A member returning a future: a nested call to `via`, continued with then().
      CHECK(c.rpc_sync(&counter::add_via, via, 2) == 20 + 1000 * (via + 1) + 2);
      int expected = 20 + 1000 * (via + 1) + 2;
      expected += 1000 * (via + 1) + 3;
      CHECK(c.rpc_async(&counter::add_via, via, 3).wait() == expected);
      expected += 1000 * (via + 1) + 4;
      CHECK(c.remote(&counter::add_via, via, 4).to_here() == expected);
      CHECK(c.rpc_sync(&counter::get) == expected);
      // Static member functions and free functions run on the owner.
      CHECK(c.rpc_sync(&counter::twice, 21) == 42);
      CHECK(c.rpc_async(&counter::twice, 5).wait() == 10);
      CHECK(c.remote(&counter::twice, 6).to_here() == 12);
      CHECK(c.rpc_sync(&counter::static_where) == "worker1");
      CHECK(c.rpc_sync(where_am_i) == "worker1");
      // remote() of an async-execution function.
      mpirpc::rref<int> a = mpirpc::remote(1, value_via, via, 5);
      CHECK(a.to_here() == 1000 * (via + 1) + 5 + 1);

      // Proxy calls from a worker that received a fork.
      const int user = third_or_owner();
      auto [out, errors, where, static_where, confirmed] =
          mpirpc::rpc_sync(user, use_counter_fork, c, via);
      CHECK(confirmed);
      CHECK(errors == "");
      CHECK(out.size() == 6);
      out.resize(6, -1);
      CHECK(out[0] == expected + 100);
      CHECK(out[1] == expected + 110);
      CHECK(out[2] == expected + 110);
      CHECK(out[3] == expected + 110);
      CHECK(out[4] == 8);
      CHECK(out[5] == expected + 110 + 1000 * (via + 1) + 1);
      CHECK(where == "worker1");
      CHECK(static_where == "worker1");
      CHECK(c.rpc_sync(&counter::get) == out[5]);
    });
  barrier();
  if (world_rank() == 1) {
    CHECK(eventually([&] { return counter::live == live0; }, 10s));
    CHECK(counter::live == live0);
  }
  check_counts_back_to(base);
}

TEST_CASE("a proxy call made before the creation finished waits for the object", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  if (world_rank() == 0)
    guarded([&] {
      auto r = mpirpc::remote(1, make_slowly, 5, 200);
      CHECK(r.rpc_sync(&tracked::add, 1) == 6);
      CHECK(r.to_here().value == 6);
    });
  barrier();
  if (world_rank() == 1) CHECK(eventually([&] { return tracked::live == live0; }, 10s));
  check_counts_back_to(base);
}

// ---------------------------------------------------------------------------------------------
// 4. Errors

TEST_CASE("a creation that throws fails every later use with its error", "[rref]") {
  mpirpc::runtime rt;
  const auto base = baseline();
  if (world_rank() == 0)
    guarded([&] {
      mpirpc::rref<tracked> r = mpirpc::remote(1, throwing_factory, 3); // does not throw here
      CHECK(r);
      try {
        (void)r.to_here();
        FAIL_CHECK("to_here() of a failed creation did not throw");
      } catch (const mpirpc::remote_error& e) {
        CHECK_THAT(e.remote_type(), Catch::Contains("invalid_argument"));
        CHECK(e.origin_worker() == "worker1");
        CHECK(e.remote_message() == "bad value 3");
        CHECK_THAT(e.what(), Catch::Contains("worker1"));
      }
      try {
        (void)r.rpc_sync(&tracked::get);
        FAIL_CHECK("a proxy call on a failed creation did not throw");
      } catch (const mpirpc::remote_error& e) {
        CHECK_THAT(e.remote_type(), Catch::Contains("invalid_argument"));
        CHECK(e.origin_worker() == "worker1");
        CHECK_THAT(e.what(), Catch::Contains("worker1"));
      }
      CHECK_THROWS_AS(r.rpc_async(&tracked::add, 1).wait(), mpirpc::remote_error);
      CHECK_THROWS_AS(r.remote(&tracked::get).to_here(), mpirpc::remote_error);
      CHECK(r.confirmed_by_owner()); // the owner answered, with the error
      // A fork sees the same error; the owner sees the original exception.
      if (world_size() >= 3) {
        CHECK(mpirpc::rpc_sync(2, failure_seen, r) == "remote:std::invalid_argument@worker1");
      }
      CHECK(mpirpc::rpc_sync(1, failure_seen, r) == "local:bad value 3");
    });
  barrier();
  check_counts_back_to(base);
}

TEST_CASE("a creation that times out fails its next use with timeout_error", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  if (world_rank() == 0)
    guarded([&] {
      mpirpc::rref<tracked> r =
          mpirpc::remote(1, make_slowly, 1, 600, mpirpc::timeout(std::chrono::milliseconds(50)));
      std::this_thread::sleep_for(250ms); // the creation's timeout has passed
      CHECK_THROWS_AS(r.to_here(), mpirpc::timeout_error);
      CHECK_THROWS_AS(r.rpc_sync(&tracked::get), mpirpc::timeout_error);
      CHECK_THROWS_AS(r.rpc_async(&tracked::get).wait(), mpirpc::timeout_error);
      CHECK_THROWS_AS(r.remote(&tracked::get).to_here(), mpirpc::timeout_error);

      // to_here's own timeout: a creation that is slow, not failed.
      mpirpc::rref<tracked> slow = mpirpc::remote(1, make_slowly, 2, 400);
      CHECK_THROWS_AS(slow.to_here(std::chrono::milliseconds(50)), mpirpc::timeout_error);
      CHECK(slow.to_here(10s).value == 2); // the reference itself is still good
    });
  barrier();
  if (world_rank() == 1) {
    // The timed-out object was created late; its creator's release still frees it.
    CHECK(eventually([&] { return tracked::live == live0; }, 10s));
    CHECK(tracked::live == live0);
  }
  check_counts_back_to(base);
}

TEST_CASE("an empty rref throws error on use; it travels as an empty rref", "[rref]") {
  mpirpc::runtime rt;
  const auto base = baseline();
  mpirpc::rref<tracked> e;
  CHECK_FALSE(e);
  CHECK_THROWS_AS(e.to_here(), mpirpc::error);
  CHECK_THROWS_AS(e.to_here(1s), mpirpc::error);
  CHECK_THROWS_AS(e.local_value(), mpirpc::error);
  CHECK_THROWS_AS(e.owner(), mpirpc::error);
  CHECK_THROWS_AS(e.owner_name(), mpirpc::error);
  CHECK_THROWS_AS(e.is_owner(), mpirpc::error);
  CHECK_THROWS_AS(e.confirmed_by_owner(), mpirpc::error);
  CHECK_THROWS_AS(e.rpc_sync(&tracked::get), mpirpc::error);
  CHECK_THROWS_AS(e.rpc_async(&tracked::get), mpirpc::error);
  CHECK_THROWS_AS(e.remote(&tracked::get), mpirpc::error);
  CHECK_THROWS_WITH(e.to_here(), Catch::Contains("empty rref"));
  CHECK(mpirpc::rpc_sync(mpirpc_test::next_rank(), is_empty, e));
  // A moved-from rref is empty too.
  mpirpc::rref<tracked> r = mpirpc::remote(mpirpc_test::next_rank(), make_tracked, 1);
  mpirpc::rref<tracked> moved = std::move(r);
  CHECK_FALSE(r);
  CHECK_THROWS_AS(r.to_here(), mpirpc::error);
  CHECK(moved.to_here().value == 1);
  CHECK_FALSE(mpirpc::rpc_sync(mpirpc_test::next_rank(), is_empty, moved));
  moved = mpirpc::rref<tracked>();
  barrier();
  check_counts_back_to(base);
}

TEST_CASE("remote() to an unknown worker or of an unregistered function throws at once", "[rref]") {
  mpirpc::runtime rt;
  const auto base = baseline();
  CHECK_THROWS_AS(mpirpc::remote("no_such_worker", make_tracked, 1), mpirpc::unknown_worker_error);
  CHECK_THROWS_AS(mpirpc::remote(world_size(), make_tracked, 1), mpirpc::unknown_worker_error);
  CHECK_THROWS_AS(mpirpc::remote(mpirpc_test::next_rank(), unregistered_factory, 1),
                  mpirpc::unknown_function_error);
  CHECK(rref_counts_are(base));
  barrier();
  check_counts_back_to(base);
}

TEST_CASE("an rref kept past shutdown is reported, then throws shutdown_error", "[rref]") {
  const int live0 = tracked::live;
  mpirpc::rref<tracked> survivor;
  std::string log = mpirpc_test::capture_stderr([&] {
    mpirpc::runtime rt;
    if (world_rank() == 0) {
      survivor = mpirpc::remote(1, make_tracked, 9);
      CHECK(survivor.to_here().value == 9);
    }
    barrier();
    if (world_rank() == 1) CHECK(tracked::live == live0 + 1);
  });
  // The owner destroyed its object as its runtime stopped.
  if (world_rank() == 1) {
    CHECK(tracked::live == live0);
    CHECK_THAT(log, Catch::Contains("1 object(s) owned here still referenced at shutdown"));
  }
  if (world_rank() == 0)
    guarded([&] {
      CHECK_THAT(log, Catch::Contains("still alive at shutdown") && Catch::Contains("worker1"));
      CHECK_THROWS_AS(survivor.to_here(), mpirpc::shutdown_error);
      CHECK_THROWS_AS(survivor.rpc_sync(&tracked::get), mpirpc::shutdown_error);
    });
  survivor = mpirpc::rref<tracked>(); // sends nothing
}

// ---------------------------------------------------------------------------------------------
// 5. Mutation through proxies

TEST_CASE("increments through proxies from every worker add up", "[rref]") {
  const int live0 = counter::live;
  mpirpc::runtime rt;
  const auto base = baseline();
  const int owner = world_size() - 1;
  constexpr int n = 100;
  if (world_rank() == 0)
    guarded([&] {
      mpirpc::rref<counter> c = mpirpc::remote(owner, mpirpc::construct<counter>);
      for (int k = 0; k < world_size(); ++k)
        CHECK(mpirpc::rpc_sync(k, keep_counter, c) == 1);
    });
  barrier();
  {
    auto mine = take_counters();
    CHECK(mine.size() == 1u);
    mine.resize(1); // (never needed: keeps a failure above from hanging the others)
    const auto c = mine.front();
    // Half asynchronous (all in flight at once), half synchronous, from two threads.
    std::atomic<int> bad{0};
    std::thread sync_thread([&] {
      try {
        for (int i = 0; i < n / 2; ++i)
          if (c.rpc_sync(&counter::add, 1) <= 0) ++bad;
      } catch (...) {
        ++bad;
      }
    });
    guarded([&] {
      std::vector<mpirpc::future<int>> fs;
      for (int i = 0; i < n - n / 2; ++i)
        fs.push_back(c.rpc_async(&counter::add, 1));
      for (auto& f : fs)
        CHECK(f.wait() > 0);
    });
    sync_thread.join();
    CHECK(bad.load() == 0);
    barrier(); // every rank's increments are done
    CHECK(c.rpc_sync(&counter::get) == n * world_size());
    if (world_rank() == owner) CHECK(c.local_value().get() == n * world_size());
    barrier();
  }
  barrier();
  if (world_rank() == owner) {
    CHECK(eventually([&] { return counter::live == live0; }, 10s));
    CHECK(counter::live == live0);
  }
  check_counts_back_to(base);
}
