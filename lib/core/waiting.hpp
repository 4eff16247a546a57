// SPDX-License-Identifier: MIT
// Who a thread that waits for a future turns to. Internal.
#pragma once

#include <atomic>

#include <mpirpc/detail/future_state.hpp>

namespace mpirpc::detail {

/// Waits for a future's state while driving progress (the engine: it polls for replies
/// meanwhile, engine::wait). Any thread off the progress path.
class state_waiter {
public:
  virtual void wait(future_state_base& state) = 0;

protected:
  ~state_waiter() = default;
};

/// The running session's waiter, or null while none runs: the runtime publishes it
/// (runtime.cpp). wait_for_state (detail/library.hpp, core/waiting.cpp) turns to it, or just
/// sleeps until the state is done when there is none. A session's waiter outlives it (stopped
/// engines are kept), so a thread that loaded it just before shutdown may still use it.
extern std::atomic<state_waiter*> g_state_waiter;

} // namespace mpirpc::detail
