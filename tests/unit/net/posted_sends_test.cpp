// SPDX-License-Identifier: MIT
// lib/net/posted_sends: control messages sent from a copy without waiting for the receiver, in
// one process. Messages go to this rank itself over a duplicate of MPI_COMM_SELF, where Open MPI
// sends only up to 1 KiB eagerly: an MPI_Send of the 4000-byte messages used here would not
// return before a receive is posted, so a post that returns first shows that it does not wait.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <mpi.h>

#include "net/posted_sends.hpp"

namespace {

namespace detail = mpirpc::detail;
using namespace std::chrono_literals;

constexpr int tag = 5;
constexpr std::size_t size = 4000;

struct self_comm {
  MPI_Comm comm = MPI_COMM_NULL;
  self_comm() { MPI_Comm_dup(MPI_COMM_SELF, &comm); }
  ~self_comm() { MPI_Comm_free(&comm); }
};

std::vector<char> message(char fill) {
  return std::vector<char>(size, fill);
}

/// Posts `data` to this rank itself on `comm`.
void post(detail::posted_sends& sends, const std::vector<char>& data, MPI_Comm comm) {
  sends.post(data.data(), data.size(), 0, tag, comm);
}

/// Receives the next message with `tag` on `comm`, waiting with a short sleep between tests.
std::vector<char> receive(MPI_Comm comm) {
  std::vector<char> bytes(size + 1);
  MPI_Request request;
  MPI_Irecv(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, 0, tag, comm, &request);
  MPI_Status status;
  for (int done = 0; !done;) {
    MPI_Test(&request, &done, &status);
    if (!done) std::this_thread::sleep_for(10us);
  }
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  bytes.resize(static_cast<std::size_t>(count));
  return bytes;
}

} // namespace

TEST_CASE("a posted send returns before its receiver takes it, and the copy travels") {
  self_comm self;
  detail::posted_sends sends(1);
  std::vector<char> data = message('a');
  post(sends, data, self.comm);
  CHECK(sends.in_flight() == 1);
  // The caller's buffer is free at once: what was posted is the copy.
  std::fill(data.begin(), data.end(), 'z');
  CHECK(receive(self.comm) == message('a'));
  for (int i = 0; i < 1000 && sends.in_flight() > 0; ++i) {
    sends.reap();
    std::this_thread::sleep_for(1ms);
  }
  CHECK(sends.in_flight() == 0);
  sends.finish(1s);
}

TEST_CASE("posted sends to one rank arrive in the order posted") {
  self_comm self;
  detail::posted_sends sends(1);
  for (int round = 0; round < 3; ++round) {
    for (char c = 'a'; c < 'a' + 20; ++c) {
      post(sends, message(c), self.comm);
    }
    for (char c = 'a'; c < 'a' + 20; ++c)
      CHECK(receive(self.comm) == message(c));
  }
  sends.finish(1s);
  CHECK(sends.in_flight() == 0);
}

TEST_CASE("at most max_in_flight sends are outstanding: the next post waits for the oldest") {
  self_comm self;
  detail::posted_sends sends(1);
  const std::vector<char> data = message('q');
  for (std::size_t i = 0; i < detail::posted_sends::max_in_flight; ++i)
    post(sends, data, self.comm);
  CHECK(sends.in_flight() == detail::posted_sends::max_in_flight);
  std::atomic<bool> posted{false};
  std::thread poster([&] {
    post(sends, data, self.comm);
    posted = true;
  });
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(posted.load()); // nothing was received: it waits
  std::size_t received = 0;
  while (!posted.load()) {
    CHECK(receive(self.comm) == data);
    ++received;
  }
  poster.join();
  CHECK(received >= 1);
  CHECK(sends.in_flight() <= detail::posted_sends::max_in_flight);
  for (; received < detail::posted_sends::max_in_flight + 1; ++received)
    CHECK(receive(self.comm) == data);
  sends.finish(1s);
  CHECK(sends.in_flight() == 0);
}

TEST_CASE("finish gives up on sends nobody takes after its patience; MPI still delivers them") {
  self_comm self;
  detail::posted_sends sends(1);
  const std::vector<char> data = message('x');
  post(sends, data, self.comm);
  const auto start = std::chrono::steady_clock::now();
  sends.finish(50ms);
  const auto waited = std::chrono::steady_clock::now() - start;
  CHECK(waited >= 50ms);
  CHECK(waited < 5s);
  CHECK(sends.in_flight() == 0);
  // The buffer was kept: the message is intact when it is finally received.
  CHECK(receive(self.comm) == data);
}
