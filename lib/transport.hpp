// SPDX-License-Identifier: MIT
// The MPI seam: every MPI call of the runtime's message path goes through here. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <mpi.h>

#include <mpirpc/serialization.hpp>

namespace mpirpc::detail {

/// Throws mpi_error naming `call` when rc is not MPI_SUCCESS. Evaluates rc once.
void check_mpi(int rc, const char* call);

/// Waits for MPI requests to complete without holding a core: spins for `spin_for`, then sleeps
/// between tests for a quarter of the time waited so far, from 2 us up to 1 ms (Open MPI's
/// blocking calls busy-poll, which oversubscribed ranks cannot afford).
void wait_with_backoff(int count, MPI_Request* requests,
                       std::chrono::microseconds spin_for = std::chrono::microseconds(20));

/// A received control message.
struct incoming {
  int source = -1;
  int tag = -1;
  std::vector<char> bytes;
  /// Out-of-line buffers received ahead of decoding (only for requests that had to queue).
  std::vector<std::vector<char>> prefetched;
};

class transport {
public:
  /// Duplicates `comm` twice (control and data traffic) and once more for collectives.
  /// `spin_for`: how long a transfer's wait may spin before it sleeps (zero: never spins).
  transport(MPI_Comm comm, std::chrono::microseconds spin_for);
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  int rank() const noexcept { return _rank; }
  int size() const noexcept { return _size; }
  MPI_Comm collective_comm() const noexcept { return _coll; }

  /// Receives one control message with `tag` (MPI_ANY_TAG for any) if one is waiting.
  bool try_receive(int tag, incoming& out);

  /// Sends a control message, then its out-of-line segments on `data_tag`. Returns once the
  /// buffers may be reused.
  void send(int dest, int tag, const char* data, std::size_t size,
            const std::vector<segment>& segments, std::uint32_t data_tag);

  /// Receives one out-of-line segment of `bytes` bytes from `source` into `dst`.
  void receive_segment(int source, std::uint32_t data_tag, void* dst, std::size_t bytes);

  /// A fresh tag for one message's segments.
  std::uint32_t next_data_tag() noexcept;

  /// Frees the communicators. Called once traffic has stopped.
  void close() noexcept;

private:
  MPI_Comm _ctrl = MPI_COMM_NULL;
  MPI_Comm _data = MPI_COMM_NULL;
  MPI_Comm _coll = MPI_COMM_NULL;
  int _rank = 0;
  int _size = 0;
  std::uint32_t _tag_ub = 32767;
  std::atomic<std::uint32_t> _next_tag{0};
  std::chrono::microseconds _spin_for;
};

} // namespace mpirpc::detail
