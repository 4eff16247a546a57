// SPDX-License-Identifier: MIT
// lib/core/in_order: routing by source, a run in arrival order, the hand-off of the rest to a
// server thread, batches run request by request, replies batched while a batch runs. In one
// process: the receiver's part is played by hooks that record what runs; the server is real
// (its queue is run by hand), and so are the sender and outboxes, over a transport to this
// process itself (MPI_COMM_SELF) that nothing is sent through unless a test says so.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/in_order.hpp"

namespace {

namespace detail = mpirpc::detail;
namespace wire = mpirpc::detail::wire;
using namespace std::chrono_literals;

/// A request (one-way if `one_way`) from `source` whose call id is `id`.
detail::incoming request(int source, std::uint64_t id, bool one_way) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(wire::kind::request);
  h.flags = one_way ? wire::request_one_way : 0;
  h.call_id = one_way ? 0 : id;
  h.function_id = id; // the test's name for the request, one-way or not
  detail::incoming m;
  m.source = source;
  m.tag = wire::tag_request;
  m.bytes.resize(sizeof h);
  std::memcpy(m.bytes.data(), &h, sizeof h);
  return m;
}

/// A batch of requests from `source` named `ids`.
detail::incoming batch(int source, const std::vector<std::uint64_t>& ids) {
  detail::incoming m;
  m.source = source;
  m.tag = wire::tag_request;
  m.bytes.resize(sizeof(wire::header));
  for (std::uint64_t id : ids) {
    const detail::incoming one = request(source, id, false);
    m.bytes.insert(m.bytes.end(), one.bytes.begin(), one.bytes.end());
  }
  detail::seal_batch(m.bytes, static_cast<std::uint32_t>(ids.size()));
  return m;
}

std::uint64_t name_of(const detail::incoming& m) {
  wire::header h;
  std::memcpy(&h, m.bytes.data(), sizeof h);
  return h.function_id;
}

struct null_link final : detail::control_link {
  std::vector<int> tags; ///< of what was sent
  void send_control(int, int tag, const char*, std::size_t) override { tags.push_back(tag); }
};

struct quiet_sender_hooks final : detail::sender_hooks {
  detail::in_order_runs* runs = nullptr;
  bool batches_replies_to(int dest) const noexcept override {
    return runs && runs->batches_replies_to(dest);
  }
  void batch_started() noexcept override {}
  void call_sent() noexcept override {}
};

/// Plays the receiver: records the requests run, in order; `during(name)` runs inside a
/// request's handler.
struct recording_receiver final : detail::in_order_hooks, detail::server_hooks {
  detail::in_order_runs* runs = nullptr;
  detail::server* srv = nullptr;
  std::vector<std::uint64_t> ran;
  std::function<void(std::uint64_t)> during = [](std::uint64_t) {};
  void dispatch(detail::incoming& m) noexcept override {
    wire::header h;
    std::memcpy(&h, m.bytes.data(), sizeof h);
    if (h.kind == static_cast<std::uint8_t>(wire::kind::batch)) {
      runs->handle_batch(m, h);
    } else {
      handle_request(m, h, false);
    }
  }
  void handle_request(detail::incoming& m, const wire::header& h, bool slot_held) override {
    ran.push_back(h.function_id);
    during(h.function_id);
    if (slot_held) srv->release_slot();
    (void)m;
  }
  void handle_reply(detail::incoming&, const wire::header&) override {}
  bool prefetch_deferred(detail::incoming&, bool) noexcept override { return true; }
  void run_queued_request(detail::incoming& m) override { dispatch(m); }
  void work_posted() noexcept override {}
};

struct fixture {
  detail::transport net{MPI_COMM_SELF, 0us};
  detail::session session{{{"worker0", 0}, {"worker1", 1}}, 0};
  detail::statistics counters;
  detail::diagnostics diag{session, counters};
  detail::message_counter messages;
  detail::pending_calls pending{2};
  null_link link;
  detail::one_way_window one_way{2, 0}; // no window
  detail::outbox_set outboxes{2, link, pending, session, counters, &one_way};
  quiet_sender_hooks sender_hooks;
  detail::sender snd{net,      messages,     outboxes, pending, session,
                     counters, sender_hooks, {},       one_way};
  recording_receiver receiver;
  detail::server srv{2, receiver, session};
  detail::in_order_runs runs{2, receiver, net, srv, snd, outboxes, session, counters, diag};
  fixture() {
    receiver.runs = &runs;
    receiver.srv = &srv;
    sender_hooks.runs = &runs;
  }
};

} // namespace

TEST_CASE("a two-way request from an idle source is dispatched, a one-way one starts a run",
          "[in_order]") {
  fixture f;
  auto two_way = request(1, 1, false);
  CHECK(f.runs.route_received(two_way) == detail::in_order_runs::route::dispatch);
  auto one_way = request(1, 2, true);
  REQUIRE(f.runs.route_received(one_way) == detail::in_order_runs::route::in_order);
  f.runs.run(one_way);
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{2});
  auto after = request(1, 3, false); // the run is over: dispatched again
  CHECK(f.runs.route_received(after) == detail::in_order_runs::route::dispatch);
}

TEST_CASE("what arrives from a source while its run goes on runs after it, in order",
          "[in_order]") {
  fixture f;
  auto first = request(1, 1, true);
  REQUIRE(f.runs.route_received(first) == detail::in_order_runs::route::in_order);
  // While the first runs, the leader receives three more from the same source, and one from
  // another source, which does not wait.
  f.receiver.during = [&](std::uint64_t name) {
    if (name != 1) return;
    for (std::uint64_t id : {2, 3, 4}) {
      auto m = request(1, id, id % 2 == 0);
      CHECK(f.runs.route_received(m) == detail::in_order_runs::route::deferred);
      CHECK(m.bytes.empty()); // taken
    }
    auto other = request(0, 9, false);
    CHECK(f.runs.route_received(other) == detail::in_order_runs::route::dispatch);
    CHECK(f.runs.waiting() == 3);
  };
  f.runs.run(first);
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(f.runs.waiting() == 0);
}

TEST_CASE("a handler about to block hands the rest of its run to a server thread", "[in_order]") {
  fixture f;
  auto first = request(1, 1, true);
  REQUIRE(f.runs.route_received(first) == detail::in_order_runs::route::in_order);
  f.receiver.during = [&](std::uint64_t name) {
    if (name != 1) return;
    for (std::uint64_t id : {2, 3}) {
      auto m = request(1, id, true);
      REQUIRE(f.runs.route_received(m) == detail::in_order_runs::route::deferred);
    }
    f.runs.hand_off();          // as engine::wait does before it blocks
    CHECK(f.srv.queued() == 1); // the rest, posted as one task
  };
  f.runs.run(first);
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{1}); // this thread stopped after it
  // A new message from the source still waits: the run is not over, it moved.
  auto late = request(1, 4, false);
  CHECK(f.runs.route_received(late) == detail::in_order_runs::route::deferred);
  f.srv.run_queued(); // a server thread takes the rest
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(f.runs.waiting() == 0);
  CHECK(f.srv.running() == 0);
  auto after = request(1, 5, false);
  CHECK(f.runs.route_received(after) == detail::in_order_runs::route::dispatch);
}

TEST_CASE("a batch runs request by request; a blocked one hands the rest of the batch on",
          "[in_order]") {
  fixture f;
  auto b = batch(1, {1, 2, 3, 4});
  REQUIRE(f.runs.route_received(b) == detail::in_order_runs::route::in_order);
  std::size_t queued_at_hand_off = 0;
  f.receiver.during = [&](std::uint64_t name) {
    if (name != 2) return;
    f.runs.hand_off(); // the second request's handler is about to block
    queued_at_hand_off = static_cast<std::size_t>(f.srv.queued());
  };
  f.runs.run(b);
  CHECK(queued_at_hand_off == 1); // the rest of the batch went to the server as one task
  // A slot was free, so this thread ran the task itself once its handler returned: the order
  // holds across the hand-off.
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(f.srv.queued() == 0);
  CHECK(f.srv.running() == 0);
}

TEST_CASE("a batch that finds no handler slot waits whole for a server thread", "[in_order]") {
  fixture f;
  REQUIRE(f.srv.try_take_slot());
  REQUIRE(f.srv.try_take_slot()); // every handler busy
  auto b = batch(1, {1, 2, 3});
  REQUIRE(f.runs.route_received(b) == detail::in_order_runs::route::in_order);
  f.runs.run(b);
  CHECK(f.receiver.ran.empty());
  CHECK(f.srv.queued() == 1);
  f.srv.release_slot();
  f.srv.run_queued();
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{1, 2, 3});
  f.srv.release_slot();
  CHECK(f.srv.running() == 0);
}

TEST_CASE("replies made while a batch of requests runs are batched to its source", "[in_order]") {
  fixture f;
  auto b = batch(1, {1, 2});
  REQUIRE(f.runs.route_received(b) == detail::in_order_runs::route::in_order);
  bool inside = false;
  f.receiver.during = [&](std::uint64_t) {
    inside = f.runs.batches_replies_to(1);
    CHECK_FALSE(f.runs.batches_replies_to(0));      // only to the batch's source
    detail::in_order_runs::reply_batch_pause pause; // a thread about to wait
    CHECK_FALSE(f.runs.batches_replies_to(1));
  };
  f.runs.run(b);
  CHECK(inside);
  CHECK_FALSE(f.runs.batches_replies_to(1)); // the batch is over
}

TEST_CASE("refuse_waiting empties the runs' waiting messages", "[in_order]") {
  fixture f;
  auto first = request(1, 1, true);
  REQUIRE(f.runs.route_received(first) == detail::in_order_runs::route::in_order);
  f.receiver.during = [&](std::uint64_t name) {
    if (name != 1) return;
    auto m = request(1, 2, true); // one-way: refused by a log line and a count
    REQUIRE(f.runs.route_received(m) == detail::in_order_runs::route::deferred);
    f.runs.refuse_waiting();
    CHECK(f.runs.waiting() == 0);
    CHECK(f.counters.one_way_failed == 1);
  };
  f.runs.run(first);
  CHECK(f.receiver.ran == std::vector<std::uint64_t>{1});
}
