// SPDX-License-Identifier: MIT
// Spinning in polling loops. Internal.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>

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

/// How fast a transfer's spin budget grows with its size: 1 byte per ns (1 GB/s). Measured on
/// the 2-core machine (each of 2 ranks bound to its own core): receiving 1 MiB into a fresh
/// std::vector takes 150-250 us (zero-filling it, then one shared-memory copy), 16 MiB 8-10 ms
/// idle; the budget covers that with room for a loaded machine, and still ends after about
/// 1 ms per MB when the peer is not receiving at all.
inline constexpr std::size_t spin_bytes_per_us = 1000;

/// The longest spin budget of a transfer: beyond it, the back-off sleeps (capped at 1 ms) cost
/// a long transfer little, while a peer that does not receive at all is not spun on for long,
/// nor the standby kept from taking over (a 2 GiB buffer would otherwise get 2 s).
inline constexpr std::chrono::microseconds max_transfer_spin{20000};

/// The spin budget of a wait for a transfer of `bytes`: `base` (spin_window, or zero where
/// spinning is not allowed) plus the time the copy itself should take, at most
/// max_transfer_spin. A flat budget made a 1 MiB send stop spinning just before the receiver
/// finished its copy, and the back-off sleep that followed overshot the completion by
/// 50-150 us.
inline std::chrono::microseconds transfer_spin(std::chrono::microseconds base,
                                               std::size_t bytes) noexcept {
  if (base.count() <= 0 || base >= max_transfer_spin) return base;
  const auto room = static_cast<std::size_t>((max_transfer_spin - base).count());
  return base + std::chrono::microseconds(std::min(bytes / spin_bytes_per_us, room));
}

} // namespace mpirpc::detail
