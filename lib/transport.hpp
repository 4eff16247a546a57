// SPDX-License-Identifier: MIT
// The MPI seam: every MPI call of the runtime's message path goes through here. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
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

/// Frees a reused (thread-local) buffer that grew past `keep` bytes, so that one huge message
/// does not pin its memory for the rest of the thread's life.
inline void trim_buffer(std::vector<char>& buffer, std::size_t keep = std::size_t(1)
                                                                      << 20) noexcept {
  if (buffer.capacity() > keep) std::vector<char>().swap(buffer);
}
/// Trims a reused buffer when the scope that filled it ends.
struct trim_on_exit {
  std::vector<char>& buffer;
  ~trim_on_exit() { trim_buffer(buffer); }
};

class transport;

/// Paces one thread's wait for a transfer of out-of-line data (a send, or the matching and
/// receiving of a buffer) and counts it in transport::spinning_transfers() from its start until
/// it ends or pauses past its spin budget: spin_window plus the time its bytes take at
/// spin_bytes_per_us (backoff.hpp), zero where spinning is not allowed. Within the budget
/// pause() spins; past it, it sleeps a quarter of the time waited beyond the budget, from 2 us
/// up to 1 ms. One thread's, not thread-safe.
class transfer_pacer {
public:
  /// Starts the clock and the budget for `bytes`.
  transfer_pacer(transport& t, std::size_t bytes);
  ~transfer_pacer();
  transfer_pacer(const transfer_pacer&) = delete;
  transfer_pacer& operator=(const transfer_pacer&) = delete;

  /// Grows the budget by the time `bytes` more take (a receiver learns the size when it has
  /// matched the data); counts the transfer again if it is back within its budget.
  void add_bytes(std::size_t bytes);
  std::chrono::steady_clock::duration waited() const {
    return std::chrono::steady_clock::now() - _start;
  }
  /// One pause of the wait, which has lasted `waited`.
  void pause(std::chrono::steady_clock::duration waited);

private:
  void count() noexcept;
  void uncount() noexcept;
  std::atomic<int>& _spinning;
  std::chrono::microseconds _base;
  std::chrono::microseconds _spin_for;
  std::chrono::steady_clock::time_point _start;
  bool _counted = false;
};

/// A received control message.
struct incoming {
  int source = -1;
  int tag = -1;
  std::vector<char> bytes;
  /// Out-of-line buffers received ahead of decoding: of a request that had to queue, or of any
  /// message this rank sent itself (transport::send copies them).
  std::vector<std::vector<char>> prefetched;
  /// The rest of a batch whose first messages ran on another thread (lib/batching.cpp): it was
  /// counted as received with that batch, and is not counted again.
  bool continuation = false;
};

class transport {
public:
  /// Duplicates `comm` twice (control and data traffic) and once more for collectives.
  /// `spin_for`: how long a transfer's wait may spin before it sleeps, plus the time its bytes
  /// take (transfer_pacer); zero: never spins.
  transport(MPI_Comm comm, std::chrono::microseconds spin_for);
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  int rank() const noexcept { return _rank; }
  int size() const noexcept { return _size; }
  MPI_Comm collective_comm() const noexcept { return _coll; }

  /// Receives one control message with `tag` (MPI_ANY_TAG for any) if one is waiting: first
  /// from this rank's own queue (see send()), then from MPI.
  bool try_receive(int tag, incoming& out);

  /// Sends a control message, then its out-of-line segments on `data_tag`, each split into
  /// chunks of at most wire::max_chunk bytes. Returns once the buffers may be reused.
  ///
  /// Checks the data tag (1 .. tag_ub() when there are segments) before anything is sent. If
  /// it throws, `control_sent` (when given) tells whether the control message had been handed
  /// to MPI (and will reach the receiver, which counts it) before the failure: a send that
  /// fails after that point first waits for what it had already posted, so that no buffer is
  /// released while MPI still reads it, and then throws.
  ///
  /// A message to this rank itself does not go through MPI: it is copied, segments included
  /// (as incoming::prefetched), into a queue that try_receive() reads first, in the order
  /// sent. Open MPI sends to its own rank eagerly only up to 1 KiB; a larger MPI_Send would
  /// block until this rank posts the receive, which, when the sender is the thread that polls,
  /// never happens.
  void send(int dest, int tag, const char* data, std::size_t size,
            const std::vector<segment>& segments, std::uint32_t data_tag,
            bool* control_sent = nullptr);

  /// Test seam (lib/testing.hpp): sends `data` as the control message with `tag`, then each of
  /// `messages` as one message on the data communicator with `data_tag` as given (no chunking,
  /// no checks). Same completion and failure contract as send().
  void send_raw(int dest, int tag, const char* data, std::size_t size,
                const std::vector<segment>& messages, int data_tag, bool* control_sent);

  /// Waits, up to patience(), for the next message from `source` with `data_tag` on the data
  /// communicator and matches it (MPI_Improbe), so that its true size is known before any
  /// memory is sized for it. False if none came in time.
  bool match_data(int source, std::uint32_t data_tag, MPI_Message& message, std::size_t& bytes);
  /// As above, paced by (and counted in) the receiver's `pacer` for the whole buffer.
  bool match_data(int source, std::uint32_t data_tag, MPI_Message& message, std::size_t& bytes,
                  transfer_pacer& pacer);
  /// Receives a message matched by match_data into `dst`, which holds its `bytes` bytes.
  void receive_matched(MPI_Message& message, void* dst, std::size_t bytes);
  /// As above, paced by `pacer`.
  void receive_matched(MPI_Message& message, void* dst, std::size_t bytes, transfer_pacer& pacer);
  /// Receives a matched message into `scratch` (resized to its size) and forgets it.
  void discard_matched(MPI_Message& message, std::size_t bytes, std::vector<char>& scratch);

  /// How long a receiver waits for an announced out-of-line message to show up (its sender
  /// posts it right after the control message) before it treats the message as malformed.
  std::chrono::milliseconds patience() const noexcept {
    return std::chrono::milliseconds(_patience_ms.load(std::memory_order_relaxed));
  }
  void set_patience(std::chrono::milliseconds p) noexcept {
    _patience_ms.store(p.count(), std::memory_order_relaxed);
  }
  /// How many threads of this rank are in a transfer within its spin budget right now (a send
  /// of out-of-line buffers or of a control message too large to go eagerly, or the receipt of
  /// an out-of-line buffer; see transfer_pacer). While it is nonzero the engine's leader neither
  /// spins nor takes replies and its standby does not take over: each of 2 ranks on 2 cores
  /// runs bound to one core, where a second busy thread takes time slices (milliseconds) from
  /// the one moving the data (PERF_NOTES.md).
  int spinning_transfers() const noexcept { return _spinning.load(std::memory_order_seq_cst); }

  /// The largest valid tag (MPI_TAG_UB of the control communicator).
  std::uint32_t tag_ub() const noexcept { return _tag_ub; }

  /// A fresh tag for one message's segments.
  std::uint32_t next_data_tag() noexcept;

  /// Frees the communicators. Called once traffic has stopped.
  void close() noexcept;

private:
  friend class transfer_pacer;
  /// Messages this rank sent itself, oldest first (see send()).
  std::mutex _loopback_mutex;
  std::deque<incoming> _loopback;
  std::atomic<int> _loopback_size{0};
  void send_to_self(int tag, const char* data, std::size_t size,
                    const std::vector<segment>& segments);
  bool try_receive_from_self(int tag, incoming& out);
  MPI_Comm _ctrl = MPI_COMM_NULL;
  MPI_Comm _data = MPI_COMM_NULL;
  MPI_Comm _coll = MPI_COMM_NULL;
  int _rank = 0;
  int _size = 0;
  std::uint32_t _tag_ub = 32767;
  std::atomic<std::uint32_t> _next_tag{0};
  std::chrono::microseconds _spin_for;
  std::atomic<std::int64_t> _patience_ms{10000};
  std::atomic<int> _spinning{0};

  void post_and_wait(int dest, int tag, const char* data, std::size_t size,
                     const std::vector<segment>& parts, int data_tag, bool chunked,
                     bool* control_sent);
};

} // namespace mpirpc::detail
