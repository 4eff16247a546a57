// SPDX-License-Identifier: MIT
// lib/core/outbox_set: the batching rules, over a link that records what it is given (no MPI
// traffic, no engine).
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <mpirpc/errors.hpp>
#include <mpirpc/rpc.hpp>

#include "core/outbox_set.hpp"
#include "net/wire.hpp"

namespace {

namespace detail = mpirpc::detail;
namespace wire = mpirpc::detail::wire;
using clock = std::chrono::steady_clock;

struct sent_message {
  int dest;
  int tag;
  std::vector<char> bytes;
};

/// Records every control message; throws while `failing`.
struct recording_link final : detail::control_link {
  std::vector<sent_message> sent;
  bool failing = false;
  void send_control(int dest, int tag, const char* data, std::size_t size) override {
    if (failing) throw mpirpc::mpi_error("MPI_Send", 17, "the link is down");
    sent.push_back({dest, tag, std::vector<char>(data, data + size)});
  }
};

/// A request of `payload` bytes whose call id is `id` (its payload bytes all `fill`).
std::vector<char> request(std::uint64_t id, std::size_t payload = 8, char fill = 'x',
                          bool one_way = false) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(wire::kind::request);
  h.flags = one_way ? wire::request_one_way : 0;
  h.call_id = id;
  h.function_id = 0x1234;
  h.payload_size = payload;
  std::vector<char> out(sizeof h + payload, fill);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

std::vector<char> reply(std::uint64_t id) {
  std::vector<char> out = request(id, 4, 'r');
  wire::header h;
  std::memcpy(&h, out.data(), sizeof h);
  h.kind = static_cast<std::uint8_t>(wire::kind::reply_value);
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

/// The messages of a received control message: itself, or those of the batch it is, each
/// checked as the receiver checks them.
std::vector<std::vector<char>> unpack(const sent_message& m) {
  wire::header h;
  REQUIRE(wire::validate(m.bytes.data(), m.bytes.size(), m.tag, h) == "");
  if (h.kind != static_cast<std::uint8_t>(wire::kind::batch)) return {m.bytes};
  std::vector<std::vector<char>> out;
  const char* p = m.bytes.data() + sizeof h;
  const char* const end = p + h.payload_size;
  while (p < end) {
    wire::header sub;
    std::size_t size = 0;
    REQUIRE(wire::validate_batched(p, static_cast<std::size_t>(end - p), m.tag, sub, size) == "");
    out.emplace_back(p, p + size);
    p += size;
  }
  CHECK(out.size() == h.call_id); // a batch's header counts its messages
  return out;
}

std::uint64_t call_id_of(const std::vector<char>& message) {
  wire::header h;
  std::memcpy(&h, message.data(), sizeof h);
  return h.call_id;
}

struct failing_sink final : detail::reply_sink {
  std::exception_ptr error;
  void on_reply(detail::reader&) override {}
  void on_error(std::exception_ptr e) noexcept override { error = e; }
};

struct fixture {
  recording_link link;
  detail::pending_calls pending{3};
  detail::session session{{{"worker0", 0}, {"worker1", 1}, {"worker2", 2}}, 0};
  detail::statistics counters;
  detail::outbox_set boxes{3, link, pending, session, counters};
};

} // namespace

TEST_CASE("a lone message that may not be batched leaves at once, as itself", "[outbox_set]") {
  fixture f;
  const auto m = request(7);
  CHECK_FALSE(f.boxes.put(1, m, 7, false));
  REQUIRE(f.link.sent.size() == 1);
  CHECK(f.link.sent[0].dest == 1);
  CHECK(f.link.sent[0].tag == wire::tag_request);
  CHECK(f.link.sent[0].bytes == m);
  CHECK_FALSE(f.boxes.any());
  CHECK(f.counters.batches_sent == 0);
}

TEST_CASE("batched messages leave together, in order, when flushed", "[outbox_set]") {
  fixture f;
  CHECK(f.boxes.put(2, request(1), 1, true)); // starts a batch
  CHECK_FALSE(f.boxes.put(2, request(2), 2, true));
  CHECK(f.boxes.put(1, request(3), 3, true)); // another destination, another batch
  CHECK(f.link.sent.empty());
  CHECK(f.boxes.any());
  CHECK(f.boxes.queued(2) == 2);

  f.boxes.flush(2);
  REQUIRE(f.link.sent.size() == 1);
  CHECK(f.link.sent[0].dest == 2);
  const auto messages = unpack(f.link.sent[0]);
  REQUIRE(messages.size() == 2);
  CHECK(messages[0] == request(1));
  CHECK(messages[1] == request(2));
  CHECK(f.counters.batches_sent == 1);
  CHECK(f.counters.messages_batched == 2);
  CHECK(f.boxes.queued(2) == 0);
  CHECK(f.boxes.any()); // the batch to worker1 is still being built

  f.boxes.flush_all();
  REQUIRE(f.link.sent.size() == 2);
  CHECK(f.link.sent[1].bytes == request(3)); // a batch of one is just the message
  CHECK(f.counters.batches_sent == 1);
  CHECK_FALSE(f.boxes.any());
}

TEST_CASE("while a batch is being built, every message joins it, in order", "[outbox_set]") {
  fixture f;
  f.boxes.put(1, request(1), 1, true);
  f.boxes.put(1, request(2), 2, true);
  f.boxes.put(1, request(3), 3, false); // may not start a batch, but one is open: it follows
  CHECK(f.link.sent.empty());
  CHECK(f.boxes.queued(1) == 3);
  f.boxes.flush(1);
  REQUIRE(f.link.sent.size() == 1);
  const auto messages = unpack(f.link.sent[0]);
  REQUIRE(messages.size() == 3);
  for (std::uint64_t i = 0; i < 3; ++i)
    CHECK(call_id_of(messages[i]) == i + 1);
  CHECK_FALSE(f.boxes.any());
}

TEST_CASE("batches never exceed the batch limit and keep every message in order", "[outbox_set]") {
  fixture f;
  constexpr int n = 200;
  for (int i = 1; i <= n; ++i)
    f.boxes.put(1, request(static_cast<std::uint64_t>(i), 60), static_cast<std::uint64_t>(i), true);
  f.boxes.flush_all();
  std::uint64_t next = 1;
  for (const auto& m : f.link.sent) {
    CHECK(m.bytes.size() <= wire::max_batch_bytes);
    for (const auto& one : unpack(m))
      CHECK(call_id_of(one) == next++);
  }
  CHECK(next == n + 1);
  CHECK(f.link.sent.size() > 1); // it filled several batches
  CHECK(f.link.sent.front().bytes.size() + 100 > wire::max_batch_bytes); // ... each nearly full
}

TEST_CASE("a message too large for a batch goes alone, after the batch", "[outbox_set]") {
  fixture f;
  f.boxes.put(1, request(1), 1, true);
  const auto big = request(2, wire::max_batch_bytes);
  CHECK_FALSE(f.boxes.put(1, big, 2, true));
  REQUIRE(f.link.sent.size() == 2);
  CHECK(f.link.sent[0].bytes == request(1));
  CHECK(f.link.sent[1].bytes == big);
}

TEST_CASE("flush_aged sends only batches at least batch_delay old", "[outbox_set]") {
  fixture f;
  const auto before = clock::now();
  f.boxes.put(1, request(1), 1, true);
  f.boxes.put_reply(2, reply(5));
  f.boxes.flush_aged(before); // younger than the delay
  CHECK(f.link.sent.empty());
  f.boxes.flush_aged(clock::now() + detail::batch_delay);
  REQUIRE(f.link.sent.size() == 2);
  CHECK(f.link.sent[0].tag == wire::tag_reply); // replies first
  CHECK(f.link.sent[1].tag == wire::tag_request);
  CHECK_FALSE(f.boxes.any());
}

TEST_CASE("replies are batched per destination and leave on the reply tag", "[outbox_set]") {
  fixture f;
  CHECK(f.boxes.put_reply(1, reply(1)));
  CHECK(f.boxes.put_reply(1, reply(2)));
  CHECK_FALSE(f.boxes.put_reply(1, request(3, wire::max_batch_bytes))); // too large
  CHECK(f.link.sent.empty());
  f.boxes.flush_replies(1);
  REQUIRE(f.link.sent.size() == 1);
  CHECK(f.link.sent[0].tag == wire::tag_reply);
  const auto replies = unpack(f.link.sent[0]);
  REQUIRE(replies.size() == 2);
  CHECK(call_id_of(replies[1]) == 2);
  f.boxes.flush_replies(-1); // nothing, and no crash
  CHECK(f.link.sent.size() == 1);
}

TEST_CASE("a batch that cannot be sent fails its calls; a message behind it is not sent",
          "[outbox_set]") {
  fixture f;
  REQUIRE(f.pending.try_reserve(1, 0));
  auto sink = std::make_shared<failing_sink>();
  detail::pending_call call;
  call.sink = sink;
  call.dest = 1;
  call.deadline = clock::time_point::max();
  const std::uint64_t id = f.pending.insert(std::move(call));
  f.boxes.put(1, request(id), id, true);
  f.boxes.put(1, request(0, 8, 'x', true), 0, true); // a one-way call: logged when lost
  f.link.failing = true;
  // Too large for a batch: the batch leaves first, fails, and this message is not sent.
  CHECK_THROWS_AS(f.boxes.put(1, request(99, wire::max_batch_bytes), 99, false), mpirpc::mpi_error);
  CHECK(f.link.sent.empty());
  REQUIRE(sink->error);
  CHECK_THROWS_AS(std::rethrow_exception(sink->error), mpirpc::mpi_error);
  CHECK(f.pending.size() == 0);        // the failed call was taken out of the table
  CHECK(f.counters.batches_sent == 0); // a batch that did not leave is not counted
  CHECK(f.counters.messages_batched == 0);
  CHECK_FALSE(f.boxes.any());
}

TEST_CASE("drop forgets every batch unsent", "[outbox_set]") {
  fixture f;
  f.boxes.put(1, request(0, 8, 'x', true), 0, true);
  f.boxes.put_reply(2, reply(4));
  f.boxes.drop();
  CHECK_FALSE(f.boxes.any());
  f.boxes.flush_all();
  CHECK(f.link.sent.empty());
}
