// SPDX-License-Identifier: MIT
// The MPI seam: every MPI call of the runtime's message path goes through here. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <mpi.h>

#include <mpirpc/serialization.hpp>

#include "net/backoff.hpp"
#include "net/posted_sends.hpp"

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

/// A received control message.
struct incoming {
  int source = -1;
  int tag = -1;
  std::vector<char> bytes;
  /// Out-of-line buffers received ahead of decoding: of a request that had to queue, or of any
  /// message this rank sent itself (transport::send copies them).
  std::vector<std::vector<char>> prefetched;
  /// The rest of a batch whose first messages ran on another thread (core/in_order): it was
  /// counted as received with that batch, and is not counted again.
  bool continuation = false;
  /// Set by the transport when the message could not be received whole: it was larger than a
  /// control message may be (and was cut), or it came in an envelope whose message did not
  /// follow. receiver::dispatch drops such a message as malformed, with this text.
  std::string problem;
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
  /// from this rank's own queue (see send()), then from MPI. Thread-safe.
  ///
  /// Both control tags have receives of wire::max_control_bytes posted ahead (a ring of
  /// them per tag, matched in the order posted, so messages of one tag keep their order): a
  /// poll tests the oldest, which is cheaper than probing and receiving (0.5 us less per
  /// round trip here). A thread that finds another polling the same tag yields its core once
  /// and returns false (the other delivers what comes). A message that arrived in an envelope
  /// (wire::kind::envelope) is returned as the message it carried, received from the data
  /// communicator before this returns. Messages on any other tag are found by an MPI_ANY_TAG
  /// poll, which probes for them every stray_poll_every polls.
  ///
  /// `replies_expected` (MPI_ANY_TAG only): false when the caller has no call awaiting a reply;
  /// then all but every replies_poll_every-th poll test the request ring alone, with MPI_Test,
  /// which checks again after its progress (a reply nobody awaits, late or to a raw test
  /// message, is still taken within that many polls).
  bool try_receive(int tag, incoming& out, bool replies_expected = true);

  /// See try_receive: how often an MPI_ANY_TAG poll that expects no reply tests both rings.
  static constexpr unsigned replies_poll_every = 16;

  /// How often (in MPI_ANY_TAG polls that found nothing) try_receive probes for a message on
  /// a tag that has no posted receives (a malformed one: mpirpc sends only tags 1 and 2).
  static constexpr unsigned stray_poll_every = 64;

  /// Sends a control message, then its out-of-line segments on `data_tag`, each split into
  /// chunks of at most wire::max_chunk bytes. Returns once the buffers may be reused. A
  /// control message on tag 1 or 2 larger than wire::max_control_bytes goes as an envelope:
  /// a small stub on the control tag, then the message itself on the data communicator with
  /// `data_tag` (a fresh data tag when it has no segments), ahead of its segments.
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

  /// Sends `data` as the control message with `tag`, then each of `messages` as one message
  /// on the data communicator with `data_tag` as given (no chunking, no checks), so that bad
  /// input can be forged: used by the test seam (tests/support/seam) and by unit tests. Same
  /// completion and failure contract as send().
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
  /// the one moving the data (measured: lib/README.md, "Threads and pacing").
  int spinning_transfers() const noexcept { return _spinning.load(std::memory_order_seq_cst); }
  /// What this transport's transfer_pacers count in, and their spin budget before bytes.
  transfer_pacer::budget pacing_budget() noexcept { return {_spinning, _spin_for}; }

  /// The largest valid tag (MPI_TAG_UB of the control communicator).
  std::uint32_t tag_ub() const noexcept { return _tag_ub; }

  /// A fresh tag for one message's segments.
  std::uint32_t next_data_tag() noexcept;

  /// Collective over the collective communicator: `out[i]` = the sum over ranks of `in[i]`
  /// (MPI_Iallreduce, waited for with wait_with_backoff).
  void allreduce_sum(const std::uint64_t* in, std::uint64_t* out, int count);
  /// Collective: every rank's `count` values of `in`, by rank, into `out` (size() x count).
  void allgather(const std::uint64_t* in, int count, std::uint64_t* out);

  /// Recycles the buffers of control messages whose posted sends have completed (see
  /// posted_sends); a poller calls it when it finds nothing to do.
  void reap_sends() noexcept { _posted->reap(); }
  /// Control messages posted and not yet known to be complete (a hint: relaxed).
  std::size_t sends_in_flight() const noexcept { return _posted->in_flight(); }

  /// Waits (up to 1 s, or patience() if shorter) for the control messages still being sent, then
  /// frees the communicators. Called once traffic has stopped.
  void close() noexcept;

private:
  /// Receives posted ahead on the control communicator for one tag, oldest at `head`.
  struct posted_ring {
    static constexpr std::size_t depth = 16;
    int tag = 0;
    /// Claimed while testing, re-posting, and opening an envelope. Only ever tried (a poller
    /// that finds the ring claimed leaves it to its claimant), so a flag: one exchange to
    /// claim, one store to release, cheaper than a mutex in every poll.
    std::atomic<bool> claimed{false};
    MPI_Request requests[depth];
    std::vector<char> buffers[depth];
    std::size_t head = 0;
    /// The slot taken last, re-posted at the ring's next poll rather than before its message
    /// is dispatched (an MPI_Irecv is 0.1 us of the round trip); `depth` when none.
    std::size_t unposted = depth;
  };
  /// A try-only claim of a ring (see posted_ring::claimed).
  class ring_claim {
  public:
    explicit ring_claim(posted_ring& r) noexcept
        : _ring(r), _owned(!r.claimed.exchange(true, std::memory_order_acquire)) {}
    ~ring_claim() { release(); }
    ring_claim(const ring_claim&) = delete;
    ring_claim& operator=(const ring_claim&) = delete;
    explicit operator bool() const noexcept { return _owned; }
    void release() noexcept {
      if (_owned) _ring.claimed.store(false, std::memory_order_release);
      _owned = false;
    }

  private:
    posted_ring& _ring;
    bool _owned;
  };
  posted_ring _request_ring;
  posted_ring _reply_ring;
  std::atomic<unsigned> _any_polls{0};       ///< MPI_ANY_TAG polls (one poller at a time)
  std::atomic<unsigned> _empty_any_polls{0}; ///< of them, those that found nothing
  void post_ring(posted_ring& ring);
  void repost(posted_ring& ring, std::size_t slot);
  void repost_taken(posted_ring& ring);
  bool take_locked(posted_ring& ring, incoming& out);
  bool take_either(incoming& out);
  bool complete_taken(posted_ring& ring, int rc, const MPI_Status& status, incoming& out);
  void open_envelope(incoming& out);
  bool try_receive_stray(incoming& out);
  bool probe_and_receive(int source, int tag, incoming& out);
  void cancel_posted() noexcept;
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
  /// Control messages past Open MPI's inline size, sent without waiting for the receiver.
  std::unique_ptr<posted_sends> _posted;

  void post_and_wait(int dest, int tag, const char* data, std::size_t size,
                     const std::vector<segment>& parts, int data_tag, bool chunked,
                     bool* control_sent);
};

} // namespace mpirpc::detail
