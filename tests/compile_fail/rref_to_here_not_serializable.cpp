// SPDX-License-Identifier: MIT
// Must not compile: to_here() copies the value to the caller, and a type holding a mutex
// cannot be serialized (remote() itself is fine: the object stays on its owner).
#include <mutex>

#include <mpirpc/mpirpc.hpp>

struct guarded {
  std::mutex lock;
  int value = 0;
  guarded() = default;
  guarded(guarded&&) noexcept {}
};
MPIRPC_REGISTER_CONSTRUCTOR(guarded);

int main() {
  auto r = mpirpc::remote("worker1", mpirpc::construct<guarded>);
  return r.to_here().value;
}
