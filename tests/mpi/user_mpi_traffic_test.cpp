// SPDX-License-Identifier: MIT
// The application keeps using MPI on its own communicators while the runtime runs: Boost.MPI
// ring exchanges and non-blocking reductions interleaved with rpc calls from another thread,
// and wildcard receives on MPI_COMM_WORLD that must never see the runtime's messages.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <boost/mpi/communicator.hpp>
#include <boost/mpi/request.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>

#include <mpirpc/mpirpc.hpp>

#include "mpi_test_support.hpp"

namespace {

int add(int a, int b) {
  return a + b;
}
std::vector<double> reverse(std::vector<double> v) {
  return {v.rbegin(), v.rend()};
}
int world_rank_of() {
  return mpirpc_test::world_rank();
}

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER(reverse);
MPIRPC_REGISTER(world_rank_of);

namespace {

using namespace std::chrono_literals;

/// Completes every request with test() and sleeps in between (never blocks inside MPI).
void complete_all(std::vector<boost::mpi::request>& requests) {
  std::vector<bool> done(requests.size(), false);
  std::size_t left = requests.size();
  auto pause = 10us;
  while (left > 0) {
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (!done[i] && requests[i].test()) {
        done[i] = true;
        --left;
      }
    }
    if (left == 0) break;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, 1000us);
  }
}

/// Waits for a raw request with MPI_Test and sleeps; returns its status.
MPI_Status complete(MPI_Request& request) {
  MPI_Status status;
  auto pause = 10us;
  for (;;) {
    int flag = 0;
    MPI_Test(&request, &flag, &status);
    if (flag) return status;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, 1000us);
  }
}

/// The payload rank `from` sends in round `round`: its size varies, a few rounds are large
/// enough for MPI's rendezvous protocol.
std::vector<double> ring_payload(int from, int round) {
  const std::size_t n = round % 4 == 0 ? 50000 : static_cast<std::size_t>(3 + round);
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = from * 1e6 + round * 1e3 + static_cast<double>(i % 1000);
  return v;
}

/// Calls rpc_sync/rpc_async on every worker until told to stop (and at least `minimum`
/// rounds); counts wrong results and errors.
struct rpc_load {
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  std::atomic<int> wrong{0};
  std::string first_error;

  void run(int minimum) {
    const int size = mpirpc_test::world_size();
    const int rank = mpirpc_test::world_rank();
    try {
      for (int i = 0; !stop.load() || i < minimum; ++i) {
        const int to = (rank + 1 + i) % size;
        if (mpirpc::rpc_sync(to, add, i, rank) != i + rank) wrong.fetch_add(1);
        std::vector<double> v(static_cast<std::size_t>(1 + i % 7), static_cast<double>(i));
        v.back() = -1;
        auto reversed = mpirpc::rpc_async(to, reverse, v);
        auto where = mpirpc::rpc_async(to, world_rank_of);
        if (reversed.wait().front() != -1 || reversed.value().size() != v.size()) {
          wrong.fetch_add(1);
        }
        if (where.wait() != to) wrong.fetch_add(1);
        rounds.fetch_add(1);
      }
    } catch (const std::exception& e) {
      first_error = e.what();
      wrong.fetch_add(1000);
    }
  }
};

} // namespace

TEST_CASE("Boost.MPI ring exchanges and a non-blocking allreduce beside rpc traffic",
          "[user_mpi]") {
  boost::mpi::communicator comm(MPI_COMM_WORLD, boost::mpi::comm_duplicate);
  const int rank = comm.rank();
  const int size = comm.size();
  const int next = (rank + 1) % size;
  const int previous = (rank + size - 1) % size;
  mpirpc::runtime rt;
  rpc_load load;
  std::thread caller([&] { load.run(100); });

  constexpr int rounds = 24;
  int bad_vectors = 0;
  int bad_strings = 0;
  int bad_sums = 0;
  for (int round = 0; round < rounds; ++round) {
    // Both directions of the ring at once, vectors and a serialized string.
    const std::vector<double> to_next = ring_payload(rank, round);
    const std::vector<double> to_previous = ring_payload(-rank, round);
    const std::string note = "round " + std::to_string(round) + " from " + std::to_string(rank);
    std::vector<double> from_previous;
    std::vector<double> from_next;
    std::string note_in;
    std::vector<boost::mpi::request> requests;
    requests.push_back(comm.irecv(previous, 3 * round, from_previous));
    requests.push_back(comm.irecv(next, 3 * round + 1, from_next));
    requests.push_back(comm.irecv(previous, 3 * round + 2, note_in));
    requests.push_back(comm.isend(next, 3 * round, to_next));
    requests.push_back(comm.isend(previous, 3 * round + 1, to_previous));
    requests.push_back(comm.isend(next, 3 * round + 2, note));
    complete_all(requests);
    if (from_previous != ring_payload(previous, round)) ++bad_vectors;
    if (from_next != ring_payload(-next, round)) ++bad_vectors;
    if (note_in != "round " + std::to_string(round) + " from " + std::to_string(previous)) {
      ++bad_strings;
    }

    // A non-blocking reduction on the application's communicator.
    const std::int64_t mine[2] = {rank + round, static_cast<std::int64_t>(rank) * rank};
    std::int64_t sums[2] = {0, 0};
    MPI_Request reduce;
    MPI_Iallreduce(mine, sums, 2, MPI_INT64_T, MPI_SUM, MPI_Comm(comm), &reduce);
    complete(reduce);
    std::int64_t expected[2] = {0, 0};
    for (int r = 0; r < size; ++r) {
      expected[0] += r + round;
      expected[1] += static_cast<std::int64_t>(r) * r;
    }
    if (sums[0] != expected[0] || sums[1] != expected[1]) ++bad_sums;
  }
  load.stop = true;
  caller.join();
  CHECK(bad_vectors == 0);
  CHECK(bad_strings == 0);
  CHECK(bad_sums == 0);
  INFO("first rpc error: " << load.first_error);
  CHECK(load.wrong.load() == 0);
  CHECK(load.rounds.load() >= 100);
}

TEST_CASE("rpc calls from the main thread while another thread runs Boost.MPI traffic",
          "[user_mpi]") {
  boost::mpi::communicator comm(MPI_COMM_WORLD, boost::mpi::comm_duplicate);
  const int rank = comm.rank();
  const int size = comm.size();
  mpirpc::runtime rt;
  std::atomic<int> bad{0};
  std::thread traffic([&] {
    // Every rank sends to every other rank each round; wildcard sources on the receive side.
    for (int round = 0; round < 30; ++round) {
      std::vector<std::vector<int>> inbox(static_cast<std::size_t>(size));
      std::vector<std::vector<int>> outbox(static_cast<std::size_t>(size));
      std::vector<boost::mpi::request> requests;
      for (int r = 0; r < size; ++r) {
        if (r == rank) continue;
        outbox[static_cast<std::size_t>(r)] = {rank, r, round};
        requests.push_back(comm.irecv(r, round, inbox[static_cast<std::size_t>(r)]));
        requests.push_back(comm.isend(r, round, outbox[static_cast<std::size_t>(r)]));
      }
      complete_all(requests);
      for (int r = 0; r < size; ++r) {
        if (r == rank) continue;
        if (inbox[static_cast<std::size_t>(r)] != std::vector<int>{r, rank, round}) bad++;
      }
    }
  });
  int wrong = 0;
  for (int i = 0; i < 150; ++i) {
    const int to = (rank + i) % size;
    if (mpirpc::rpc_sync(to, add, i, -i) != 0) ++wrong;
    if (mpirpc::rpc_async(to, world_rank_of).wait() != to) ++wrong;
  }
  traffic.join();
  CHECK(wrong == 0);
  CHECK(bad.load() == 0);
}

TEST_CASE("a wildcard receive on MPI_COMM_WORLD sees only the application's message",
          "[user_mpi]") {
  const int rank = mpirpc_test::world_rank();
  const int size = mpirpc_test::world_size();
  const int next = (rank + 1) % size;
  const int previous = (rank + size - 1) % size;
  mpirpc::runtime rt;
  // Posted before any rpc traffic: if the runtime sent on MPI_COMM_WORLD, this would match.
  int payload = -1;
  MPI_Request wildcard;
  MPI_Irecv(&payload, 1, MPI_INT, MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &wildcard);
  int wrong = 0;
  for (int i = 0; i < 100; ++i) {
    const int to = (rank + 1 + i) % size;
    if (mpirpc::rpc_sync(to, add, i, 1) != i + 1) ++wrong;
  }
  std::vector<double> big(20000, 1.5);
  big.front() = 0;
  if (mpirpc::rpc_sync(next, reverse, big).back() != 0) ++wrong;
  CHECK(wrong == 0);
  mpirpc_test::barrier(); // every rank's calls have completed
  int matched = 1;
  MPI_Status status;
  MPI_Test(&wildcard, &matched, &status);
  int count = -1;
  if (matched) MPI_Get_count(&status, MPI_BYTE, &count);
  INFO("stray message: source " << status.MPI_SOURCE << ", tag " << status.MPI_TAG << ", " << count
                                << " bytes, payload " << payload);
  CHECK(matched == 0);
  mpirpc_test::barrier(); // every rank has checked before any rank sends

  // Now the application's own message arrives at the wildcard receive.
  const int mine = 7 * rank + 3;
  MPI_Request send;
  MPI_Isend(&mine, 1, MPI_INT, next, 42, MPI_COMM_WORLD, &send);
  if (!matched) status = complete(wildcard);
  complete(send);
  CHECK(payload == 7 * previous + 3);
  CHECK(status.MPI_SOURCE == previous);
  CHECK(status.MPI_TAG == 42);
}
