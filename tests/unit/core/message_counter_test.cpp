// SPDX-License-Identifier: MIT
// lib/core/message_counter: the counts quiescence compares, and how a failed send is balanced.
#include <catch2/catch.hpp>

#include <stdexcept>
#include <thread>
#include <vector>

#include "core/message_counter.hpp"

using mpirpc::detail::message_counter;

TEST_CASE("a message is counted as sent before it is handed over", "[message_counter]") {
  message_counter c;
  c.send([&](bool* control_sent) {
    CHECK(c.sent_count() == 1); // a receiver that counts it can never see sent < received
    *control_sent = true;
  });
  CHECK(c.sent_count() == 1);
  CHECK(c.received_count() == 0);
  c.received();
  CHECK(c.received_count() == 1);
}

TEST_CASE("a send that fails before its control message left is balanced as received",
          "[message_counter]") {
  message_counter c;
  CHECK_THROWS_AS(c.send([](bool*) { throw std::runtime_error("refused"); }), std::runtime_error);
  CHECK(c.sent_count() == 1);
  CHECK(c.received_count() == 1);
}

TEST_CASE("a send that fails after its control message left is left to the receiver",
          "[message_counter]") {
  message_counter c;
  CHECK_THROWS_AS(c.send([](bool* control_sent) {
    *control_sent = true; // the receiver counts it
    throw std::runtime_error("a segment failed");
  }),
                  std::runtime_error);
  CHECK(c.sent_count() == 1);
  CHECK(c.received_count() == 0);
}

TEST_CASE("counts from many threads add up", "[message_counter]") {
  message_counter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.send([](bool* control_sent) { *control_sent = true; });
        c.received();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(c.sent_count() == 40000);
  CHECK(c.received_count() == 40000);
}
