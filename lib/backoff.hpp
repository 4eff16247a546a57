// SPDX-License-Identifier: MIT
// Spin-then-sleep back-off for polling loops. Internal.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace mpirpc::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Spins for `spin_for`, then sleeps for growing intervals up to `max_sleep`.
class backoff {
public:
  backoff(std::chrono::microseconds spin_for, std::chrono::microseconds max_sleep)
      : _spin_for(spin_for), _max_sleep(max_sleep) {
    reset();
  }
  void reset() {
    _start = std::chrono::steady_clock::now();
    _sleep = std::chrono::microseconds(0);
  }
  /// True while still in the spinning phase.
  bool spinning() const { return _sleep.count() == 0; }
  void pause() {
    if (_sleep.count() == 0) {
      if (std::chrono::steady_clock::now() - _start < _spin_for) {
        for (int i = 0; i < 16; ++i)
          cpu_relax();
        return;
      }
      _sleep = std::chrono::microseconds(10);
    } else {
      _sleep = std::min(_max_sleep, _sleep * 2);
    }
    std::this_thread::sleep_for(_sleep);
  }

private:
  std::chrono::microseconds _spin_for;
  std::chrono::microseconds _max_sleep;
  std::chrono::steady_clock::time_point _start;
  std::chrono::microseconds _sleep;
};

} // namespace mpirpc::detail
