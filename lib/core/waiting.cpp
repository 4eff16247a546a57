// SPDX-License-Identifier: MIT
#include "core/waiting.hpp"

#include <mpirpc/detail/library.hpp>

namespace mpirpc::detail {

std::atomic<state_waiter*> g_state_waiter{nullptr};

void wait_for_state(future_state_base& state) {
  if (state_waiter* w = g_state_waiter.load(std::memory_order_acquire)) {
    w->wait(state);
  } else {
    state.sleep_until_done();
  }
}

} // namespace mpirpc::detail
