// SPDX-License-Identifier: MIT
#include <cstdio>

#include <mpirpc/mpirpc.hpp>

int answer(int x) {
  return x * 2;
}
MPIRPC_REGISTER(answer);

int main() {
  mpirpc::runtime rt;
  const auto me = mpirpc::get_worker_info();
  if (me.id == 0) std::printf("consumer: %d\n", mpirpc::rpc_sync("worker1", answer, 21));
  return 0;
}
