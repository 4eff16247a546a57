// SPDX-License-Identifier: MIT
// Must not compile: a member function called through rref<T> must be a member of T.
#include <mpirpc/mpirpc.hpp>

struct counter {
  int n = 0;
  int get() const { return n; }
};
struct gauge {
  int level = 0;
  int read() const { return level; }
};
MPIRPC_REGISTER_CONSTRUCTOR(counter);
MPIRPC_REGISTER_METHOD(gauge::read);

int main() {
  auto r = mpirpc::remote("worker1", mpirpc::construct<counter>);
  return r.rpc_sync(&gauge::read);
}
