// SPDX-License-Identifier: MIT
// Must not compile: remote() keeps the function's result on the callee; there is none.
#include <mpirpc/mpirpc.hpp>

void touch(int) {}
MPIRPC_REGISTER(touch);

int main() {
  auto r = mpirpc::remote("worker1", touch, 1);
  (void)r;
  return 0;
}
