// SPDX-License-Identifier: MIT
// Must not compile: a std::string where the remote function takes an int.
#include <string>

#include <mpirpc/mpirpc.hpp>

int square(int x) {
  return x * x;
}
MPIRPC_REGISTER(square);

int main() {
  return mpirpc::rpc_sync("worker1", square, std::string("seven"));
}
