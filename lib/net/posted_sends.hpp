// SPDX-License-Identifier: MIT
// Control messages sent without waiting for their receiver. Internal.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <mutex>
#include <vector>

#include <mpi.h>

namespace mpirpc::detail {

/// Sends of control messages that leave without waiting for the receiver to poll.
///
/// Open MPI's shared-memory transport sends a message of up to 256 bytes by copying it into the
/// receiver's queue: MPI_Send returns at once. A larger one (a batch: up to 4000 bytes) goes in
/// a fragment that the receiver hands back once it has taken the message, and MPI_Send waits
/// for that, spinning in MPI's progress: measured in W2, the caller spent 15% of its time there
/// while its receiver was busy with the previous batch. Here such a message is copied into a
/// buffer of this pool and posted with MPI_Isend; the buffer is reused once the send completes
/// (tested at the next post, or by reap()). MPI keeps the order of sends posted to one rank on
/// one communicator, whichever way they are posted, so the caller's order holds.
///
/// At most `max_in_flight` sends are outstanding: a post beyond that first waits (with
/// back-off) for the oldest, so that memory stays bounded when a receiver stops taking messages.
/// Thread-safe (one mutex, held while posting: callers already serialize sends to one rank).
class posted_sends {
public:
  /// Messages of at most this many bytes go with MPI_Send, which does not wait for them.
  static constexpr std::size_t inline_bytes = 256;
  static constexpr std::size_t max_in_flight = 256;

  posted_sends() = default;
  posted_sends(const posted_sends&) = delete;
  posted_sends& operator=(const posted_sends&) = delete;
  /// Precondition: finish() was called (or nothing was ever posted).
  ~posted_sends() = default;

  /// Sends `size` bytes (at most 4 KiB, more than inline_bytes) to `dest` on `comm` with `tag`
  /// from a copy; returns once MPI has the send. Throws mpi_error if MPI refuses it (then
  /// nothing was sent).
  void post(const char* data, std::size_t size, int dest, int tag, MPI_Comm comm);
  /// Recycles the buffers of completed sends (one MPI_Test per completed send, and one more).
  void reap() noexcept;
  /// Sends still outstanding (a hint: relaxed).
  std::size_t in_flight() const noexcept;
  /// Waits, up to `patience`, for every outstanding send, then gives up on the rest: their
  /// requests are freed (MPI completes them on its own) and their buffers are kept for good,
  /// since MPI may still read them. Call before the communicator is freed.
  void finish(std::chrono::milliseconds patience) noexcept;

private:
  struct send {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<char> bytes;
  };
  void reap_locked() noexcept;

  mutable std::mutex _mutex;
  std::deque<send> _in_flight; ///< oldest first
  std::vector<std::vector<char>> _spare;
};

} // namespace mpirpc::detail
