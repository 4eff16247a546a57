// SPDX-License-Identifier: MIT
// Test seam: raw bytes on the running runtime's private communicators. Its own library
// (mpirpc_test_seam, tests/CMakeLists.txt), linked by the tests that use it
// (tests/mpi/wire_test.cpp): not part of mpirpc, not installed, not for applications.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/transport.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail::testing {

/// Sends `control` as one message with `tag` on the running engine's control communicator to
/// rank `dest`, then each of `data` as one message on its data communicator with `data_tag`
/// (no chunking, no checks: a negative or out-of-range tag makes that send fail). Returns once
/// everything has been sent (a large data message: once the receiver has taken it), or throws
/// mpi_error. Counted for quiescence exactly as sender::send_message counts a message: as sent
/// before it is sent, and as received too if it fails before the control message has left
/// (after that, the receiver counts it).
void send_raw(int dest, int tag, const std::vector<char>& control,
              const std::vector<std::vector<char>>& data = {}, int data_tag = 0);

/// A header with the right magic and version and the given fields (flags 0).
wire::header make_header(wire::kind kind, std::uint64_t call_id, std::uint64_t function_id,
                         std::uint64_t payload_size, std::uint32_t segment_count = 0,
                         std::uint32_t data_tag = 0);
/// header | payload | table, as the sender lays a control message out; the header's fields
/// are taken as given, not computed.
std::vector<char> make_message(const wire::header& h, const std::vector<char>& payload = {},
                               const std::vector<std::uint64_t>& table = {});

/// A reply received for a call id registered with expect_reply.
struct reply {
  int source = -1;
  wire::header header{};
  std::vector<char> bytes; ///< the whole control message
};
/// The fields of an error reply's payload.
struct error_reply {
  wire::error_code code{};
  std::string origin, type, message;
};

/// From now on, a reply with `call_id` that names no pending call of this rank is kept for
/// take_reply instead of being dropped as late (its out-of-line buffers are discarded). The
/// first call installs the seam's late_reply_hook in the library (lib/core/receiver.hpp).
void expect_reply(std::uint64_t call_id);
/// Waits up to `limit` for the reply expected with `call_id`; forgets the expectation either way.
std::optional<reply> take_reply(std::uint64_t call_id, std::chrono::milliseconds limit);
/// Decodes an error reply's payload; throws serialization_error if it is not one.
error_reply decode_error(const reply& r);

/// This rank's quiescence counters (control messages counted as sent, as received).
std::pair<std::uint64_t, std::uint64_t> message_counts();

/// How long the running engine waits for announced out-of-line data (transport::patience).
void set_patience(std::chrono::milliseconds patience);
std::chrono::milliseconds patience();

} // namespace mpirpc::detail::testing
