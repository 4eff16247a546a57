// SPDX-License-Identifier: MIT
// lib/core/one_way_window: what is counted as in flight, when a marker comes due and what it
// covers, and that an acknowledgement wakes a sender waiting for room.
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "core/one_way_window.hpp"

using mpirpc::detail::one_way_window;

TEST_CASE("bytes that leave are in flight until acknowledged, per destination", "[one_way]") {
  one_way_window w(3, 1000);
  CHECK(w.enabled());
  CHECK(w.chunk() == 250);
  w.sent(1, 600);
  CHECK(w.in_flight(1) == 600);
  CHECK(w.in_flight(2) == 0);
  CHECK(w.has_room(1));
  w.sent(1, 400);
  CHECK_FALSE(w.has_room(1)); // the limit itself is full
  CHECK(w.has_room(2));
  w.acknowledged(1, 600);
  CHECK(w.in_flight(1) == 400);
  CHECK(w.has_room(1));
}

TEST_CASE("a marker comes due once a chunk has left, and covers every byte once", "[one_way]") {
  one_way_window w(2, 1000); // chunk 250
  w.sent(0, 100);
  CHECK_FALSE(w.marker_due(0));
  CHECK(w.take_due_marker(0) == 0);
  w.sent(0, 200); // 300 since the last marker
  REQUIRE(w.marker_due(0));
  CHECK(w.take_due_marker(0) == 300);
  CHECK_FALSE(w.marker_due(0)); // taken: one marker for those bytes
  CHECK(w.take_due_marker(0) == 0);
  w.sent(0, 260);
  w.sent(0, 260); // two chunks before anyone sent a marker: one marker covers both
  CHECK(w.take_due_marker(0) == 520);
  w.acknowledged(0, 300);
  w.acknowledged(0, 520);
  CHECK(w.in_flight(0) == 0);
}

TEST_CASE("an acknowledgement wakes a sender waiting for room", "[one_way]") {
  one_way_window w(2, 100);
  w.sent(1, 100);
  REQUIRE_FALSE(w.has_room(1));
  std::thread acker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    w.acknowledged(1, 100);
  });
  const auto start = std::chrono::steady_clock::now();
  while (!w.has_room(1))
    w.wait_for_room(1, std::chrono::steady_clock::now() + std::chrono::seconds(10));
  const auto waited = std::chrono::steady_clock::now() - start;
  acker.join();
  CHECK(waited < std::chrono::seconds(5)); // woken, not timed out
}

TEST_CASE("the window's own messages are told apart from user functions", "[one_way]") {
  CHECK(one_way_window::is_window_message(one_way_window::marker_id()));
  CHECK(one_way_window::is_window_message(one_way_window::ack_id()));
  CHECK(one_way_window::marker_id() != one_way_window::ack_id());
  CHECK_FALSE(one_way_window::is_window_message(0));
  CHECK_FALSE(one_way_window(2, 0).enabled());
}
