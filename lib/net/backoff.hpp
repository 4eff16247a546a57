// SPDX-License-Identifier: MIT
// Spinning in polling loops, and the pacing of transfers' waits. Internal.
#pragma once

#include <algorithm>
#include <atomic>
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

/// Paces one thread's wait for a transfer of out-of-line data (a send, or the matching and
/// receiving of a buffer) and counts it in its transport's spinning_transfers() from its start
/// until it ends or pauses past its spin budget: spin_window plus the time its bytes take at
/// spin_bytes_per_us (backoff.hpp), zero where spinning is not allowed. Within the budget
/// pause() spins; past it, it sleeps a quarter of the time waited beyond the budget, from 2 us
/// up to 1 ms. One thread's, not thread-safe.
class transfer_pacer {
public:
  /// Where a transport's pacers count themselves, and their spin budget before bytes.
  struct budget {
    std::atomic<int>& spinning;
    std::chrono::microseconds base;
  };
  /// Starts the clock and the budget for `bytes`.
  transfer_pacer(const budget& b, std::size_t bytes);
  ~transfer_pacer();
  transfer_pacer(const transfer_pacer&) = delete;
  transfer_pacer& operator=(const transfer_pacer&) = delete;

  /// Grows the budget by the time `bytes` more take (a receiver learns the size when it has
  /// matched the data); counts the transfer again if it is back within its budget.
  void add_bytes(std::size_t bytes);
  std::chrono::steady_clock::duration waited() const {
    return std::chrono::steady_clock::now() - _start;
  }
  /// One pause of the wait, which has lasted `waited`.
  void pause(std::chrono::steady_clock::duration waited);

private:
  void count() noexcept;
  void uncount() noexcept;
  std::atomic<int>& _spinning;
  std::chrono::microseconds _base;
  std::chrono::microseconds _spin_for;
  std::chrono::steady_clock::time_point _start;
  bool _counted = false;
};

} // namespace mpirpc::detail
