// SPDX-License-Identifier: MIT
// Bad input on the wire, end to end: every rank puts raw bytes on the runtime's private
// communicators (the test seam, tests/support/seam/testing.hpp) for its right neighbour's
// running engine and checks the defined outcome (docs/wire.md, "Validation on receipt"): the error
// reply where one is due (received through the seam: code, type, text), the counter, the log line,
// that the sender of announced out-of-line data is released, that the neighbour keeps serving,
// that the quiescence counters balance after every case and that graceful shutdown completes.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <mpi.h>

#include <mpirpc/mpirpc.hpp>

#include "core/registry.hpp"
#include "mpi_test_support.hpp"
#include "net/wire.hpp"
#include "testing.hpp"

namespace {

int add(int a, int b) {
  return a + b;
}
std::uint64_t count_bytes(std::vector<char> v) {
  return v.size();
}
int sleepy(int milliseconds) {
  std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
  return milliseconds;
}

} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER(count_bytes);
MPIRPC_REGISTER(sleepy);

namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using mpirpc_test::eventually;
using mpirpc_test::worker;
namespace wire = mpirpc::detail::wire;
namespace seam = mpirpc::detail::testing;

constexpr std::uint64_t out_of_line_bit = std::uint64_t(1) << 63;

int next() {
  return mpirpc_test::next_rank();
}
int prev() {
  const int n = mpirpc_test::world_size();
  return (mpirpc_test::world_rank() + n - 1) % n;
}

/// Call ids of generation 0 never name a live call (generations start at 1).
std::uint64_t fresh_call_id() {
  static std::uint64_t n = 0;
  return 0x7e570000u + static_cast<std::uint64_t>(mpirpc_test::world_rank()) * 0x1000 + ++n;
}

std::uint64_t id_of(const char* name) {
  return mpirpc::detail::function_id_of(name);
}

template <class T> void append(std::vector<char>& out, const T& v) {
  const char* p = reinterpret_cast<const char*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

/// The payload of add(a, b).
std::vector<char> add_args(int a, int b) {
  std::vector<char> p;
  append(p, a);
  append(p, b);
  return p;
}

/// One raw message, as built for a given call id.
struct raw {
  int tag = wire::tag_request;
  std::function<std::vector<char>(std::uint64_t call_id)> build;
  std::vector<std::vector<char>> data;
  int data_tag = 0;
  bool reply = false; ///< the receiver answers it
};

struct outcome {
  std::string log;
  mpirpc::runtime_stats before, after;
  std::optional<seam::reply> reply;
  std::exception_ptr send_error;
  std::uint64_t call_id = 0;
};

/// Waits for a collective decision: the same on every rank.
bool all_ranks(bool mine) {
  int in = mine ? 1 : 0, out = 0;
  MPI_Request request;
  MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD, &request);
  mpirpc_test::wait_for(request);
  return out != 0;
}

/// Sums of every rank's sent and received counters become equal (nothing in flight).
bool counters_balance() {
  for (int round = 0; round < 400; ++round) {
    const auto [sent, received] = seam::message_counts();
    std::uint64_t local[2] = {sent, received}, total[2] = {0, 0};
    MPI_Request request;
    MPI_Iallreduce(local, total, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD, &request);
    mpirpc_test::wait_for(request);
    if (total[0] == total[1]) return true; // the same verdict on every rank
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

/// Every rank sends `m` to its right neighbour. Waits, within the stderr capture, until the
/// reply (if one is due) has come back and `processed(before, now)` holds for this rank's own
/// counters (what its left neighbour's copy did here), then until every rank is there.
outcome exchange(const raw& m,
                 const std::function<bool(const mpirpc::runtime_stats& before,
                                          const mpirpc::runtime_stats& now)>& processed) {
  outcome out;
  out.call_id = fresh_call_id();
  const std::vector<char> bytes = m.build(out.call_id);
  out.before = mpirpc::stats();
  if (m.reply) seam::expect_reply(out.call_id);
  out.log = mpirpc_test::capture_stderr([&] {
    mpirpc_test::barrier(); // every rank captures before any message leaves
    // On its own thread: a sender whose data is never received would block here for good.
    auto sent = std::async(std::launch::async, [&] {
      try {
        seam::send_raw(next(), m.tag, bytes, m.data, m.data_tag);
      } catch (...) {
        out.send_error = std::current_exception();
      }
    });
    if (sent.wait_for(60s) != std::future_status::ready) {
      std::fprintf(stderr, "wire_test: the raw send to rank %d never completed\n", next());
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    if (m.reply) out.reply = seam::take_reply(out.call_id, 30s);
    eventually([&] { return processed(out.before, mpirpc::stats()); }, 30s);
    mpirpc_test::barrier();
  });
  out.after = mpirpc::stats();
  mpirpc_test::barrier(); // no rank's next calls reach a rank still reading its counters
  return out;
}

bool malformed_once(const mpirpc::runtime_stats& before, const mpirpc::runtime_stats& now) {
  return now.malformed_messages == before.malformed_messages + 1;
}
bool nothing(const mpirpc::runtime_stats&, const mpirpc::runtime_stats&) {
  return true;
}

std::string dropped_line(int tag, const std::string& problem) {
  return "mpirpc[" + worker(mpirpc_test::world_rank()) +
         "]: dropped a malformed message from rank " + std::to_string(prev()) + " (tag " +
         std::to_string(tag) + "): " + problem;
}

/// Checks the error reply of `o`: from the right neighbour, with `code`, `type` and a message
/// containing `text`.
void check_error_reply(const outcome& o, wire::error_code code, const std::string& type,
                       const std::string& text) {
  REQUIRE(o.reply.has_value());
  CHECK(o.reply->source == next());
  CHECK(o.reply->header.call_id == o.call_id);
  const seam::error_reply e = seam::decode_error(*o.reply);
  CHECK(static_cast<int>(e.code) == static_cast<int>(code));
  CHECK(e.type == type);
  CHECK(e.origin == worker(next()));
  CHECK_THAT(e.message, Contains(text));
}

/// The neighbours still serve, counters balance.
void check_still_serving() {
  CHECK(mpirpc::rpc_sync(worker(next()), add, 20, 22) == 42);
  CHECK(mpirpc::rpc_sync(worker(prev()), add, 1, -1) == 0);
  CHECK(counters_balance());
}

/// A request header for `function_id` with this payload and table, sizes consistent.
std::vector<char> request(std::uint64_t call_id, std::uint64_t function_id,
                          const std::vector<char>& payload,
                          const std::vector<std::uint64_t>& table = {},
                          std::uint32_t data_tag = 0) {
  const wire::header h =
      seam::make_header(wire::kind::request, call_id, function_id, payload.size(),
                        static_cast<std::uint32_t>(table.size()), data_tag);
  return seam::make_message(h, payload, table);
}

} // namespace

/// The value of count_bytes' reply in `o`.
std::uint64_t counted_bytes(const outcome& o) {
  REQUIRE(o.reply.has_value());
  REQUIRE(o.reply->header.kind == static_cast<std::uint8_t>(wire::kind::reply_value));
  REQUIRE(o.reply->bytes.size() >= sizeof(wire::header) + sizeof(std::uint64_t));
  std::uint64_t got = 0;
  std::memcpy(&got, o.reply->bytes.data() + sizeof(wire::header), sizeof got);
  return got;
}

TEST_CASE("raw well-formed requests are served (the seam itself)", "[wire]") {
  mpirpc::runtime rt;
  SECTION("inline arguments") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) { return request(id, id_of("add"), add_args(1, 2)); };
    const outcome o = exchange(m, nothing);
    REQUIRE(o.reply.has_value());
    CHECK(o.reply->header.kind == static_cast<std::uint8_t>(wire::kind::reply_value));
    REQUIRE(o.reply->header.payload_size == sizeof(int));
    int three = 0;
    std::memcpy(&three, o.reply->bytes.data() + sizeof(wire::header), sizeof three);
    CHECK(three == 3);
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
    CHECK(o.after.requests_served == o.before.requests_served + 1);
  }
  SECTION("an out-of-line argument") {
    const std::uint64_t n = 100000;
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(n, 'x')};
    m.data_tag = 4242;
    m.build = [n](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, n | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {n}, 4242);
    };
    const outcome o = exchange(m, nothing);
    CHECK(counted_bytes(o) == n);
  }
  SECTION("an inline argument too large for a posted receive: sent in an envelope") {
    const std::uint64_t n = 20000; // inline: under the out-of-line threshold, over 4 KiB
    raw m;
    m.reply = true;
    m.build = [n](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, n);
      payload.resize(payload.size() + n, 'i');
      return request(id, id_of("count_bytes"), payload);
    };
    const outcome o = exchange(m, nothing);
    CHECK(counted_bytes(o) == n);
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
  }
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}

/// An envelope stub (docs/wire.md, "Envelopes") announcing a `size`-byte message on `data_tag`.
std::vector<char> envelope(std::uint32_t data_tag, std::uint64_t size) {
  std::vector<char> payload;
  append(payload, size);
  return seam::make_message(seam::make_header(wire::kind::envelope, 0, 0, sizeof size, 0, data_tag),
                            payload);
}

TEST_CASE("envelopes that cannot be opened are dropped, counted and logged, never answered",
          "[wire]") {
  mpirpc::runtime rt;
  raw m;
  std::string problem;
  SECTION("its message never comes: given up after the patience") {
    seam::set_patience(300ms);
    m.build = [](std::uint64_t) { return envelope(41, 10000); };
    problem = "an envelope (data tag 41) of a 10000-byte message whose message did not arrive "
              "within 300 ms";
  }
  SECTION("its message has another size: received and discarded") {
    m.data = {std::vector<char>(9000, 'e')};
    m.data_tag = 42;
    m.build = [](std::uint64_t) { return envelope(42, 10000); };
    problem = "an envelope (data tag 42) of a 10000-byte message that carried 9000 bytes";
  }
  SECTION("it announces a message small enough to need none") {
    m.build = [](std::uint64_t) { return envelope(43, 100); };
    problem = "an envelope (data tag 43) of a 100-byte message: invalid";
  }
  SECTION("on the reply tag, without a data tag") {
    m.tag = wire::tag_reply;
    m.build = [](std::uint64_t) { return envelope(0, 10000); };
    problem = "an envelope (data tag 0) of a 10000-byte message: invalid";
  }
  const outcome o = exchange(m, malformed_once);
  seam::set_patience(10s);
  CHECK(o.send_error == nullptr);
  CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
  CHECK_THAT(o.log, Contains(dropped_line(m.tag, problem)));
  CHECK(o.after.late_replies_dropped == o.before.late_replies_dropped); // no error reply
  CHECK(counters_balance());
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}

TEST_CASE("malformed control messages: refused, counted, logged, answered where possible",
          "[wire]") {
  mpirpc::runtime rt;

  SECTION("too short for a header: no reply (nothing to reply to)") {
    raw m;
    m.build = [](std::uint64_t) { return std::vector<char>(10, 'z'); };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_request,
                                            "message of 10 bytes is shorter than the 40-byte "
                                            "header")));
  }
  SECTION("wrong magic: no reply (the header cannot be trusted)") {
    raw m;
    m.build = [](std::uint64_t id) {
      wire::header h = seam::make_header(wire::kind::request, id, id_of("add"), 8);
      h.magic = 0x4d505243; // the other byte order
      return seam::make_message(h, add_args(1, 2));
    };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_request, "bad magic number")));
  }
  SECTION("wrong version: code 5") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      wire::header h = seam::make_header(wire::kind::request, id, id_of("add"), 8);
      h.version = 9;
      return seam::make_message(h, add_args(1, 2));
    };
    const outcome o = exchange(m, malformed_once);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: wire version 9, expected 1");
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_request, "wire version 9, expected 1")));
  }
  SECTION("unknown kind on the request tag: code 5") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      wire::header h = seam::make_header(wire::kind::request, id, id_of("add"), 8);
      h.kind = 7;
      return seam::make_message(h, add_args(1, 2));
    };
    const outcome o = exchange(m, malformed_once);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: request tag with a non-request kind 7");
    CHECK_THAT(o.log,
               Contains(dropped_line(wire::tag_request, "request tag with a non-request kind 7")));
  }
  SECTION("unknown kind on the reply tag: no reply") {
    raw m;
    m.tag = wire::tag_reply;
    m.build = [](std::uint64_t id) {
      wire::header h = seam::make_header(wire::kind::reply_value, id, id_of("add"), 4);
      h.kind = 7;
      return seam::make_message(h, std::vector<char>(4));
    };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK(o.after.late_replies_dropped == o.before.late_replies_dropped);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_reply, "reply tag with a non-reply kind 7")));
  }
  SECTION("a request on the reply tag: no reply") {
    raw m;
    m.tag = wire::tag_reply;
    m.build = [](std::uint64_t id) { return request(id, id_of("add"), add_args(1, 2)); };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK(o.after.requests_served == o.before.requests_served);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_reply, "reply tag with a non-reply kind 1")));
  }
  SECTION("a reply on the request tag: code 5") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      return seam::make_message(seam::make_header(wire::kind::reply_value, id, id_of("add"), 4),
                                std::vector<char>(4));
    };
    const outcome o = exchange(m, malformed_once);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: request tag with a non-request kind 2");
    CHECK_THAT(o.log,
               Contains(dropped_line(wire::tag_request, "request tag with a non-request kind 2")));
  }
  SECTION("an unknown tag: no reply") {
    raw m;
    m.tag = 9;
    m.build = [](std::uint64_t id) { return request(id, id_of("add"), add_args(1, 2)); };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains(dropped_line(9, "unknown tag 9")));
  }
  SECTION("unknown flags: code 5") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      wire::header h = seam::make_header(wire::kind::request, id, id_of("add"), 8);
      h.flags = 0x40;
      return seam::make_message(h, add_args(1, 2));
    };
    const outcome o = exchange(m, malformed_once);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: unknown flags 64");
  }
  SECTION("a payload_size that disagrees with the byte count: code 5") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      return seam::make_message(seam::make_header(wire::kind::request, id, id_of("add"), 100),
                                add_args(1, 2));
    };
    const outcome o = exchange(m, malformed_once);
    const std::string problem = "payload size 100 and 0 segments do not add up to the 48-byte "
                                "message";
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: " + problem);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_request, problem)));
  }
  SECTION("a segment_count over the limit: code 5, nothing waited for") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      return seam::make_message(
          seam::make_header(wire::kind::request, id, id_of("add"), 8, 5000, 77), add_args(1, 2));
    };
    const outcome o = exchange(m, malformed_once);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: 5000 segments exceed the limit of 4096");
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_request,
                                            "5000 segments exceed the limit of 4096; the "
                                            "out-of-line buffers it announces were not received "
                                            "(no usable segment table or data tag)")));
  }
  SECTION("segments without a data tag: code 5") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(40000) | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {40000}, 0);
    };
    const outcome o = exchange(m, malformed_once);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: segments without a data tag");
  }
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}

TEST_CASE("well-formed headers with bad contents: unknown ids and bad arguments", "[wire]") {
  mpirpc::runtime rt;
  SECTION("an unknown function id: code 2, not malformed") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) { return request(id, 0x0123456789abcdefull, add_args(1, 2)); };
    const outcome o = exchange(m, nothing);
    check_error_reply(o, wire::error_code::unknown_function, "mpirpc::unknown_function_error",
                      "no such function");
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
    CHECK_THAT(o.log, !Contains("malformed"));
  }
  SECTION("truncated arguments: code 3 naming the function") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) { return request(id, id_of("add"), {1, 2, 3}); };
    const outcome o = exchange(m, nothing);
    check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                      "the arguments of 'add' could not be deserialized on " + worker(next()));
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
  }
  SECTION("trailing garbage after the arguments: code 3") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload = add_args(1, 2);
      payload.push_back('!');
      return request(id, id_of("add"), payload);
    };
    const outcome o = exchange(m, nothing);
    check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                      "the arguments of 'add' could not be deserialized on " + worker(next()));
  }
  SECTION("a forged element count: code 3, nothing reserved") {
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(1) << 62); // an inline buffer of 2^62 bytes
      return request(id, id_of("count_bytes"), payload);
    };
    const outcome o = exchange(m, nothing);
    check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                      "the arguments of 'count_bytes' could not be deserialized on " +
                          worker(next()));
  }
  SECTION("a reply to a call id nobody issued: dropped as late, not logged") {
    raw m;
    m.tag = wire::tag_reply;
    m.build = [](std::uint64_t id) {
      return seam::make_message(seam::make_header(wire::kind::reply_value, id, id_of("add"), 4),
                                std::vector<char>(4));
    };
    const outcome o = exchange(m, [](const auto& before, const auto& now) {
      return now.late_replies_dropped == before.late_replies_dropped + 1;
    });
    CHECK(o.after.late_replies_dropped == o.before.late_replies_dropped + 1);
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
    CHECK(o.after.replies_received == o.before.replies_received);
    CHECK_THAT(o.log, !Contains("mpirpc["));
  }
  SECTION("a stale reply (a finished call's id) with out-of-line data: dropped, data drained") {
    // Each section runs in a session of its own: after this call (and the barrier), every
    // rank's slot 0 at generation 1 names a finished call.
    CHECK(mpirpc::rpc_sync(worker(prev()), add, 0, 0) == 0);
    mpirpc_test::barrier();
    raw m;
    m.tag = wire::tag_reply;
    m.data = {std::vector<char>(70000, 'r')};
    m.data_tag = 99;
    m.build = [](std::uint64_t) {
      std::vector<char> payload;
      append(payload, std::uint64_t(70000) | out_of_line_bit);
      const wire::header h = seam::make_header(wire::kind::reply_value, std::uint64_t(1) << 32,
                                               id_of("count_bytes"), payload.size(), 1, 99);
      return seam::make_message(h, payload, {70000});
    };
    const outcome o = exchange(m, [](const auto& before, const auto& now) {
      return now.late_replies_dropped == before.late_replies_dropped + 1;
    });
    CHECK(o.send_error == nullptr); // its 70000 bytes were received (and discarded)
    CHECK(o.after.late_replies_dropped == o.before.late_replies_dropped + 1);
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
  }
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}

TEST_CASE("out-of-line data of refused and malformed messages is drained", "[wire]") {
  mpirpc::runtime rt;
  SECTION("a malformed request with a readable table: buffers discarded, sender released") {
    // payload_size is wrong; the table (the message's last 24 bytes) still says what follows.
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(200000, 'a'), std::vector<char>(), std::vector<char>(5, 'c')};
    m.data_tag = 31;
    m.build = [](std::uint64_t id) {
      const wire::header h =
          seam::make_header(wire::kind::request, id, id_of("count_bytes"), 999, 3, 31);
      return seam::make_message(h, std::vector<char>(8), {200000, 0, 5});
    };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.send_error == nullptr);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: payload size 999 and 3 segments");
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_request, "payload size 999")));
    CHECK_THAT(o.log, Contains("; its 3 out-of-line buffer(s) were received and discarded"));
  }
  SECTION("a malformed reply with a readable table: buffers discarded, no reply") {
    raw m;
    m.tag = wire::tag_reply;
    m.data = {std::vector<char>(150000, 'b')};
    m.data_tag = 32;
    m.build = [](std::uint64_t id) {
      wire::header h =
          seam::make_header(wire::kind::reply_value, id, id_of("count_bytes"), 8, 1, 32);
      h.flags = 1; // flags on a reply
      std::vector<char> payload;
      append(payload, std::uint64_t(150000) | out_of_line_bit);
      return seam::make_message(h, payload, {150000});
    };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.send_error == nullptr);
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains(dropped_line(wire::tag_reply, "flags on a reply; its 1 "
                                                             "out-of-line buffer(s) were "
                                                             "received and discarded")));
  }
  SECTION("an unknown function with out-of-line data: code 2, data drained") {
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(300000, 'u')};
    m.data_tag = 33;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(300000) | out_of_line_bit);
      return request(id, 0x0badf00dull, payload, {300000}, 33);
    };
    const outcome o = exchange(m, nothing);
    CHECK(o.send_error == nullptr);
    check_error_reply(o, wire::error_code::unknown_function, "mpirpc::unknown_function_error",
                      "no such function");
  }
  SECTION("a table entry that disagrees with the payload's length word: code 3, drained") {
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(50000, 'd')};
    m.data_tag = 34;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(40000) | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {50000}, 34);
    };
    const outcome o = exchange(m, nothing);
    CHECK(o.send_error == nullptr);
    check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                      "out-of-line buffer of 40000 bytes announced, but the next one carries "
                      "50000");
    CHECK(o.after.malformed_messages == o.before.malformed_messages);
  }
  SECTION("data larger than its table entry: code 3, counted, logged, no crash") {
    // A receive sized by the table would be too small: Open MPI's shared-memory transport
    // crashes on such a truncation. The chunk is matched first and refused.
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(100000, 'L')};
    m.data_tag = 35;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(65536) | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {65536}, 35);
    };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.send_error == nullptr);
    const std::string what = "a chunk of 100000 bytes arrived from rank " + std::to_string(prev()) +
                             " for out-of-line buffer 1 of 1, whose table entry (65536 bytes) "
                             "implies 65536";
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains("malformed message: " + what));
    REQUIRE(o.reply.has_value());
    CHECK_THAT(seam::decode_error(*o.reply).message,
               Contains("a chunk of 100000 bytes arrived from rank " +
                        std::to_string(mpirpc_test::world_rank())));
    CHECK(static_cast<int>(seam::decode_error(*o.reply).code) ==
          static_cast<int>(wire::error_code::serialization));
  }
  SECTION("data smaller than its table entry: code 3, counted, nothing more waited for") {
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(40000, 's')};
    m.data_tag = 36;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(65536) | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {65536}, 36);
    };
    const outcome o = exchange(m, malformed_once);
    CHECK(o.send_error == nullptr);
    check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                      "a chunk of 40000 bytes arrived from rank");
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
  }
  SECTION("announced data that never comes: given up after the patience, counted once") {
    seam::set_patience(300ms);
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(65536) | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {65536, 1 << 20}, 37);
    };
    const outcome o = exchange(m, malformed_once);
    seam::set_patience(10s);
    check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                      "out-of-line buffer 1 of 2 (65536 bytes) from rank " +
                          std::to_string(mpirpc_test::world_rank()) +
                          " did not arrive within 300 ms");
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains("malformed message: out-of-line buffer 1 of 2 (65536 bytes) from "
                               "rank " +
                               std::to_string(prev()) + " did not arrive within 300 ms"));
  }
  SECTION("a malformed message whose announced data never comes: one patience, counted once") {
    seam::set_patience(300ms);
    raw m;
    m.reply = true;
    m.build = [](std::uint64_t id) {
      const wire::header h =
          seam::make_header(wire::kind::request, id, id_of("count_bytes"), 1, 2, 38);
      return seam::make_message(h, std::vector<char>(8), {1000, 1000});
    };
    const outcome o = exchange(m, malformed_once);
    seam::set_patience(10s);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: payload size 1 and 2 segments");
    CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
    CHECK_THAT(o.log, Contains("gave up receiving the out-of-line buffers of a message from "
                               "rank " +
                               std::to_string(prev()) + " (data tag 38): 2 of 2 left"));
    CHECK_THAT(o.log, Contains("; its out-of-line buffers were not all received"));
  }
  // Out-of-line transfers still work after all that draining.
  const std::vector<char> big(1 << 20, 'k');
  CHECK(mpirpc::rpc_sync(worker(next()), count_bytes, big) == big.size());
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}

TEST_CASE("requests that must queue have their out-of-line data taken (and checked) at once",
          "[wire]") {
  mpirpc::options opts;
  opts.num_worker_threads = 1;
  mpirpc::runtime rt(opts);
  // The neighbour's only handler slot is taken for a while: what follows queues there.
  auto busy = mpirpc::rpc_async(worker(next()), sleepy, 600);
  std::this_thread::sleep_for(100ms);
  const std::vector<char> good(100000, 'q');
  auto queued = mpirpc::rpc_async(worker(next()), count_bytes, good);
  raw m;
  m.reply = true;
  m.data = {std::vector<char>(100000, 'L')};
  m.data_tag = 40;
  m.build = [](std::uint64_t id) {
    std::vector<char> payload;
    append(payload, std::uint64_t(65536) | out_of_line_bit);
    return request(id, id_of("count_bytes"), payload, {65536}, 40);
  };
  const outcome o = exchange(m, malformed_once);
  CHECK(o.send_error == nullptr);
  // Refused when it was queued ("received") or, had a slot been free, when decoded.
  check_error_reply(o, wire::error_code::serialization, "mpirpc::serialization_error",
                    "the arguments of 'count_bytes' could not be");
  CHECK_THAT(seam::decode_error(*o.reply).message, Contains("a chunk of 100000 bytes arrived"));
  CHECK(o.after.malformed_messages == o.before.malformed_messages + 1);
  CHECK(queued.wait() == good.size());
  CHECK(busy.wait() == 600);
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}

TEST_CASE("sends that fail part-way keep the quiescence counters balanced", "[wire]") {
  mpirpc::runtime rt;
  SECTION("the control message fails: counted as sent and received by the sender") {
    const auto before = seam::message_counts();
    bool threw = false;
    try {
      seam::send_raw(next(), -3, request(fresh_call_id(), id_of("add"), add_args(1, 2)));
    } catch (const mpirpc::mpi_error&) {
      threw = true;
    }
    CHECK(threw);
    const auto after = seam::message_counts();
    CHECK(after.first == before.first + 1);
    CHECK(after.second == before.second + 1);
  }
  SECTION("a data message fails after the control message left: the receiver counts it") {
    // A negative data tag makes the data send fail after the control message was posted. The
    // receiver gets the control message (its data tag is out of range: code 5) and counts it;
    // the sender must then not count it as received too, or shutdown would never see the sums
    // agree.
    raw m;
    m.reply = true;
    m.data = {std::vector<char>(1000, 'f')};
    m.data_tag = -5;
    m.build = [](std::uint64_t id) {
      std::vector<char> payload;
      append(payload, std::uint64_t(1000) | out_of_line_bit);
      return request(id, id_of("count_bytes"), payload, {1000}, static_cast<std::uint32_t>(-5));
    };
    const auto before = seam::message_counts();
    const outcome o = exchange(m, malformed_once);
    REQUIRE(o.send_error != nullptr);
    CHECK_THROWS_AS(std::rethrow_exception(o.send_error), mpirpc::mpi_error);
    check_error_reply(o, wire::error_code::malformed, "mpirpc::serialization_error",
                      "malformed request: data tag 4294967291 above the limit of");
    // Sent: the raw message and the error reply to the left neighbour's. Received: that
    // neighbour's raw message and the reply to ours (counted just after it was captured).
    CHECK(eventually([&] { return seam::message_counts().second == before.second + 2; }, 5s));
    const auto after = seam::message_counts();
    CHECK(after.first == before.first + 2);
    CHECK(after.second == before.second + 2);
  }
  CHECK(counters_balance());
  check_still_serving();
  REQUIRE_NOTHROW(rt.shutdown(true, 60s));
}
