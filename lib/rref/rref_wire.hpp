// SPDX-License-Identifier: MIT
// The bytes of remote references (docs/wire.md, "Remote references"): the rref encoding inside
// payloads, the prefix of flagged requests and the payloads of the internal functions, read
// with every check that needs no rref_table. Internal to lib/ (rref/); the decoder's fuzz
// target (tests/fuzz) decodes with the same functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include <mpirpc/serialization.hpp>

#include "net/wire.hpp"

namespace mpirpc::detail::wire {

/// Weight a creation carries: the creator's record starts with it.
constexpr std::uint64_t initial_weight = std::uint64_t(1) << 48;
/// What a replenish asks for.
constexpr std::uint64_t replenish_weight = std::uint64_t(1) << 40;
/// Most weight a single message may claim to carry (a larger one is malformed).
constexpr std::uint64_t max_message_weight = initial_weight;
/// Most weight a release may give back (a record's whole weight).
constexpr std::uint64_t max_release_weight = std::uint64_t(1) << 62;

/// Wire form of a reference inside a payload.
struct wire_rref {
  std::uint64_t id;
  std::uint32_t owner;
  std::uint32_t flags; ///< bit 0: the sender knew the owner confirmed the object
  std::uint64_t weight;
};
static_assert(sizeof(wire_rref) == 24, "rref wire layout changed");

/// Reads an rref encoding, checking it as far as no record is involved: an empty reference
/// carries no weight; otherwise the owner is one of `workers`, the weight is 1 ..
/// max_message_weight and the flags 0 or 1.
inline wire_rref read_rref(reader& in, std::size_t workers) {
  const auto v = in.read_plain<wire_rref>();
  if (v.id == 0) {
    if (v.weight != 0) in.fail("an empty rref carries weight");
    return v;
  }
  if (v.owner >= workers) in.fail("rref owner " + std::to_string(v.owner) + " is no worker");
  if (v.weight == 0 || v.weight > max_message_weight) {
    in.fail("rref weight " + std::to_string(v.weight) + " out of range");
  }
  if (v.flags > 1) in.fail("bad rref flags");
  return v;
}

/// An object id where an object must be named (not 0).
inline std::uint64_t read_object_id(reader& in) {
  const auto id = in.read_plain<std::uint64_t>();
  if (id == 0) in.fail("rref id 0");
  return id;
}

/// The weight lent to a call: 1 .. max_message_weight.
inline std::uint64_t read_call_weight(reader& in) {
  const auto weight = in.read_plain<std::uint64_t>();
  if (weight == 0 || weight > max_message_weight) in.fail("call weight out of range");
  return weight;
}

/// The prefix of a request whose flags are not 0; a field is 0 where its flag is not set.
struct request_prefix {
  std::uint64_t new_id = 0;      ///< creates_rref: the object the call creates ...
  std::uint64_t new_weight = 0;  ///< ... and the weight it carries
  std::uint64_t self_id = 0;     ///< on_rref: the object the call runs on ...
  std::uint64_t self_weight = 0; ///< ... and the weight lent to the call
};
inline request_prefix read_request_prefix(reader& in, std::uint16_t flags) {
  request_prefix p;
  if (flags & request_creates_rref) {
    p.new_id = read_object_id(in);
    p.new_weight = in.read_plain<std::uint64_t>();
    if (p.new_weight == 0 || p.new_weight > max_message_weight) {
      in.fail("creation weight out of range");
    }
  }
  if (flags & request_on_rref) {
    p.self_id = read_object_id(in);
    p.self_weight = read_call_weight(in);
  }
  return p;
}

/// The whole payload of a to_here request: an object id and the weight lent to the call.
inline std::pair<std::uint64_t, std::uint64_t> read_fetch_request(reader& in) {
  const std::uint64_t id = read_object_id(in);
  const std::uint64_t weight = read_call_weight(in);
  if (in.remaining() != 0) in.fail("unexpected bytes after the rref id");
  return {id, weight};
}

/// The whole payload of a release or replenish: an object id and a weight within [1, max].
inline std::pair<std::uint64_t, std::uint64_t> read_id_and_weight(reader& in, std::uint64_t max,
                                                                  const char* what) {
  const std::uint64_t id = read_object_id(in);
  const auto weight = in.read_plain<std::uint64_t>();
  if (weight == 0 || weight > max) in.fail(std::string(what) + " weight out of range");
  if (in.remaining() != 0) in.fail(std::string("unexpected bytes after a ") + what);
  return {id, weight};
}

} // namespace mpirpc::detail::wire
