// SPDX-License-Identifier: MIT
#include "net/wire.hpp"

#include <cstring>

namespace mpirpc::detail::wire {

std::string validate(const char* data, std::size_t size, int tag, header& out,
                     std::uint32_t max_data_tag) {
  if (size < sizeof(header)) {
    return "message of " + std::to_string(size) + " bytes is shorter than the " +
           std::to_string(sizeof(header)) + "-byte header";
  }
  std::memcpy(&out, data, sizeof(header));
  if (out.magic != magic) return "bad magic number";
  if (out.version != version) {
    return "wire version " + std::to_string(out.version) + ", expected " + std::to_string(version);
  }
  const auto k = static_cast<kind>(out.kind);
  if (tag == tag_request && k != kind::request && k != kind::batch) {
    return "request tag with a non-request kind " + std::to_string(out.kind);
  }
  if (tag == tag_reply && k != kind::reply_value && k != kind::reply_error && k != kind::batch) {
    return "reply tag with a non-reply kind " + std::to_string(out.kind);
  }
  if (tag != tag_request && tag != tag_reply) return "unknown tag " + std::to_string(tag);
  if (out.flags & ~request_flags_known) return "unknown flags " + std::to_string(out.flags);
  if (out.flags != 0 && k != kind::request) {
    return k == kind::batch ? "flags on a batch" : "flags on a reply";
  }
  if ((out.flags & request_one_way) && (out.flags & request_rref_flags)) {
    return "a one-way request with rref flags";
  }
  if (k == kind::batch && out.segment_count != 0) return "segments on a batch";
  if (out.segment_count > max_segments) {
    return std::to_string(out.segment_count) + " segments exceed the limit of " +
           std::to_string(max_segments);
  }
  if (out.segment_count > 0 && out.data_tag == 0) return "segments without a data tag";
  if (out.segment_count > 0 && out.data_tag > max_data_tag) {
    return "data tag " + std::to_string(out.data_tag) + " above the limit of " +
           std::to_string(max_data_tag);
  }
  const std::size_t body = size - sizeof(header);
  const std::size_t table = std::size_t(out.segment_count) * sizeof(std::uint64_t);
  if (out.payload_size > body || body - out.payload_size != table) {
    return "payload size " + std::to_string(out.payload_size) + " and " +
           std::to_string(out.segment_count) + " segments do not add up to the " +
           std::to_string(size) + "-byte message";
  }
  return {};
}

std::string validate_batched(const char* data, std::size_t size, int tag, header& out,
                             std::size_t& message_size) {
  if (size < sizeof(header)) {
    return "a batched message of " + std::to_string(size) + " bytes is shorter than the " +
           std::to_string(sizeof(header)) + "-byte header";
  }
  std::memcpy(&out, data, sizeof(header));
  if (out.kind == static_cast<std::uint8_t>(kind::batch)) return "a batch inside a batch";
  if (out.segment_count != 0) return "a batched message with segments";
  if (out.payload_size > size - sizeof(header)) {
    return "a batched message's payload of " + std::to_string(out.payload_size) +
           " bytes runs past the batch's end";
  }
  message_size = sizeof(header) + static_cast<std::size_t>(out.payload_size);
  return validate(data, message_size, tag, out);
}

bool segment_table_readable(std::size_t size, const header& h, std::uint32_t max_data_tag) {
  return size >= sizeof(header) && h.magic == magic && h.version == version &&
         h.segment_count > 0 && h.segment_count <= max_segments && h.data_tag > 0 &&
         h.data_tag <= max_data_tag && h.data_tag <= 0x7fffffffu &&
         size - sizeof(header) >= std::size_t(h.segment_count) * sizeof(std::uint64_t);
}

} // namespace mpirpc::detail::wire
