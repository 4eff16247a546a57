// SPDX-License-Identifier: MIT
// Must not compile: two arguments for a remote function that takes one.
#include <mpirpc/mpirpc.hpp>

int square(int x) {
  return x * x;
}
MPIRPC_REGISTER(square);

int main() {
  return mpirpc::rpc_sync("worker1", square, 7, 8);
}
