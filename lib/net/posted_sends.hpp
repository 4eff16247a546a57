// SPDX-License-Identifier: MIT
// Control messages sent without waiting for their receiver. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
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
/// (tested at the next post to the same rank, or by reap()). MPI keeps messages from one rank
/// to another on one communicator and tag in the order their sends were posted, MPI_Send or
/// MPI_Isend alike, so a thread's messages keep their order.
///
/// Per destination at most `max_in_flight` sends are outstanding: a post beyond that waits
/// (with back-off, reported on stderr after 10 s) for that destination's oldest, as MPI_Send
/// would have, so that memory stays bounded when a receiver stops taking messages; sends to
/// other ranks do not wait for it. Thread-safe: a mutex per destination, held while posting.
class posted_sends {
public:
  /// Messages of at most this many bytes go with MPI_Send, which does not wait for them.
  static constexpr std::size_t inline_bytes = 256;
  /// Outstanding sends per destination.
  static constexpr std::size_t max_in_flight = 64;

  /// `ranks`: the destinations (ranks of the communicator).
  explicit posted_sends(int ranks);
  posted_sends(const posted_sends&) = delete;
  posted_sends& operator=(const posted_sends&) = delete;
  /// Precondition: finish() was called (or nothing was ever posted).
  ~posted_sends();

  /// Sends `size` bytes (at most 4 KiB, more than inline_bytes) to `dest` on `comm` with `tag`
  /// from a copy; returns once MPI has the send. Throws mpi_error if MPI refuses it (then
  /// nothing was sent). A send that MPI later completes in error is reported on stderr.
  void post(const char* data, std::size_t size, int dest, int tag, MPI_Comm comm);
  /// Recycles the buffers of completed sends; skips destinations another thread is posting to.
  void reap() noexcept;
  /// Sends still outstanding, over all destinations (relaxed: a hint for pollers).
  std::size_t in_flight() const noexcept { return _in_flight.load(std::memory_order_relaxed); }
  /// Waits, up to `patience`, for every outstanding send, then gives up on the rest: their
  /// requests are freed (MPI completes them on its own) and their buffers are kept for good,
  /// since MPI may still read them. Call before the communicator is freed.
  void finish(std::chrono::milliseconds patience) noexcept;

private:
  struct send {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<char> bytes;
  };
  struct queue {
    std::mutex mutex;
    std::deque<send> sends; ///< oldest first
    std::vector<std::vector<char>> spare;
  };
  void reap_locked(int dest, queue& q) noexcept;

  std::vector<std::unique_ptr<queue>> _queues; ///< by destination rank
  std::atomic<std::size_t> _in_flight{0};
};

} // namespace mpirpc::detail
