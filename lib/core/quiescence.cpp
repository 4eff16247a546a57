// SPDX-License-Identifier: MIT
#include "core/quiescence.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;
} // namespace

quiescence::outcome quiescence::wait_until_quiet(quiet_purpose purpose, clock::time_point deadline,
                                                 const std::function<void()>& before_wave,
                                                 const std::function<busy_counts()>& busy) {
  // A reply that an async-execution handler still owes is not counted by the callee: its
  // caller counts the call until the reply arrives or the call times out, so a future that is
  // never completed delays shutdown by at most the caller's timeout instead of forever.
  const auto start = clock::now();
  std::uint64_t previous[3] = {~0ull, ~0ull, ~0ull};
  // A barrier waits in shorter pauses: its caller resumes its work once quiet.
  const auto longest_pause =
      std::chrono::microseconds(purpose == quiet_purpose::barrier ? 1000 : 5000);
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    before_wave();
    const busy_counts mine = busy();
    std::uint64_t local[5];
    local[2] = mine.queued + mine.running + mine.pending;
    local[0] = _messages.sent_count();
    local[1] = _messages.received_count();
    local[3] = clock::now() >= deadline ? 1 : 0;
    local[4] = static_cast<std::uint64_t>(purpose);
    std::uint64_t total[5];
    _transport.allreduce_sum(local, total, 5);
    const auto ranks = static_cast<std::uint64_t>(_session.size());
    if (total[4] != ranks * static_cast<std::uint64_t>(purpose)) {
      // Every rank sees the same sum, so all of them end here in the same wave.
      const std::uint64_t barriers = total[4] - ranks * 1; // shutdown 1, barrier 2
      return {outcome::kind::mismatched,
              std::to_string(barriers) + " of " + std::to_string(ranks) +
                  " workers called barrier() while the others called shutdown()"};
    }
    const bool quiet = total[0] == total[1] && total[2] == 0;
    if (quiet && total[0] == previous[0] && total[1] == previous[1] && previous[2] == 0) return {};
    if (total[3] > 0) {
      return {outcome::kind::timed_out,
              describe_unfinished(purpose, mine, total[0] - std::min(total[0], total[1]),
                                  std::chrono::duration<double>(clock::now() - start).count())};
    }
    std::memcpy(previous, total, sizeof previous);
    if (!quiet) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, longest_pause);
    }
  }
}

std::string quiescence::describe_unfinished(quiet_purpose purpose, const busy_counts& mine,
                                            std::uint64_t in_flight, double elapsed_s) {
  // Every rank learns every rank's counts, so that all report the same.
  const std::uint64_t counts[4] = {mine.pending, mine.running, mine.queued, 0};
  std::vector<std::uint64_t> all(static_cast<std::size_t>(_session.size()) * 4);
  _transport.allgather(counts, 4, all.data());
  const bool barrier = purpose == quiet_purpose::barrier;
  char head[96];
  std::snprintf(head, sizeof head, "mpirpc: %s timed out after %.3f s; ",
                barrier ? "barrier()" : "graceful shutdown", elapsed_s);
  std::string busy;
  for (int w = 0; w < _session.size(); ++w) {
    const std::uint64_t* c = &all[static_cast<std::size_t>(w) * 4];
    std::string what;
    auto add = [&](std::uint64_t n, const char* one, const char* many) {
      if (n == 0) return;
      what += (what.empty() ? "" : ", ") + std::to_string(n) + " " + (n == 1 ? one : many);
    };
    add(c[0], "call awaiting its reply", "calls awaiting their replies");
    add(c[1], "handler running", "handlers running");
    add(c[2], "request queued", "requests queued");
    if (!what.empty()) busy += (busy.empty() ? "" : "; ") + _session.name_of(w) + ": " + what;
  }
  std::string out = std::string(head) + "still busy: " + (busy.empty() ? "(no worker)" : busy);
  if (in_flight > 0) {
    out += "; " + std::to_string(in_flight) + " message(s) sent but not yet processed";
  }
  return out + (barrier ? "." : ". Outstanding calls fail with shutdown_error.");
}

} // namespace mpirpc::detail
