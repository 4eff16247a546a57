// SPDX-License-Identifier: MIT
#include "net/posted_sends.hpp"

#include <thread>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;

/// Buffers kept for reuse; more are freed as their sends complete.
constexpr std::size_t max_spare = 32;

[[noreturn]] void refused(int rc) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw mpi_error("MPI_Isend", rc, text);
}

/// Waits for `request` with a growing sleep (a blocking wait would busy-poll in Open MPI);
/// false if it did not complete by `deadline`.
bool wait_until(MPI_Request& request, clock::time_point deadline) noexcept {
  auto pause = std::chrono::microseconds(2);
  for (;;) {
    int done = 0;
    if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return true; // gone
    if (done) return true;
    if (clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}
} // namespace

void posted_sends::post(const char* data, std::size_t size, int dest, int tag, MPI_Comm comm) {
  std::lock_guard<std::mutex> lock(_mutex);
  reap_locked();
  if (_in_flight.size() >= max_in_flight) {
    // The receiver takes nothing: wait for the oldest, as MPI_Send would have.
    wait_until(_in_flight.front().request, clock::time_point::max());
    reap_locked();
  }
  std::vector<char> bytes;
  if (!_spare.empty()) {
    bytes.swap(_spare.back());
    _spare.pop_back();
  }
  bytes.assign(data, data + size);
  MPI_Request request = MPI_REQUEST_NULL;
  const int rc =
      MPI_Isend(bytes.data(), static_cast<int>(size), MPI_BYTE, dest, tag, comm, &request);
  if (rc != MPI_SUCCESS) {
    if (_spare.size() < max_spare) _spare.push_back(std::move(bytes));
    refused(rc);
  }
  _in_flight.push_back(send{request, std::move(bytes)});
}

void posted_sends::reap_locked() noexcept {
  // Oldest first: MPI completes sends to one rank in order, and one test that finds the oldest
  // still outstanding (it runs MPI's progress once) is enough for this round.
  while (!_in_flight.empty()) {
    int done = 0;
    const int rc = MPI_Test(&_in_flight.front().request, &done, MPI_STATUS_IGNORE);
    if (rc == MPI_SUCCESS && !done) return;
    // A failed send is freed like a completed one: MPI no longer reads its buffer.
    if (_spare.size() < max_spare) _spare.push_back(std::move(_in_flight.front().bytes));
    _in_flight.pop_front();
  }
}

void posted_sends::reap() noexcept {
  std::unique_lock<std::mutex> lock(_mutex, std::try_to_lock);
  if (lock && !_in_flight.empty()) reap_locked();
}

std::size_t posted_sends::in_flight() const noexcept {
  std::lock_guard<std::mutex> lock(_mutex);
  return _in_flight.size();
}

void posted_sends::finish(std::chrono::milliseconds patience) noexcept {
  std::lock_guard<std::mutex> lock(_mutex);
  const auto deadline = clock::now() + patience;
  while (!_in_flight.empty()) {
    if (!wait_until(_in_flight.front().request, deadline)) break;
    _in_flight.pop_front();
  }
  if (_in_flight.empty()) return;
  // The receivers never took these (they stopped without serving): MPI may read the buffers
  // until it gives up on the sends itself, so they are kept, reachable, for the process's life.
  static std::mutex kept_mutex;
  static std::deque<send>* kept = new std::deque<send>;
  std::lock_guard<std::mutex> keep(kept_mutex);
  for (send& s : _in_flight) {
    MPI_Request_free(&s.request);
    kept->push_back(std::move(s));
  }
  _in_flight.clear();
}

} // namespace mpirpc::detail
