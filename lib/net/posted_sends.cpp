// SPDX-License-Identifier: MIT
#include "net/posted_sends.hpp"

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;

/// Buffers kept for reuse per destination; more are freed as their sends complete.
constexpr std::size_t max_spare = 8;
/// How long a post may wait for its destination before the wait is reported on stderr.
constexpr std::chrono::seconds slow_send(10);

std::string error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(rc, text, &length);
  return text;
}

/// Waits for `request` with a growing sleep (a blocking wait would busy-poll in Open MPI);
/// false if it did not complete by `deadline`. Sets `rc` to the send's outcome.
bool wait_until(MPI_Request& request, clock::time_point deadline, int& rc) noexcept {
  auto pause = std::chrono::microseconds(2);
  for (;;) {
    int done = 0;
    MPI_Status status;
    rc = MPI_Test(&request, &done, &status);
    if (rc != MPI_SUCCESS || done) return true;
    if (clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

void report_failed(int dest, int rc) noexcept {
  std::fprintf(stderr,
               "mpirpc: a message (or batch) sent to rank %d failed in MPI after it was posted "
               "(%s); its calls time out\n",
               dest, error_text(rc).c_str());
}
} // namespace

posted_sends::posted_sends(int ranks) {
  for (int r = 0; r < (ranks > 0 ? ranks : 1); ++r)
    _queues.push_back(std::make_unique<queue>());
}

posted_sends::~posted_sends() = default;

void posted_sends::post(const char* data, std::size_t size, int dest, int tag, MPI_Comm comm) {
  queue& q = *_queues[static_cast<std::size_t>(dest)];
  std::lock_guard<std::mutex> lock(q.mutex);
  reap_locked(dest, q);
  if (q.sends.size() >= max_in_flight) {
    // The receiver takes nothing: wait for its oldest send, as MPI_Send would have.
    int rc = MPI_SUCCESS;
    if (!wait_until(q.sends.front().request, clock::now() + slow_send, rc)) {
      std::fprintf(stderr,
                   "mpirpc: %zu messages to rank %d have waited %d s for it to take them, and "
                   "the next one waits on. Is rank %d still serving?\n",
                   q.sends.size(), dest, static_cast<int>(slow_send.count()), dest);
      wait_until(q.sends.front().request, clock::time_point::max(), rc);
    }
    reap_locked(dest, q);
  }
  std::vector<char> bytes;
  if (!q.spare.empty()) {
    bytes.swap(q.spare.back());
    q.spare.pop_back();
  }
  bytes.assign(data, data + size);
  MPI_Request request = MPI_REQUEST_NULL;
  const int rc =
      MPI_Isend(bytes.data(), static_cast<int>(size), MPI_BYTE, dest, tag, comm, &request);
  if (rc != MPI_SUCCESS) {
    if (q.spare.size() < max_spare) q.spare.push_back(std::move(bytes));
    throw mpi_error("MPI_Isend", rc, error_text(rc));
  }
  q.sends.push_back(send{request, std::move(bytes)});
  _in_flight.fetch_add(1, std::memory_order_relaxed);
}

void posted_sends::reap_locked(int dest, queue& q) noexcept {
  // Oldest first; one test that finds a send still outstanding (it runs MPI's progress once)
  // ends the round.
  while (!q.sends.empty()) {
    int done = 0;
    MPI_Status status;
    const int rc = MPI_Test(&q.sends.front().request, &done, &status);
    if (rc == MPI_SUCCESS && !done) return;
    if (rc != MPI_SUCCESS) report_failed(dest, rc);
    // MPI no longer reads the buffer, whether the send completed or failed.
    if (q.spare.size() < max_spare) q.spare.push_back(std::move(q.sends.front().bytes));
    q.sends.pop_front();
    _in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
}

void posted_sends::reap() noexcept {
  if (in_flight() == 0) return;
  for (std::size_t d = 0; d < _queues.size(); ++d) {
    queue& q = *_queues[d];
    std::unique_lock<std::mutex> lock(q.mutex, std::try_to_lock);
    if (lock && !q.sends.empty()) reap_locked(static_cast<int>(d), q);
  }
}

void posted_sends::finish(std::chrono::milliseconds patience) noexcept {
  const auto deadline = clock::now() + patience;
  // The receivers never took what is left then (they stopped without serving): MPI may read
  // those buffers until it gives up on the sends itself, so they are kept, reachable, for the
  // process's life.
  static std::mutex kept_mutex;
  static auto* kept = new std::deque<send>;
  for (std::size_t d = 0; d < _queues.size(); ++d) {
    queue& q = *_queues[d];
    std::lock_guard<std::mutex> lock(q.mutex);
    while (!q.sends.empty()) {
      int rc = MPI_SUCCESS;
      if (!wait_until(q.sends.front().request, deadline, rc)) break;
      if (rc != MPI_SUCCESS) report_failed(static_cast<int>(d), rc);
      q.sends.pop_front();
      _in_flight.fetch_sub(1, std::memory_order_relaxed);
    }
    if (q.sends.empty()) continue;
    std::lock_guard<std::mutex> keep(kept_mutex);
    for (send& s : q.sends) {
      MPI_Request_free(&s.request);
      kept->push_back(std::move(s));
    }
    _in_flight.fetch_sub(q.sends.size(), std::memory_order_relaxed);
    q.sends.clear();
  }
}

} // namespace mpirpc::detail
