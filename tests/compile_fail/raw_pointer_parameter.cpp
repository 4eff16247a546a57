// SPDX-License-Identifier: MIT
// Must not compile: a raw pointer means nothing on another rank.
#include <mpirpc/mpirpc.hpp>

int first(const int* values) {
  return values[0];
}
MPIRPC_REGISTER(first);

int main() {
  const int values[] = {4, 5, 6};
  return mpirpc::rpc_sync("worker1", first, values);
}
