// SPDX-License-Identifier: MIT
// Spinning in polling loops. Internal.
#pragma once

#include <chrono>

namespace mpirpc::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// How long a poller or a transfer's wait spins after traffic before it sleeps, where spinning
/// is allowed at all (see options::busy_poll). Measured on 2 cores with 3 and 4 ranks (W4, W5,
/// W6): 200 us beat 5, 20 and 50 us and sleeping-only polls (W4 11 us against 100 us), because
/// a window this short ends soon after traffic stops.
inline constexpr std::chrono::microseconds spin_window{200};

} // namespace mpirpc::detail
