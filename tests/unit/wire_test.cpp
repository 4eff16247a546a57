// SPDX-License-Identifier: MIT
// lib/net/wire.hpp: wire::validate, one rule at a time, with the text each failure returns, and
// wire::segment_table_readable (which refused messages get their out-of-line data drained).
// Internal header: this test has lib/ on its include path.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "net/wire.hpp"

namespace {

namespace wire = mpirpc::detail::wire;

wire::header good_header(wire::kind kind = wire::kind::request) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(kind);
  h.call_id = 0x100000007;
  h.function_id = 0x1234;
  return h;
}

/// header | `payload_bytes` zero bytes | `table_entries` u64 entries (32 KiB each).
std::vector<char> bytes_of(const wire::header& h, std::size_t payload_bytes,
                           std::size_t table_entries = 0) {
  std::vector<char> out(sizeof h + payload_bytes + table_entries * 8, 0);
  std::memcpy(out.data(), &h, sizeof h);
  for (std::size_t i = 0; i < table_entries; ++i) {
    const std::uint64_t n = 32768;
    std::memcpy(out.data() + sizeof h + payload_bytes + i * 8, &n, 8);
  }
  return out;
}

/// Validates a message whose header fields say exactly what it holds.
std::string check(wire::header h, int tag, std::size_t payload = 4, std::size_t table = 0,
                  std::uint32_t max_data_tag = 0x7fffffff) {
  h.payload_size = payload;
  if (table > 0 && h.segment_count == 0) h.segment_count = static_cast<std::uint32_t>(table);
  const std::vector<char> m = bytes_of(h, payload, table);
  wire::header out{};
  return wire::validate(m.data(), m.size(), tag, out, max_data_tag);
}

} // namespace

TEST_CASE("well-formed requests and replies pass", "[wire]") {
  CHECK(check(good_header(), wire::tag_request) == "");
  CHECK(check(good_header(), wire::tag_request, 0) == "");
  CHECK(check(good_header(wire::kind::reply_value), wire::tag_reply) == "");
  CHECK(check(good_header(wire::kind::reply_error), wire::tag_reply) == "");
  auto flagged = good_header();
  flagged.flags = wire::request_on_rref | wire::request_creates_rref;
  CHECK(check(flagged, wire::tag_request) == "");
  auto segmented = good_header();
  segmented.data_tag = 5;
  CHECK(check(segmented, wire::tag_request, 16, 3) == "");
  segmented.segment_count = wire::max_segments;
  CHECK(check(segmented, wire::tag_request, 0, wire::max_segments) == "");
}

TEST_CASE("validate fills in the header it read", "[wire]") {
  auto h = good_header(wire::kind::reply_value);
  h.payload_size = 4;
  const auto m = bytes_of(h, 4);
  wire::header out{};
  REQUIRE(wire::validate(m.data(), m.size(), wire::tag_request, out) != "");
  CHECK(out.magic == wire::magic);
  CHECK(out.call_id == h.call_id);
  CHECK(out.function_id == h.function_id);
  CHECK(out.kind == static_cast<std::uint8_t>(wire::kind::reply_value));
}

TEST_CASE("a message shorter than the header", "[wire]") {
  const std::vector<char> m(39, 0);
  wire::header out{};
  CHECK(wire::validate(m.data(), m.size(), wire::tag_request, out) ==
        "message of 39 bytes is shorter than the 40-byte header");
  CHECK(wire::validate(nullptr, 0, wire::tag_reply, out) ==
        "message of 0 bytes is shorter than the 40-byte header");
}

TEST_CASE("bad magic number", "[wire]") {
  auto h = good_header();
  h.magic = 0x4d505243; // the other byte order
  CHECK(check(h, wire::tag_request) == "bad magic number");
  h.magic = 0;
  CHECK(check(h, wire::tag_reply) == "bad magic number");
}

TEST_CASE("wrong version", "[wire]") {
  auto h = good_header();
  h.version = 2;
  CHECK(check(h, wire::tag_request) == "wire version 2, expected 1");
  h.version = 0;
  CHECK(check(h, wire::tag_request) == "wire version 0, expected 1");
}

TEST_CASE("kinds that do not match the tag, and unknown kinds", "[wire]") {
  CHECK(check(good_header(wire::kind::reply_value), wire::tag_request) ==
        "request tag with a non-request kind 2");
  CHECK(check(good_header(wire::kind::reply_error), wire::tag_request) ==
        "request tag with a non-request kind 3");
  CHECK(check(good_header(wire::kind::request), wire::tag_reply) ==
        "reply tag with a non-reply kind 1");
  auto h = good_header();
  h.kind = 0;
  CHECK(check(h, wire::tag_request) == "request tag with a non-request kind 0");
  h.kind = 7; // (4 is a batch, allowed on both tags)
  CHECK(check(h, wire::tag_request) == "request tag with a non-request kind 7");
  CHECK(check(h, wire::tag_reply) == "reply tag with a non-reply kind 7");
  h.kind = 255;
  CHECK(check(h, wire::tag_reply) == "reply tag with a non-reply kind 255");
}

TEST_CASE("unknown tags", "[wire]") {
  CHECK(check(good_header(), 0) == "unknown tag 0");
  CHECK(check(good_header(), 3) == "unknown tag 3");
  CHECK(check(good_header(wire::kind::reply_value), 12345) == "unknown tag 12345");
}

TEST_CASE("flags", "[wire]") {
  auto h = good_header();
  h.flags = wire::request_one_way;
  CHECK(check(h, wire::tag_request) == "");
  h.flags = wire::request_one_way | wire::request_on_rref;
  CHECK(check(h, wire::tag_request) == "a one-way request with rref flags");
  h.flags = wire::request_one_way | wire::request_creates_rref;
  CHECK(check(h, wire::tag_request) == "a one-way request with rref flags");
  h.flags = 8;
  CHECK(check(h, wire::tag_request) == "unknown flags 8");
  h.flags = 0x8001;
  CHECK(check(h, wire::tag_request) == "unknown flags 32769");
  auto r = good_header(wire::kind::reply_value);
  r.flags = wire::request_on_rref;
  CHECK(check(r, wire::tag_reply) == "flags on a reply");
  auto e = good_header(wire::kind::reply_error);
  e.flags = wire::request_creates_rref;
  CHECK(check(e, wire::tag_reply) == "flags on a reply");
}

TEST_CASE("segment count and data tag", "[wire]") {
  auto h = good_header();
  h.data_tag = 9;
  h.segment_count = wire::max_segments + 1;
  CHECK(check(h, wire::tag_request, 0, wire::max_segments + 1) ==
        "4097 segments exceed the limit of 4096");
  h.segment_count = 0xffffffff; // checked before the sizes, so no table is needed
  CHECK(check(h, wire::tag_request, 0, 0) == "4294967295 segments exceed the limit of 4096");

  auto untagged = good_header();
  untagged.segment_count = 1;
  CHECK(check(untagged, wire::tag_request, 0, 1) == "segments without a data tag");

  auto high = good_header();
  high.data_tag = 101;
  CHECK(check(high, wire::tag_request, 0, 1, 100) == "data tag 101 above the limit of 100");
  CHECK(check(high, wire::tag_request, 0, 1, 101) == "");
  high.data_tag = 0x80000000u; // not an MPI tag at all (negative as int)
  CHECK(check(high, wire::tag_request, 0, 1) ==
        "data tag 2147483648 above the limit of 2147483647");
  // A data tag without segments is ignored.
  auto stray = good_header();
  stray.data_tag = 0x80000000u;
  CHECK(check(stray, wire::tag_request) == "");
}

TEST_CASE("payload size and segment table against the byte count", "[wire]") {
  auto h = good_header();
  const auto m = bytes_of(h, 5); // 45 bytes
  wire::header out{};
  h.payload_size = 6;
  auto longer = m;
  std::memcpy(longer.data(), &h, sizeof h);
  CHECK(wire::validate(longer.data(), longer.size(), wire::tag_request, out) ==
        "payload size 6 and 0 segments do not add up to the 45-byte message");
  h.payload_size = 4;
  std::memcpy(longer.data(), &h, sizeof h);
  CHECK(wire::validate(longer.data(), longer.size(), wire::tag_request, out) ==
        "payload size 4 and 0 segments do not add up to the 45-byte message");
  h.payload_size = ~std::uint64_t(0); // no overflow in the check
  std::memcpy(longer.data(), &h, sizeof h);
  CHECK(wire::validate(longer.data(), longer.size(), wire::tag_request, out) ==
        "payload size 18446744073709551615 and 0 segments do not add up to the 45-byte message");

  // Two segments announced, table of one entry.
  auto s = good_header();
  s.data_tag = 3;
  s.segment_count = 2;
  s.payload_size = 8;
  const auto short_table = bytes_of(s, 8, 1); // 56 bytes
  CHECK(wire::validate(short_table.data(), short_table.size(), wire::tag_request, out) ==
        "payload size 8 and 2 segments do not add up to the 56-byte message");
  // One segment announced, table of two entries.
  s.segment_count = 1;
  const auto long_table = bytes_of(s, 8, 2); // 64 bytes
  CHECK(wire::validate(long_table.data(), long_table.size(), wire::tag_request, out) ==
        "payload size 8 and 1 segments do not add up to the 64-byte message");
}

TEST_CASE("segment_table_readable: which refused messages have their buffers drained", "[wire]") {
  auto h = good_header();
  h.segment_count = 2;
  h.data_tag = 7;
  h.payload_size = 1000; // wrong on purpose: the table is read at the message's end
  const std::size_t size = sizeof h + 16;
  CHECK(wire::segment_table_readable(size, h, 100));
  CHECK(wire::segment_table_readable(size + 3, h, 100));
  CHECK_FALSE(wire::segment_table_readable(size - 1, h, 100)); // too short for the table
  CHECK_FALSE(wire::segment_table_readable(39, h, 100));       // no header
  CHECK_FALSE(wire::segment_table_readable(size, h, 6));       // data tag above the limit

  auto other = h;
  other.magic = 1;
  CHECK_FALSE(wire::segment_table_readable(size, other, 100));
  other = h;
  other.version = 2;
  CHECK_FALSE(wire::segment_table_readable(size, other, 100));
  other = h;
  other.segment_count = 0;
  CHECK_FALSE(wire::segment_table_readable(size, other, 100));
  other = h;
  other.segment_count = wire::max_segments + 1;
  CHECK_FALSE(wire::segment_table_readable(sizeof h + 8 * (wire::max_segments + 1), other, 100));
  other = h;
  other.data_tag = 0;
  CHECK_FALSE(wire::segment_table_readable(size, other, 100));
  other = h;
  other.data_tag = 0x80000000u;
  CHECK_FALSE(wire::segment_table_readable(size, other, 0xffffffffu));
}

TEST_CASE("batches: allowed on both tags, without flags or segments", "[wire]") {
  CHECK(check(good_header(wire::kind::batch), wire::tag_request) == "");
  CHECK(check(good_header(wire::kind::batch), wire::tag_reply) == "");
  auto flagged = good_header(wire::kind::batch);
  flagged.flags = wire::request_one_way;
  CHECK(check(flagged, wire::tag_request) == "flags on a batch");
  auto segmented = good_header(wire::kind::batch);
  segmented.data_tag = 5;
  CHECK(check(segmented, wire::tag_request, 4, 1) == "segments on a batch");
}

/// Validates the message at the start of `bytes` as one inside a batch.
std::string check_batched(const std::vector<char>& bytes, int tag, std::size_t& size) {
  wire::header out{};
  return wire::validate_batched(bytes.data(), bytes.size(), tag, out, size);
}

TEST_CASE("messages inside a batch", "[wire]") {
  std::size_t size = 0;
  auto h = good_header();
  h.payload_size = 4;
  auto two = bytes_of(h, 4);
  const auto second = bytes_of(h, 4);
  two.insert(two.end(), second.begin(), second.end()); // two messages back to back
  CHECK(check_batched(two, wire::tag_request, size) == "");
  CHECK(size == sizeof(wire::header) + 4);

  CHECK(check_batched(std::vector<char>(39), wire::tag_request, size) ==
        "a batched message of 39 bytes is shorter than the 40-byte header");
  auto nested = good_header(wire::kind::batch);
  nested.payload_size = 4;
  CHECK(check_batched(bytes_of(nested, 4), wire::tag_request, size) == "a batch inside a batch");
  auto segmented = good_header();
  segmented.payload_size = 4;
  segmented.segment_count = 1;
  segmented.data_tag = 3;
  CHECK(check_batched(bytes_of(segmented, 4, 1), wire::tag_request, size) ==
        "a batched message with segments");
  auto overlong = good_header();
  overlong.payload_size = 100;
  CHECK(check_batched(bytes_of(overlong, 4), wire::tag_request, size) ==
        "a batched message's payload of 100 bytes runs past the batch's end");
  // The rules of validate() apply too, for the batch's tag.
  auto reply = good_header(wire::kind::reply_value);
  reply.payload_size = 4;
  CHECK(check_batched(bytes_of(reply, 4), wire::tag_request, size) ==
        "request tag with a non-request kind 2");
}
