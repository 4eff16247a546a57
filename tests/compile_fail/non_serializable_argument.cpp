// SPDX-License-Identifier: MIT
// Must not compile: a parameter type that is neither trivially copyable nor has serialize().
#include <string>

#include <mpirpc/mpirpc.hpp>

struct message {
  std::string text;
  int priority = 0;
};

int priority_of(message m) {
  return m.priority + static_cast<int>(m.text.size());
}
MPIRPC_REGISTER(priority_of);

int main() {
  return mpirpc::rpc_sync("worker1", priority_of, message{"hello", 3});
}
