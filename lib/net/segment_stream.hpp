// SPDX-License-Identifier: MIT
// Reading a received message's out-of-line buffers, checked against its segment table. Internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <mpi.h>

#include <mpirpc/serialization.hpp>

#include "net/transport.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

/// Where the receiving side reports a message it gives up on: a line for the log, then one
/// count of a malformed message. Implemented above the net layer (core/statistics.hpp:
/// diagnostics); any thread may call it.
class drop_report {
public:
  virtual void log(const std::string& line) const noexcept = 0;
  virtual void count_malformed() noexcept = 0;

protected:
  ~drop_report() = default;
};

/// Feeds a message's out-of-line buffers to the decoder, in order, checking each against the
/// segment table: straight from MPI into the destination, or from copies in memory (taken when
/// the request had to wait in the queue, or made by this rank when it sent the message to
/// itself). drain() swallows those the decoder did not take. One thread's, not thread-safe.
///
/// Every chunk is matched (MPI_Improbe) before anything is sized or received for it, and must
/// have exactly the size the table implies: a table that disagrees with what was sent is a
/// serialization_error, never an oversized receive (which Open MPI's shared-memory transport
/// answers with a crash) nor a short one (silently accepted by MPI). A chunk that does not
/// show up within the transport's patience is an error too; after that the stream gives up
/// and receives nothing more, so that a forged table costs one patience, not a stalled thread.
/// Such a message is reported to `report` (if any) once: logged, then counted as malformed.
class segment_stream final : public segment_source {
public:
  /// The buffers of `message`, whose validated header is `h`.
  segment_stream(transport& t, const incoming& message, const wire::header& h,
                 drop_report* report = nullptr);
  /// A message whose table is at `table` (for one that failed validation: its last bytes;
  /// `counted`: the caller has counted it as malformed already).
  segment_stream(transport& t, int source, std::uint32_t data_tag, const char* table,
                 std::uint32_t count, drop_report* report, bool counted = false);
  ~segment_stream() override;
  segment_stream(const segment_stream&) = delete;
  segment_stream& operator=(const segment_stream&) = delete;

  std::size_t next_segment_size() const override;
  void receive_segment(void* dst, std::size_t bytes) override;

  /// Receives every buffer not yet taken into `out`, so that the sender is released now and
  /// the message can be decoded later from memory.
  void prefetch(std::vector<std::vector<char>>& out);

  /// Receives and discards the buffers not taken, each chunk into a scratch buffer of the size
  /// actually sent, so that no unmatched message stays on the data communicator and the sender
  /// is not left blocked. Gives up (false, reported) when a chunk does not come within the
  /// patience, or after an earlier give-up.
  bool drain() noexcept;

private:
  void check_next() const;
  std::uint64_t size_of(std::uint32_t i) const;
  void note_malformed(const std::string& what) const noexcept;
  [[noreturn]] void fail_missing(std::uint64_t size) const;
  [[noreturn]] void fail_size(MPI_Message& m, std::size_t got, std::size_t expected) const;
  void hold_first_chunk() const;
  void receive_into(char* dst);
  void next_buffer();
  void next_buffer_state() const;

  transport& _t;
  drop_report* _report;
  int _source;
  std::uint32_t _tag;
  const char* _table;
  std::uint32_t _count;
  const std::vector<std::vector<char>>* _prefetched = nullptr;
  std::uint32_t _next = 0;
  // Progress within buffer _next (mutable: next_segment_size() is const but matches a chunk).
  mutable bool _held = false; ///< its first chunk is matched, not yet received
  mutable MPI_Message _held_message = MPI_MESSAGE_NULL;
  mutable std::size_t _held_bytes = 0;
  mutable std::uint64_t _taken = 0; ///< bytes of it received or discarded
  mutable bool _started = false;    ///< one of its chunks has been taken
  mutable bool _gave_up = false;    ///< a chunk did not come in time: receive nothing more
  mutable bool _logged = false;     ///< the give-up has been logged
  mutable bool _counted = false;    ///< counted in malformed_messages

  /// Paces (and counts) the receipt of buffer _next, from matching its first chunk on.
  mutable std::optional<transfer_pacer> _pacer;
};

} // namespace mpirpc::detail
