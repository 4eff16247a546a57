// SPDX-License-Identifier: MIT
// The wire format of mpirpc's messages (see docs/wire.md). Internal to lib/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace mpirpc::detail::wire {

/// Tags on the control communicator. Out-of-line buffers travel on the data communicator
/// with a per-transfer tag named in the header.
constexpr int tag_request = 1;
constexpr int tag_reply = 2;

constexpr std::uint32_t magic = 0x4352504d; // "MPRC" little-endian
constexpr std::uint8_t version = 1;

enum class kind : std::uint8_t {
  request = 1,
  reply_value = 2,
  reply_error = 3,
  /// Several complete messages of one kind family (requests on tag_request, replies on
  /// tag_reply), each `header | payload` without segments, back to back in the payload;
  /// call_id holds their count. See docs/wire.md, "Batches".
  batch = 4,
  /// Stands in for a control message larger than max_control_bytes: the message itself follows
  /// on the data communicator with this header's data_tag (and its segments after it, on the
  /// same tag); the payload is its size (u64). Opened by the receiving transport, never
  /// dispatched. See docs/wire.md, "Envelopes".
  envelope = 5,
};

/// What an error reply reports; decides the exception type raised at the caller.
enum class error_code : std::uint8_t {
  remote_exception = 1, ///< the function threw: remote_error
  unknown_function = 2, ///< the callee has no such function: unknown_function_error
  serialization = 3,    ///< arguments or result failed to (de)serialize: serialization_error
  shutting_down = 4,    ///< the callee stopped serving: shutdown_error
  malformed = 5,        ///< the request was malformed: serialization_error
};

/// The message of an unknown_function error reply that leaves the wording to the caller (it
/// knows the function's name; the callee, lacking the function, knows only its id). Any other
/// message is the callee's own account and is shown as it is.
constexpr const char* unknown_function_text = "no such function";

/// Request flags: the payload starts with the id and weight of the object the call creates
/// (request_creates_rref), then the id of the object it runs on and the weight the call
/// carries (request_on_rref). Same values as rpc.hpp's on_rref / creates_rref.
constexpr std::uint16_t request_on_rref = 1;
constexpr std::uint16_t request_creates_rref = 2;
constexpr std::uint16_t request_rref_flags = request_on_rref | request_creates_rref;
/// A one-way call (rpc_ff): no reply is sent; call_id is zero. Never combined with rref flags.
constexpr std::uint16_t request_one_way = 4;
constexpr std::uint16_t request_flags_known = request_rref_flags | request_one_way;

/// The largest batch a sender builds (header and every message in it): batches stay below
/// Open MPI's usual eager limit for shared memory (4 KiB), so that a batch never waits for
/// its receiver.
constexpr std::size_t max_batch_bytes = 4000;

/// The largest control message that travels as itself: receivers keep receives of this size
/// posted for both control tags (transport.cpp), and a larger message would be truncated. A
/// larger one travels as an envelope (kind::envelope). Also Open MPI's shared-memory eager
/// limit.
constexpr std::size_t max_control_bytes = 4096;
static_assert(max_batch_bytes <= max_control_bytes, "a batch must fit a posted receive");

/// Limits checked on every received header.
constexpr std::uint32_t max_segments = 4096;

/// Fixed header at the start of every control message:
///   header | payload (payload_size bytes) | segment table (segment_count x uint64 sizes)
/// The segments themselves follow as separate messages on the data communicator, tag data_tag,
/// each split into chunks of at most max_chunk bytes.
struct header {
  std::uint32_t magic;
  std::uint8_t version;
  std::uint8_t kind;
  std::uint16_t flags; ///< requests only: request_flag bits; zero otherwise
  std::uint32_t segment_count;
  std::uint32_t data_tag;
  std::uint64_t call_id;
  std::uint64_t function_id;
  std::uint64_t payload_size;
};
static_assert(sizeof(header) == 40, "wire header layout changed");

/// Largest chunk of an out-of-line buffer in one MPI message (MPI counts are int).
constexpr std::size_t max_chunk = std::size_t(1) << 30;

/// Checks a received control message; returns an empty string when it is well formed, else
/// what is wrong with it (docs/wire.md, "Validation on receipt", lists the rules and texts).
/// `tag` is the tag it arrived with; `max_data_tag` the largest data tag the receiver's
/// communicator allows (its MPI_TAG_UB). `out` receives the header whenever `size` is at
/// least sizeof(header), valid or not.
std::string validate(const char* data, std::size_t size, int tag, header& out,
                     std::uint32_t max_data_tag = 0x7fffffff);

/// Checks one message inside a batch that arrived with `tag` (the batch's `size` bytes from
/// `data` on): the rules of validate() for that tag, plus no segments and no nested batch.
/// On success `message_size` is its length (header and payload).
std::string validate_batched(const char* data, std::size_t size, int tag, header& out,
                             std::size_t& message_size);

/// Whether the segment table of a control message that failed validate() can still be read,
/// so that its out-of-line buffers can be received and discarded: `size` covers the header,
/// magic and version are right, 1 .. max_segments segments, a data tag in 1 .. max_data_tag,
/// and the message is long enough to end with the table. The table is then the last
/// 8 * segment_count bytes of the message, where the sender puts it, whatever payload_size
/// says.
bool segment_table_readable(std::size_t size, const header& h, std::uint32_t max_data_tag);

} // namespace mpirpc::detail::wire
