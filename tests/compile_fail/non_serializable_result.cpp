// SPDX-License-Identifier: MIT
// Must not compile: a result type that is neither trivially copyable nor has serialize().
#include <string>

#include <mpirpc/mpirpc.hpp>

struct message {
  std::string text;
  int priority = 0;
};

message make_message(int priority) {
  return message{"made", priority};
}
MPIRPC_REGISTER(make_message);

int main() {
  return mpirpc::rpc_sync("worker1", make_message, 3).priority;
}
