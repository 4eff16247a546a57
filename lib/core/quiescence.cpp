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

std::string quiescence::wait_until_quiet(clock::time_point deadline,
                                         const std::function<void()>& before_wave,
                                         const std::function<busy_counts()>& busy) {
  // A reply that an async-execution handler still owes is not counted by the callee: its
  // caller counts the call until the reply arrives or the call times out, so a future that is
  // never completed delays shutdown by at most the caller's timeout instead of forever.
  const auto start = clock::now();
  std::uint64_t previous[3] = {~0ull, ~0ull, ~0ull};
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    before_wave();
    const busy_counts mine = busy();
    std::uint64_t local[4];
    local[2] = mine.queued + mine.running + mine.pending;
    local[0] = _messages.sent_count();
    local[1] = _messages.received_count();
    local[3] = clock::now() >= deadline ? 1 : 0;
    std::uint64_t total[4];
    _transport.allreduce_sum(local, total, 4);
    const bool quiet = total[0] == total[1] && total[2] == 0;
    if (quiet && total[0] == previous[0] && total[1] == previous[1] && previous[2] == 0) return {};
    if (total[3] > 0) {
      return describe_unfinished(mine, total[0] - std::min(total[0], total[1]),
                                 std::chrono::duration<double>(clock::now() - start).count());
    }
    std::memcpy(previous, total, sizeof previous);
    if (!quiet) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(5000));
    }
  }
}

std::string quiescence::describe_unfinished(const busy_counts& mine, std::uint64_t in_flight,
                                            double elapsed_s) {
  // Every rank learns every rank's counts, so that all report the same.
  const std::uint64_t counts[4] = {mine.pending, mine.running, mine.queued, 0};
  std::vector<std::uint64_t> all(static_cast<std::size_t>(_session.size()) * 4);
  _transport.allgather(counts, 4, all.data());
  char head[96];
  std::snprintf(head, sizeof head, "mpirpc: graceful shutdown timed out after %.3f s; ", elapsed_s);
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
  return out + ". Outstanding calls fail with shutdown_error.";
}

} // namespace mpirpc::detail
