// SPDX-License-Identifier: MIT
// The registry of spare-vector pools (include/mpirpc/detail/spare_buffers.hpp), so that the
// runtime can free what they keep at shutdown.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include <mpirpc/detail/spare_buffers.hpp>

namespace mpirpc::detail {

std::atomic<std::size_t> spare_budget{std::size_t(32) << 20};
std::atomic<std::size_t> spare_held{0};
std::atomic<std::uint64_t> spare_takes{0};

namespace {
std::mutex g_pools_mutex;
std::vector<void (*)() noexcept>& pools() {
  // Never destroyed, like the pools: a runtime may shut down from a static destructor.
  static auto* all = new std::vector<void (*)() noexcept>;
  return *all;
}
} // namespace

void register_spare_pool(void (*release)() noexcept) {
  std::lock_guard<std::mutex> lock(g_pools_mutex);
  try {
    pools().push_back(release);
  } catch (...) {
    // Out of memory: that pool's vectors are then freed at exit instead of at shutdown.
  }
}

void release_spare_buffers() noexcept {
  // Not called under g_pools_mutex: a pool registers itself while holding its own mutex, which
  // its release function takes. Registered functions are never removed, so the first `count`
  // entries stay valid without the lock (the vector itself may grow meanwhile: indexed, not
  // iterated, and read under the lock).
  std::size_t count = 0;
  {
    std::lock_guard<std::mutex> lock(g_pools_mutex);
    count = pools().size();
  }
  for (std::size_t i = 0; i < count; ++i) {
    void (*release)() noexcept = nullptr;
    {
      std::lock_guard<std::mutex> lock(g_pools_mutex);
      release = pools()[i];
    }
    release();
  }
}

} // namespace mpirpc::detail
