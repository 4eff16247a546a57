// SPDX-License-Identifier: MIT
// Async execution with one server thread per worker: deep chains of nested calls, many nested
// calls at once, errors raised at every depth, and a blocked pool that times out instead of
// hanging.
#include <catch2/catch.hpp>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"
#include "parked_futures.hpp"

namespace {

/// The two workers a chain alternates between: worker1 and worker2, or worker1 and worker0
/// when there are only two ranks.
int hop_target(int from) {
  const int other = mpirpc_test::world_size() >= 3 ? 2 : 0;
  return from == 1 ? other : 1;
}

int add(int x, int y) {
  return x + y;
}

/// One hop of a chain: returns the future of the next hop, so the reply of the whole chain is
/// sent from continuations only and no server thread is ever held.
mpirpc::future<int> hop(int left, int depth) {
  if (left == 0) {
    mpirpc::future<int> done;
    done.set_result(depth);
    return done;
  }
  return mpirpc::rpc_async(hop_target(mpirpc::get_worker_info().id), hop, left - 1, depth + 1);
}

/// One hop around the ring of all workers (each calls the next by rank), `left` hops to go.
mpirpc::future<int> ring_hop(int left, int depth) {
  if (left == 0) {
    mpirpc::future<int> done;
    done.set_result(depth);
    return done;
  }
  const int next = (mpirpc::get_worker_info().id + 1) % mpirpc_test::world_size();
  return mpirpc::rpc_async(next, ring_hop, left - 1, depth + 1);
}

/// The seed's async_add_chained: a nested call continued with then().
mpirpc::future<int> add_chained(int to, int x, int y, int z) {
  return mpirpc::rpc_async(to, add, x, y).then([z](mpirpc::future<int> f) {
    return f.value() + z;
  });
}

struct depth_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A chain that throws at depth `throw_at`; the error travels back through every hop.
mpirpc::future<int> hop_throwing(int depth, int throw_at) {
  if (depth == throw_at) throw depth_error("raised at depth " + std::to_string(depth));
  return mpirpc::rpc_async(hop_target(mpirpc::get_worker_info().id), hop_throwing, depth + 1,
                           throw_at);
}

/// Blocks its (only) server thread on a nested call back to the same worker, which therefore
/// cannot be served until the nested call times out.
int blocking_self_call(int timeout_ms) {
  const int me = mpirpc::get_worker_info().id;
  return mpirpc::rpc_sync(me, add, 1, 2, mpirpc::timeout(std::chrono::milliseconds(timeout_ms)));
}

mpirpc::options one_server_thread() {
  mpirpc::options o;
  o.num_worker_threads = 1;
  return o;
}

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER_ASYNC(hop);
MPIRPC_REGISTER_ASYNC(add_chained);
MPIRPC_REGISTER_ASYNC(hop_throwing);
MPIRPC_REGISTER_ASYNC(ring_hop);
MPIRPC_REGISTER(blocking_self_call);

TEST_CASE("async_execution accepts exactly the functions that return a future", "[async]") {
  static_assert(std::is_same_v<decltype(mpirpc::async_execution(hop)), decltype(&hop)>);
  CHECK(mpirpc::async_execution(hop) == &hop);
  CHECK(mpirpc::registered_name(hop) == "hop");
}

TEST_CASE("a chain of depth 64 completes with one server thread per worker", "[async]") {
  mpirpc::runtime rt(one_server_thread());
  if (mpirpc_test::world_rank() == 0) {
    CHECK(mpirpc::rpc_sync(1, hop, 64, 0) == 64);
    CHECK(mpirpc::rpc_async(1, hop, 63, 1).wait() == 64);
  }
}

TEST_CASE("64 concurrent nested calls complete with one server thread per worker", "[async]") {
  mpirpc::runtime rt(one_server_thread());
  if (mpirpc_test::world_rank() == 0) {
    std::vector<mpirpc::future<int>> chained;
    std::vector<mpirpc::future<int>> chains;
    for (int i = 0; i < 64; ++i) {
      chained.push_back(mpirpc::rpc_async(1, add_chained, hop_target(1), i, 1, 1));
      chains.push_back(mpirpc::rpc_async(1, hop, 8, i));
    }
    for (int i = 0; i < 64; ++i) {
      CHECK(chained[static_cast<std::size_t>(i)].wait() == i + 2);
      CHECK(chains[static_cast<std::size_t>(i)].wait() == i + 8);
    }
  }
}

TEST_CASE("deep chains around a ring complete under the default flow-control window",
          "[async][flow]") {
  // Each hop's call to the next worker awaits its reply until the end of its chain, so every
  // worker has 32 * 500 / ranks calls to its neighbour outstanding at the peak: more than
  // max_outstanding_calls (1024 by default). A handler that waited for room there would hold
  // its only server thread, and with it every chain, until the calls timed out.
  constexpr int chains = 32;
  constexpr int depth = 500;
  mpirpc::options o = one_server_thread();
  o.rpc_timeout = std::chrono::seconds(30); // a stall fails the test well within its TIMEOUT
  REQUIRE(o.max_outstanding_calls == 1024);
  REQUIRE(chains * depth / mpirpc_test::world_size() > o.max_outstanding_calls);
  mpirpc::runtime rt(o);
  if (mpirpc_test::world_rank() == 0) {
    std::vector<mpirpc::future<int>> started;
    for (int i = 0; i < chains; ++i)
      started.push_back(mpirpc::rpc_async(1, ring_hop, depth - 1, 1));
    for (int i = 0; i < chains; ++i)
      CHECK(started[static_cast<std::size_t>(i)].wait() == depth);
  }
  // The handlers' calls went beyond the window without waiting for room.
  CHECK(mpirpc::stats().calls_delayed == 0);
  rt.shutdown();
}

TEST_CASE("an exception raised at any depth of a chain reaches the caller", "[async]") {
  mpirpc::runtime rt(one_server_thread());
  if (mpirpc_test::world_rank() == 0) {
    for (int throw_at = 0; throw_at <= 12; ++throw_at) {
      // Depth 0 runs on worker1; each further depth alternates with hop_target.
      int where = 1;
      for (int d = 0; d < throw_at; ++d)
        where = hop_target(where);
      try {
        mpirpc::rpc_sync(1, hop_throwing, 0, throw_at);
        FAIL("no exception from depth " << throw_at);
      } catch (const mpirpc::remote_error& e) {
        CHECK(e.origin_worker() == "worker" + std::to_string(where));
        CHECK_THAT(e.remote_type(), Catch::Contains("depth_error"));
        CHECK(e.remote_message() == "raised at depth " + std::to_string(throw_at));
      }
    }
  }
}

TEST_CASE("a blocked pool gives a warning and a timeout, not a hang", "[async]") {
  std::string log;
  {
    mpirpc::runtime rt(one_server_thread());
    if (mpirpc_test::world_rank() == 1) {
      // worker1's only server thread runs blocking_self_call and waits on a request to
      // worker1 itself, which has no thread left to run it.
      log = mpirpc_test::capture_stderr([] {
        try {
          mpirpc::rpc_sync(1, blocking_self_call, 200);
          FAIL("the blocked nested call did not time out");
        } catch (const mpirpc::remote_error& e) {
          CHECK(e.remote_type() == "mpirpc::timeout_error");
          CHECK_THAT(e.remote_message(), Catch::Contains("timed out after") &&
                                             Catch::Contains("'add'") &&
                                             Catch::Contains("worker1"));
        }
      });
    }
    // The queued request still runs once the thread is free; shutdown waits for it.
  }
  if (mpirpc_test::world_rank() == 1) {
    CHECK_THAT(log, Catch::Contains("all 1 server threads are busy") &&
                        Catch::Contains("async execution"));
  }
}

MPIRPC_REGISTER_AS("park", mpirpc_test::park);

TEST_CASE("a reply that is never sent delays shutdown only until the caller's timeout", "[async]") {
  const auto start = std::chrono::steady_clock::now();
  {
    mpirpc::runtime rt;
    if (mpirpc_test::world_rank() == 0) {
      // worker1 keeps the returned future but never completes it.
      CHECK_THROWS_AS(
          mpirpc::rpc_sync(1, mpirpc_test::park, mpirpc::timeout(std::chrono::milliseconds(300))),
          mpirpc::timeout_error);
    }
  } // graceful shutdown: must not wait for the reply worker1 will never send
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(30));
  mpirpc_test::release_parked(0); // completing it after shutdown drops the reply
}

namespace {
/// Returns a future that is destroyed at once, uncompleted: nothing else holds it.
mpirpc::future<int> dropped_future(int) {
  return mpirpc::future<int>();
}
} // namespace
MPIRPC_REGISTER_ASYNC(dropped_future);

TEST_CASE("a returned future destroyed before completing answers the caller with an error",
          "[async]") {
  mpirpc::runtime rt;
  if (mpirpc_test::world_rank() == 0) {
    try {
      mpirpc::rpc_sync(1, dropped_future, 1, mpirpc::timeout(std::chrono::seconds(30)));
      FAIL("no error");
    } catch (const mpirpc::remote_error& e) {
      CHECK(e.remote_type() == "mpirpc::future_error");
      CHECK_THAT(e.remote_message(), Catch::Contains("destroyed before it completed"));
    }
  }
}

namespace {
std::size_t byte_count(std::vector<char> bytes) {
  return bytes.size();
}

/// Blocks this worker's only server thread on a call to itself that carries a large buffer:
/// the request must queue, and its buffer must not keep the caller stuck in the send.
int blocking_large_self_call(int timeout_ms) {
  const int me = mpirpc::get_worker_info().id;
  try {
    return static_cast<int>(
        mpirpc::rpc_sync(me, byte_count, std::vector<char>(256 * 1024),
                         mpirpc::timeout(std::chrono::milliseconds(timeout_ms))));
  } catch (const mpirpc::timeout_error&) {
    return -1;
  }
}
} // namespace
MPIRPC_REGISTER(byte_count);
MPIRPC_REGISTER(blocking_large_self_call);

TEST_CASE("a queued request with a large buffer does not hold its sender", "[async]") {
  mpirpc::runtime rt(one_server_thread());
  if (mpirpc_test::world_rank() == 1) {
    // Without taking the buffer off the wire at queueing time, the nested send would never
    // complete, its timeout could not release the handler, and shutdown would hang.
    mpirpc_test::capture_stderr(
        [] { CHECK(mpirpc::rpc_sync(1, blocking_large_self_call, 200) == -1); });
  }
}

namespace {
int small(int x) {
  return x;
}

/// Answers with 1 MiB (out of line) from the continuation of a nested call back to the caller.
/// On the caller, that continuation runs on the thread that waits for its own call here.
mpirpc::future<std::vector<double>> relay(int back) {
  return mpirpc::rpc_async(back, small, 3).then([](mpirpc::future<int> f) {
    return std::vector<double>(std::size_t(1) << 17, static_cast<double>(f.value()));
  });
}
} // namespace
MPIRPC_REGISTER(small);
MPIRPC_REGISTER_ASYNC(relay);

TEST_CASE("waiting threads whose continuations send large replies to each other complete",
          "[async]") {
  // Workers 0 and 1 call each other's relay and wait. Each one's waiting thread receives the
  // nested call's reply and sends the large reply from its continuation; that send completes
  // only once the other worker receives it, while the other worker's waiting thread is stuck
  // in the same send. Only the leaders, taking replies while no thread polls for them, can
  // receive both (before, the waiting threads still counted as polling and both ranks hung).
  mpirpc::runtime rt;
  const int me = mpirpc_test::world_rank();
  if (me < 2) {
    for (int round = 0; round < 20; ++round) {
      const auto v = mpirpc::rpc_async(1 - me, relay, me).wait();
      CHECK(v.size() == (std::size_t(1) << 17));
      CHECK(v.back() == 3.0);
    }
  }
}
