// SPDX-License-Identifier: MIT
#include "transport.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <thread>

#include <mpirpc/errors.hpp>

#include "backoff.hpp"
#include "wire.hpp"

namespace mpirpc::detail {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw mpi_error(call, rc, std::string(text, static_cast<std::size_t>(len)));
}

void wait_with_backoff(int count, MPI_Request* requests, std::chrono::microseconds spin_for) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  for (;;) {
    int done = 0;
    check_mpi(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done) return;
    const auto waited = clock::now() - start;
    if (waited < spin_for) {
      cpu_relax();
      continue;
    }
    const auto quarter = std::chrono::duration_cast<std::chrono::microseconds>(waited / 4);
    std::this_thread::sleep_for(
        std::clamp(quarter, std::chrono::microseconds(2), std::chrono::microseconds(1000)));
  }
}

namespace {
MPI_Comm duplicate(MPI_Comm comm) {
  MPI_Comm out = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(comm, &out), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
  return out;
}
} // namespace

transport::transport(MPI_Comm comm, std::chrono::microseconds spin_for) : _spin_for(spin_for) {
  check_mpi(MPI_Comm_rank(comm, &_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm, &_size), "MPI_Comm_size");
  _ctrl = duplicate(comm);
  _data = duplicate(comm);
  _coll = duplicate(comm);
  int* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(_ctrl, MPI_TAG_UB, &ub, &flag);
  if (flag && ub && *ub > 1) _tag_ub = static_cast<std::uint32_t>(*ub);
}

transport::~transport() {
  close();
}

void transport::close() noexcept {
  for (MPI_Comm* c : {&_ctrl, &_data, &_coll}) {
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  }
}

bool transport::try_receive(int tag, incoming& out) {
  int flag = 0;
  MPI_Message message;
  MPI_Status status;
  check_mpi(MPI_Improbe(MPI_ANY_SOURCE, tag, _ctrl, &flag, &message, &status), "MPI_Improbe");
  if (!flag) return false;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  out.bytes.resize(static_cast<std::size_t>(count));
  check_mpi(MPI_Mrecv(out.bytes.data(), count, MPI_BYTE, &message, &status), "MPI_Mrecv");
  out.source = status.MPI_SOURCE;
  out.tag = status.MPI_TAG;
  return true;
}

namespace {
// Messages up to this size go with MPI_Send (eager, returns at once); larger ones with
// MPI_Isend and a back-off wait, so that a rendezvous never busy-polls inside MPI.
constexpr std::size_t eager_limit = 4096;
} // namespace

void transport::send(int dest, int tag, const char* data, std::size_t size,
                     const std::vector<segment>& segments, std::uint32_t data_tag) {
  // engine::send_message has checked that size fits MPI's int count.
  if (size <= eager_limit && segments.empty()) {
    check_mpi(MPI_Send(data, static_cast<int>(size), MPI_BYTE, dest, tag, _ctrl), "MPI_Send");
    return;
  }
  std::vector<MPI_Request> requests;
  requests.reserve(1 + segments.size());
  requests.emplace_back();
  check_mpi(MPI_Isend(data, static_cast<int>(size), MPI_BYTE, dest, tag, _ctrl, &requests.back()),
            "MPI_Isend");
  for (const segment& s : segments) {
    const char* p = static_cast<const char*>(s.data);
    std::size_t left = s.bytes;
    do {
      const std::size_t chunk = std::min(left, wire::max_chunk);
      requests.emplace_back();
      check_mpi(MPI_Isend(p, static_cast<int>(chunk), MPI_BYTE, dest, static_cast<int>(data_tag),
                          _data, &requests.back()),
                "MPI_Isend");
      p += chunk;
      left -= chunk;
    } while (left > 0);
  }
  wait_with_backoff(static_cast<int>(requests.size()), requests.data(), _spin_for);
}

void transport::receive_segment(int source, std::uint32_t data_tag, void* dst, std::size_t bytes) {
  char* p = static_cast<char*>(dst);
  std::size_t left = bytes;
  do {
    const std::size_t chunk = std::min(left, wire::max_chunk);
    MPI_Request request;
    check_mpi(MPI_Irecv(p, static_cast<int>(chunk), MPI_BYTE, source, static_cast<int>(data_tag),
                        _data, &request),
              "MPI_Irecv");
    wait_with_backoff(1, &request, _spin_for);
    p += chunk;
    left -= chunk;
  } while (left > 0);
}

std::uint32_t transport::next_data_tag() noexcept {
  const std::uint32_t n = _next_tag.fetch_add(1, std::memory_order_relaxed);
  return 1 + n % _tag_ub;
}

} // namespace mpirpc::detail
