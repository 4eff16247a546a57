// SPDX-License-Identifier: MIT
// lib/net/segment_stream: reading a message's out-of-line buffers against its segment table, in
// one process. The link is a transport over MPI_COMM_SELF (the singleton the unit tests run):
// messages sent to this rank with transport::send_raw, which sends the data as given, so that
// a test can forge a table that disagrees with what was sent.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <mpirpc/errors.hpp>

#include "net/segment_stream.hpp"
#include "net/transport.hpp"
#include "net/wire.hpp"

namespace {

namespace detail = mpirpc::detail;
namespace wire = mpirpc::detail::wire;
using namespace std::chrono_literals;

/// Records what the stream reports.
struct recording_report final : detail::drop_report {
  mutable std::vector<std::string> lines;
  int malformed = 0;
  void log(const std::string& line) const noexcept override { lines.push_back(line); }
  void count_malformed() noexcept override { ++malformed; }
};

/// A transport to this process itself, and the data tags it gives out.
struct self_link {
  detail::transport t{MPI_COMM_SELF, 0us};
  self_link() { t.set_patience(200ms); }

  /// Sends a request whose table lists `table` and whose data messages are `chunks` (each one
  /// MPI message on `data_tag`), then receives its control message into `out`.
  void send(const std::vector<std::uint64_t>& table, const std::vector<std::vector<char>>& chunks,
            std::uint32_t data_tag, detail::incoming& out, wire::header& h) {
    h = wire::header{};
    h.magic = wire::magic;
    h.version = wire::version;
    h.kind = static_cast<std::uint8_t>(wire::kind::request);
    h.call_id = 1;
    h.segment_count = static_cast<std::uint32_t>(table.size());
    h.data_tag = data_tag;
    std::vector<char> control(sizeof h + table.size() * sizeof(std::uint64_t));
    std::memcpy(control.data(), &h, sizeof h);
    if (!table.empty()) {
      std::memcpy(control.data() + sizeof h, table.data(), table.size() * sizeof(std::uint64_t));
    }
    std::vector<mpirpc::detail::segment> parts;
    for (const auto& c : chunks)
      parts.push_back({c.data(), c.size()});
    t.send_raw(0, wire::tag_request, control.data(), control.size(), parts,
               static_cast<int>(data_tag), nullptr);
    REQUIRE(t.try_receive(wire::tag_request, out));
    REQUIRE(out.source == 0);
    REQUIRE(wire::validate(out.bytes.data(), out.bytes.size(), out.tag, h) == "");
  }

  /// Whether a data message with `data_tag` is still waiting (it would be a leak).
  bool leftover(std::uint32_t data_tag) {
    t.set_patience(20ms);
    MPI_Message m;
    std::size_t bytes = 0;
    const bool found = t.match_data(0, data_tag, m, bytes);
    if (found) {
      std::vector<char> scratch;
      t.discard_matched(m, bytes, scratch);
    }
    t.set_patience(200ms);
    return found;
  }
};

std::vector<char> bytes(std::size_t n, char fill) {
  return std::vector<char>(n, fill);
}

} // namespace

TEST_CASE("buffers arrive in order, each checked against the table", "[segment_stream]") {
  self_link l;
  detail::incoming message;
  wire::header h;
  l.send({100, 0, 3}, {bytes(100, 'a'), {}, bytes(3, 'c')}, 11, message, h);
  recording_report report;
  detail::segment_stream s(l.t, message, h, &report);
  REQUIRE(s.next_segment_size() == 100);
  std::vector<char> a(100);
  s.receive_segment(a.data(), a.size());
  CHECK(a == bytes(100, 'a'));
  REQUIRE(s.next_segment_size() == 0);
  s.receive_segment(nullptr, 0);
  REQUIRE(s.next_segment_size() == 3);
  std::vector<char> c(3);
  s.receive_segment(c.data(), c.size());
  CHECK(c == bytes(3, 'c'));
  CHECK_THROWS_AS(s.next_segment_size(), mpirpc::serialization_error); // no fourth buffer
  CHECK(s.drain());
  CHECK(report.malformed == 0);
  CHECK(report.lines.empty());
  CHECK_FALSE(l.leftover(11));
}

TEST_CASE("a size the decoder did not expect is refused before anything is received",
          "[segment_stream]") {
  self_link l;
  detail::incoming message;
  wire::header h;
  l.send({10}, {bytes(10, 'x')}, 12, message, h);
  recording_report report;
  {
    detail::segment_stream s(l.t, message, h, &report);
    std::vector<char> dst(20);
    CHECK_THROWS_WITH(s.receive_segment(dst.data(), 20),
                      Catch::Contains("out-of-line buffer of 20 bytes announced, table says 10"));
  }                             // the destructor drains the buffer not taken
  CHECK(report.malformed == 0); // the decoder's error, not a malformed message
  CHECK_FALSE(l.leftover(12));
}

TEST_CASE("a forged table: a chunk of another size is a malformed message, counted once",
          "[segment_stream]") {
  self_link l;
  detail::incoming message;
  wire::header h;
  // The table says 200 bytes, but 100 were sent; then a second buffer that is right.
  l.send({200, 4}, {bytes(100, 'x'), bytes(4, 'y')}, 13, message, h);
  recording_report report;
  detail::segment_stream s(l.t, message, h, &report);
  std::vector<char> dst(200);
  CHECK_THROWS_WITH(s.receive_segment(dst.data(), 200),
                    Catch::Contains("a chunk of 100 bytes arrived from rank 0 for out-of-line "
                                    "buffer 1 of 2, whose table entry (200 bytes) implies 200"));
  CHECK(report.malformed == 1);
  CHECK(s.drain()); // the rest is received and discarded
  CHECK(report.malformed == 1);
  CHECK_FALSE(l.leftover(13));
}

TEST_CASE("a buffer that never comes: given up after the patience, counted once",
          "[segment_stream]") {
  self_link l;
  l.t.set_patience(50ms);
  detail::incoming message;
  wire::header h;
  l.send({64, 64}, {}, 14, message, h); // announced, never sent
  recording_report report;
  detail::segment_stream s(l.t, message, h, &report);
  CHECK_THROWS_WITH(s.next_segment_size(),
                    Catch::Contains("out-of-line buffer 1 of 2 (64 bytes) from rank 0 did not "
                                    "arrive within 50 ms"));
  CHECK(report.malformed == 1);
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(s.drain()); // gave up: no second wait for the patience
  CHECK(std::chrono::steady_clock::now() - start < 40ms);
  CHECK_THROWS_AS(s.next_segment_size(), mpirpc::serialization_error);
  CHECK(report.malformed == 1);
  CHECK(report.lines.size() == 1);
}

TEST_CASE("drain discards buffers nobody took, and reports a missing one", "[segment_stream]") {
  self_link l;
  l.t.set_patience(50ms);
  detail::incoming message;
  wire::header h;
  l.send({5, 6, 7}, {bytes(5, 'a'), bytes(6, 'b')}, 15, message, h); // the third never comes
  recording_report report;
  detail::segment_stream s(l.t, message, h, &report);
  CHECK_FALSE(s.drain());
  CHECK(report.malformed == 1);
  REQUIRE(report.lines.size() == 1);
  CHECK_THAT(report.lines[0], Catch::Contains("1 of 3 left were not received within 50 ms"));
  CHECK_FALSE(l.leftover(15));
}

TEST_CASE("prefetched buffers are read from memory", "[segment_stream]") {
  self_link l;
  detail::incoming message;
  wire::header h;
  l.send({3, 2}, {bytes(3, 'p'), bytes(2, 'q')}, 16, message, h);
  {
    detail::segment_stream s(l.t, message, h, nullptr);
    s.prefetch(message.prefetched); // the sender is released now
  }
  REQUIRE(message.prefetched.size() == 2);
  CHECK_FALSE(l.leftover(16));
  detail::segment_stream s(l.t, message, h, nullptr);
  REQUIRE(s.next_segment_size() == 3);
  std::vector<char> p(3);
  s.receive_segment(p.data(), 3);
  CHECK(p == bytes(3, 'p'));
  std::vector<char> q(2);
  s.receive_segment(q.data(), 2);
  CHECK(q == bytes(2, 'q'));
  CHECK(s.drain());
}
