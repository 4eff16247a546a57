// SPDX-License-Identifier: MIT
#include "net/backoff.hpp"

#include <thread>

namespace mpirpc::detail {

namespace {
using clock = std::chrono::steady_clock;

/// The sleep of a transfer's wait that has lasted `waited`, past its spin budget `spin_for`: a
/// quarter of the time waited beyond the budget, from 2 us up to 1 ms. Measured from the end of
/// the budget, not from the start: a transfer that outlasts its budget by a little is probably
/// about to complete, and a quarter of the whole wait (50 us after a 200 us spin, 1 ms after
/// 4 ms) overshot its completion by that much.
std::chrono::microseconds transfer_sleep(clock::duration waited,
                                         std::chrono::microseconds spin_for) {
  const auto beyond = std::chrono::duration_cast<std::chrono::microseconds>(waited - spin_for);
  return std::clamp(beyond / 4, std::chrono::microseconds(2), std::chrono::microseconds(1000));
}
} // namespace

transfer_pacer::transfer_pacer(const budget& b, std::size_t bytes)
    : _spinning(b.spinning), _base(b.base), _spin_for(transfer_spin(_base, bytes)),
      _start(clock::now()) {
  // Counted from the start: MPI may copy the data inside the call that posts it.
  if (_spin_for.count() > 0) count();
}

transfer_pacer::~transfer_pacer() {
  uncount();
}

void transfer_pacer::add_bytes(std::size_t bytes) {
  if (_base.count() <= 0) return;
  _spin_for = std::min(_spin_for + (transfer_spin(_base, bytes) - _base),
                       std::max(_base, max_transfer_spin));
  if (waited() < _spin_for) count();
}

void transfer_pacer::pause(clock::duration waited) {
  if (waited < _spin_for) {
    cpu_relax();
    return;
  }
  uncount();
  std::this_thread::sleep_for(transfer_sleep(waited, _spin_for));
}

void transfer_pacer::count() noexcept {
  if (!_counted) {
    _counted = true;
    _spinning.fetch_add(1, std::memory_order_seq_cst);
  }
}

void transfer_pacer::uncount() noexcept {
  if (_counted) {
    _counted = false;
    _spinning.fetch_sub(1, std::memory_order_seq_cst);
  }
}

} // namespace mpirpc::detail
