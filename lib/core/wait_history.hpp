// SPDX-License-Identifier: MIT
// How long a thread's last waits for a reply took. Internal.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>

namespace mpirpc::detail {

/// How long one thread's last few waits for a reply took (kept in its thread_state; read by
/// progress/pacing's start_wait).
struct wait_history {
  using duration = std::chrono::steady_clock::duration;
  static constexpr std::size_t size = 4;
  std::array<duration, size> last{};
  std::size_t recorded = 0;
  void record(duration d) noexcept { last[recorded++ % size] = d; }
  /// The shortest of the last `size` waits; zero until there were that many.
  duration shortest() const noexcept {
    if (recorded < size) return duration::zero();
    return *std::min_element(last.begin(), last.end());
  }
};

} // namespace mpirpc::detail
