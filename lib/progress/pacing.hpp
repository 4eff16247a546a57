// SPDX-License-Identifier: MIT
// How often the threads that poll MPI look, and when they spin: pure functions of what the
// thread sees, and the constants behind them. Internal; lib/README.md, "Pacing", says why.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>

#include "core/wait_history.hpp"
#include "net/backoff.hpp"

namespace mpirpc::detail::pacing {

using clock = std::chrono::steady_clock;
using std::chrono::microseconds;

/// Shortest sleep between polls.
inline constexpr microseconds min_sleep{2};
/// Traffic within this window counts as ongoing: the poller keeps looking as often as it can.
inline constexpr microseconds active_window{1000};
/// Longest leader sleep while calls of this rank await replies.
inline constexpr microseconds busy_poll_interval{200};
/// Longest leader sleep while a batch is being built that nobody waits for (a thread that
/// waits sends its batches first; a spinning leader sends one once it is 20 us old).
inline constexpr microseconds batch_poll_interval{200};
/// Longest sleep of a thread waiting for a reply between its polls.
inline constexpr microseconds waiter_max_sleep{1000};
/// On an oversubscribed node, a waiter past its spin sleeps at least this fraction of the time
/// it has waited, so that it notices its reply at most that much late.
inline constexpr int waiter_sleep_divisor = 8;
/// A rank that sent a request within this window does not count as deeply idle.
inline constexpr std::chrono::milliseconds recent_call_window{50};
/// Caller-driven progress. While a thread waits for a reply (it polls for replies itself), or
/// a thread of the user's has sent a call within caller_window (it will wait, and then poll,
/// soon), and no request has come for serving_window, the leader neither spins nor polls more
/// often than every caller_leader_sleep: it would take the core of that thread (Open MPI binds
/// each of two ranks on two cores to one core, so a rank's threads share one).
inline constexpr microseconds caller_window{100};
inline constexpr microseconds caller_leader_sleep{50};
/// While it drives with at least stream_outstanding calls awaiting replies (a window of calls,
/// W2 and W5), its thread polls for them whenever it needs one, and the leader sleeps the whole
/// cap: each wake-up (a futex round trip, several microseconds here) came out of that thread's
/// core (W2: 1.47-2.05 -> 1.95-2.85 M calls/s in 8 paired runs). Chains of single calls keep
/// the shorter sleep, and so does a leader whose caller sleeps for room in the window (the
/// leader alone receives its replies then).
inline constexpr microseconds caller_stream_sleep{200};
inline constexpr std::size_t stream_outstanding = 16;
inline constexpr microseconds serving_window{1000};
/// How often the standby thread checks that the leader still polls.
inline constexpr microseconds promote_interval{5000};
/// How long a standby sleeps at most while the leader is deeply idle (a lost wake-up costs
/// at most this).
inline constexpr std::chrono::milliseconds deep_standby_interval{200};

/// The sleep before the next poll after `idle_for` without a message. While traffic is
/// ongoing, the shortest sleep; after that a quarter of the idle time beyond the window, so
/// that a rank idle for long costs few wake-ups. (A sleep proportional to the whole gap would
/// feed on itself: slow polls make long gaps, which make slower polls.)
inline microseconds paced_sleep(clock::duration idle_for, microseconds cap) noexcept {
  if (idle_for < active_window) return min_sleep;
  const auto quarter = std::chrono::duration_cast<microseconds>((idle_for - active_window) / 4);
  return std::clamp(quarter, min_sleep, std::max(min_sleep, cap));
}

/// Whether a caller drives this rank's progress now: a thread waits for a reply (`waiters`),
/// or a thread of the user's sent a call less than caller_window before `now`.
inline bool caller_drives(int waiters, clock::time_point now,
                          clock::time_point last_user_call) noexcept {
  return waiters > 0 || now - last_user_call < caller_window;
}

/// What the leader sees after a poll that found nothing.
struct leader_view {
  clock::duration idle_for{};  ///< since its last message
  bool driven = false;         ///< a caller drives progress and no request came lately
  microseconds spin_window{0}; ///< zero where spinning is not allowed
  bool others_spin = false;    ///< a waiter spins, or a transfer is within its budget
  bool calls_out = false;      ///< replies are due that no waiting thread polls for
  bool batches_out = false;    ///< a batch is being built
  bool called_lately = false;  ///< this rank sent a request within recent_call_window
  bool streaming = false;      ///< driven, and stream_outstanding or more calls await replies
  microseconds idle_poll_interval{10000}; ///< options::idle_poll_interval
};

/// Whether the leader spins (one pause, then polls again) rather than sleeps. Only the first
/// four fields of the view are read, so that a spinning leader reads nothing else.
inline bool leader_spins(const leader_view& v) noexcept {
  return !v.driven && v.idle_for < v.spin_window && !v.others_spin;
}

/// How long a leader that does not spin sleeps, and whether it is deeply idle (then a call or a
/// batch wakes it, and the standby sleeps long too).
struct leader_sleep {
  microseconds sleep{0};
  bool idle = false;
};
inline leader_sleep leader_sleep_for(const leader_view& v) noexcept {
  // Replies need the leader only when no thread waits (a waiter polls for them itself); a
  // leader that wakes often for nothing steals the core of the threads that spin.
  microseconds cap =
      v.calls_out ? std::min(busy_poll_interval, v.idle_poll_interval) : v.idle_poll_interval;
  if (v.batches_out) cap = std::min(cap, batch_poll_interval); // sent once old enough
  microseconds sleep = paced_sleep(v.idle_for, cap);
  if (v.driven) {
    sleep = std::min(cap, std::max(sleep, v.streaming ? caller_stream_sleep : caller_leader_sleep));
  }
  // Deeply idle only if this rank has not called out lately either: between the calls of a
  // busy caller the pending table is empty for a moment, and flagging idleness then would
  // make every next call pay for a wake-up.
  return {sleep, !v.calls_out && !v.batches_out && !v.called_lately && sleep >= cap};
}

/// How long a waiter that found no reply sleeps before it polls again, `waited` into its wait
/// (after its spin). On an oversubscribed node every wake-up of the waiter takes a core from a
/// rank that is working, very likely on its reply (W6, a 64-hop chain of about 700 us on 3
/// ranks and 2 cores: a waiter polling every few microseconds after its spin made the chain
/// 20-40 % slower). So there the sleep grows with the wait: a reply is noticed at most an
/// eighth of the wait late, and a long wait costs a few dozen wake-ups, not hundreds.
inline microseconds waiter_sleep(clock::duration waited, bool oversubscribed) noexcept {
  const microseconds paced = paced_sleep(waited, waiter_max_sleep);
  if (!oversubscribed) return paced;
  const auto share = std::chrono::duration_cast<microseconds>(waited) / waiter_sleep_divisor;
  return std::max(paced, std::min(share, waiter_max_sleep));
}

using detail::wait_history; // core/wait_history.hpp

/// How a wait starts: whether it spins, and how long it sleeps before its first poll after
/// that. On an oversubscribed node a thread whose last waits all took longer than a spin does
/// not spin: it sleeps through the first half of the shortest of them (at most
/// waiter_max_sleep, as any of its sleeps), leaving the cores to the ranks that work on its
/// reply (W6: its 64-hop chains take 400-700 us).
struct wait_start {
  bool spin = false;
  clock::duration quiet_for{}; ///< no poll before start + quiet_for
};
inline wait_start start_wait(const wait_history& history, bool oversubscribed,
                             microseconds spin_allowed) noexcept {
  const clock::duration expected = oversubscribed ? history.shortest() : clock::duration::zero();
  const bool long_wait = expected > spin_window;
  return {spin_allowed.count() > 0 && !long_wait,
          long_wait ? std::min<clock::duration>(expected / 2, waiter_max_sleep)
                    : clock::duration::zero()};
}

} // namespace mpirpc::detail::pacing
