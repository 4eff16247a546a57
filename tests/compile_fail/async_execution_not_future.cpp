// SPDX-License-Identifier: MIT
// Must not compile: MPIRPC_REGISTER_ASYNC on a function that does not return a future.
#include <mpirpc/mpirpc.hpp>

int plain(int x) {
  return x;
}
MPIRPC_REGISTER_ASYNC(plain);

int main() {
  return 0;
}
