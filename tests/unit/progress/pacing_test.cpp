// SPDX-License-Identifier: MIT
// lib/progress/pacing.hpp: the spin and sleep decisions of the threads that poll, as pure
// functions of what the thread sees.
#include <catch2/catch.hpp>

#include <chrono>

#include "progress/pacing.hpp"

using namespace std::chrono_literals;
namespace pacing = mpirpc::detail::pacing;
using steady = pacing::clock;

TEST_CASE("paced_sleep: shortest while traffic is recent, then a quarter of the idle time",
          "[pacing]") {
  CHECK(pacing::paced_sleep(0us, 10ms) == pacing::min_sleep);
  CHECK(pacing::paced_sleep(999us, 10ms) == pacing::min_sleep);
  CHECK(pacing::paced_sleep(1000us + 400us, 10ms) == 100us);
  CHECK(pacing::paced_sleep(1000us + 4ms, 10ms) == 1ms);
  CHECK(pacing::paced_sleep(10s, 10ms) == 10ms);             // capped
  CHECK(pacing::paced_sleep(10s, 0us) == pacing::min_sleep); // never below the minimum
  CHECK(pacing::paced_sleep(1000us + 4us, 10ms) == pacing::min_sleep);
}

TEST_CASE("caller_drives: a waiter, or a user call within the caller window", "[pacing]") {
  const steady::time_point now = steady::time_point(1s);
  CHECK(pacing::caller_drives(1, now, steady::time_point{}));
  CHECK(pacing::caller_drives(0, now, now - 50us));
  CHECK_FALSE(pacing::caller_drives(0, now, now - pacing::caller_window));
  CHECK_FALSE(pacing::caller_drives(0, now, steady::time_point{}));
}

TEST_CASE("the leader spins within its window unless someone else spins or a caller drives",
          "[pacing]") {
  pacing::leader_view v;
  v.spin_window = 200us;
  v.idle_for = 50us;
  CHECK(pacing::leader_spins(v));
  v.idle_for = 200us;
  CHECK_FALSE(pacing::leader_spins(v)); // window over
  v.idle_for = 50us;
  v.others_spin = true;
  CHECK_FALSE(pacing::leader_spins(v));
  v.others_spin = false;
  v.driven = true;
  CHECK_FALSE(pacing::leader_spins(v));
  v.driven = false;
  v.spin_window = 0us; // spinning not allowed
  CHECK_FALSE(pacing::leader_spins(v));
}

TEST_CASE("the leader's sleep: capped by what is due, at least the caller sleep when driven",
          "[pacing]") {
  pacing::leader_view v;
  v.idle_poll_interval = 10ms;
  v.idle_for = 1h;
  SECTION("nothing due: the idle interval, and deeply idle") {
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == 10ms);
    CHECK(s.idle);
  }
  SECTION("replies due: the busy interval, never idle") {
    v.calls_out = true;
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == pacing::busy_poll_interval);
    CHECK_FALSE(s.idle);
  }
  SECTION("a batch being built: the batch interval, never idle") {
    v.batches_out = true;
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == pacing::batch_poll_interval);
    CHECK_FALSE(s.idle);
  }
  SECTION("a short idle interval caps the busy one") {
    v.calls_out = true;
    v.idle_poll_interval = 20us;
    CHECK(pacing::leader_sleep_for(v).sleep == 20us);
  }
  SECTION("called lately: not deeply idle, though it sleeps the whole interval") {
    v.called_lately = true;
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == 10ms);
    CHECK_FALSE(s.idle);
  }
  SECTION("driven by a caller while traffic is recent: the caller sleep, not the minimum") {
    v.idle_for = 10us;
    v.driven = true;
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == pacing::caller_leader_sleep);
    CHECK_FALSE(s.idle);
  }
  SECTION("driven with a window of calls out: the whole cap, since the caller polls itself") {
    v.idle_for = 10us;
    v.driven = true;
    v.streaming = true;
    v.calls_out = true;
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == pacing::caller_stream_sleep);
    CHECK(s.sleep > pacing::caller_leader_sleep);
    CHECK(s.sleep <= pacing::busy_poll_interval);
    CHECK_FALSE(s.idle);
  }
  SECTION("streaming counts only while driven") {
    v.idle_for = 10us;
    v.streaming = true;
    CHECK(pacing::leader_sleep_for(v).sleep == pacing::min_sleep);
  }
  SECTION("driven, but the cap is shorter than the caller sleep") {
    v.idle_for = 10us;
    v.driven = true;
    v.idle_poll_interval = 20us;
    CHECK(pacing::leader_sleep_for(v).sleep == 20us);
  }
  SECTION("recent traffic: the shortest sleep, not idle") {
    v.idle_for = 10us;
    const auto s = pacing::leader_sleep_for(v);
    CHECK(s.sleep == pacing::min_sleep);
    CHECK_FALSE(s.idle);
  }
}

TEST_CASE("a waiter's sleep grows with its wait only on an oversubscribed node", "[pacing]") {
  CHECK(pacing::waiter_sleep(500us, false) == pacing::min_sleep);
  CHECK(pacing::waiter_sleep(500us, true) == 62us); // an eighth of the wait
  CHECK(pacing::waiter_sleep(1h, false) == pacing::waiter_max_sleep);
  CHECK(pacing::waiter_sleep(1h, true) == pacing::waiter_max_sleep);
  CHECK(pacing::waiter_sleep(8us, true) == pacing::min_sleep);
}

TEST_CASE("a wait spins unless recent waits on an oversubscribed node were all long", "[pacing]") {
  pacing::wait_history h;
  CHECK(h.shortest() == steady::duration::zero());
  for (int i = 0; i < 3; ++i)
    h.record(2ms);
  CHECK(h.shortest() == steady::duration::zero()); // fewer than four recorded
  auto w = pacing::start_wait(h, true, 200us);
  CHECK(w.spin);
  CHECK(w.quiet_for == steady::duration::zero());

  h.record(600us);
  CHECK(h.shortest() == 600us);
  w = pacing::start_wait(h, true, 200us);
  CHECK_FALSE(w.spin);
  CHECK(w.quiet_for == 300us); // half the shortest
  h.record(10ms);
  h.record(10ms);
  h.record(10ms);
  h.record(10ms); // the 600 us wait has left the history
  w = pacing::start_wait(h, true, 200us);
  CHECK(w.quiet_for == pacing::waiter_max_sleep); // at most the longest sleep

  w = pacing::start_wait(h, false, 200us); // not oversubscribed: history ignored
  CHECK(w.spin);
  CHECK(w.quiet_for == steady::duration::zero());
  w = pacing::start_wait(h, false, 0us); // spinning not allowed
  CHECK_FALSE(w.spin);

  h.record(100us); // one short wait brings the spin back
  CHECK(pacing::start_wait(h, true, 200us).spin);
}
