// SPDX-License-Identifier: MIT
// A small mpirpc program for 3 ranks: every worker calls a function on its right neighbour.
#include <cstdio>
#include <string>
#include <vector>

#include <mpirpc/mpirpc.hpp>

namespace {
int add(int a, int b) {
  return a + b;
}
std::string greet(std::string who) {
  return "hello " + who + " from " + mpirpc::get_worker_info().name;
}
double sum(std::vector<double> v) {
  double s = 0;
  for (double x : v)
    s += x;
  return s;
}
} // namespace

MPIRPC_REGISTER(add);
MPIRPC_REGISTER(greet);
MPIRPC_REGISTER(sum);

int main() {
  mpirpc::runtime rt;
  const auto me = mpirpc::get_worker_info();
  const auto workers = mpirpc::get_worker_infos();
  const auto& right = workers[(static_cast<std::size_t>(me.id) + 1) % workers.size()];
  const int three = mpirpc::rpc_sync(right.name, add, 1, 2);
  auto hello = mpirpc::rpc_async(right, greet, me.name);
  const double total = mpirpc::rpc_sync(right.id, sum, std::vector<double>{1.5, 2.5, 3.0});
  std::printf("%s: add(1, 2) on %s = %d; %s; sum = %g\n", me.name.c_str(), right.name.c_str(),
              three, hello.wait().c_str(), total);
  return 0;
}
