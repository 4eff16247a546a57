// SPDX-License-Identifier: MIT
// Must not compile: a remote function cannot write back through a non-const reference.
#include <mpirpc/mpirpc.hpp>

int increment(int& counter) {
  return ++counter;
}
MPIRPC_REGISTER(increment);

int main() {
  int counter = 1;
  return mpirpc::rpc_sync("worker1", increment, counter);
}
