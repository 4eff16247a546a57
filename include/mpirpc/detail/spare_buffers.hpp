// SPDX-License-Identifier: MIT
// Internal: storage of large received vectors, kept for reuse.
//
// A std::vector that receives a large buffer is resized first, which zero-fills it: for a
// std::vector<double> of 16 MiB that pass costs about as much as a third of the transfer on the
// 2-core development machine, once on the callee (the argument) and once on the caller (the
// result). mpirpc therefore keeps the storage of large vectors of trivially copyable elements
// that it is done with, and receives the next buffer of the same type and about the same size
// into it without filling it first:
//  - on the callee, a handler's result once its reply has left, and an argument of a free
//    function still held after the function returned (a parameter taken by const reference);
//  - on the caller, an argument passed as an rvalue (rpc_sync(to, f, std::move(v))) once its
//    request has left; such an argument is then moved from (left empty). Whether it is kept
//    depends on its size, the budget and what the pool holds: code must not use v after
//    std::move(v) either way. An lvalue argument is never touched.
// Only vectors of a type that this process has received before are kept (a type that is only
// ever sent would hold memory for nothing), only while their capacity is at most twice their
// size, at most two per type, and no more than spare_budget bytes in all (set from
// options::spare_buffer_bytes; zero keeps none). Any thread may offer and take; a mutex per
// type guards its slots. shutdown() frees them all (release_spare_buffers) and keeps none until
// the next init_rpc.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include <mpirpc/detail/library.hpp>

namespace mpirpc::detail {

/// Vectors smaller than this are not kept (they are copied into the message anyway).
inline constexpr std::size_t spare_min_bytes = 32 * 1024;
// The budget and what the pools hold (spare_budget, spare_held, spare_takes) and the registry
// of pools (register_spare_pool, release_spare_buffers) are in lib/: detail/library.hpp.

/// True for the vectors the pools keep: std::vector<T> of trivially copyable T (not bool), with
/// the standard allocator (whose moves never copy; a vector with an allocator that
/// default-initialises is not zero-filled in the first place).
template <class V> struct is_spare_vector : std::false_type {};
template <class T>
struct is_spare_vector<std::vector<T>>
    : std::bool_constant<std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>> {};
template <class V> inline constexpr bool is_spare_vector_v = is_spare_vector<V>::value;

/// The kept vectors of type V.
template <class V> class spare_vectors {
  static_assert(is_spare_vector_v<V>);
  using element = typename V::value_type;

public:
  /// Keeps `v`'s storage (moving from `v`) if it is large and the budget has room; otherwise
  /// leaves `v` as it is. True if kept.
  static bool offer(V& v) noexcept {
    const std::size_t bytes = v.capacity() * sizeof(element);
    // By capacity for the budget, by size for the match (take): a vector much larger than its
    // size would hold memory that no match accounts for.
    if (bytes < spare_min_bytes || v.size() == 0 || v.capacity() / 2 > v.size()) return false;
    pool& p = instance();
    if (!p.wanted.load(std::memory_order_relaxed)) return false; // never received here
    std::lock_guard<std::mutex> lock(p.mutex);
    // An empty slot, or else the one offered longer ago: what a process receives next is most
    // like what it received last.
    const int i = p.slots[0].capacity() == 0                              ? 0
                  : p.slots[1].capacity() == 0 || p.stamp[1] < p.stamp[0] ? 1
                                                                          : 0;
    V& slot = p.slots[i];
    const std::size_t freed = slot.capacity() * sizeof(element);
    // The budget is shared by every type: reserved by compare-and-swap, not under a lock.
    std::size_t held = spare_held.load(std::memory_order_relaxed);
    do {
      if (held - freed + bytes > spare_budget.load(std::memory_order_relaxed)) return false;
    } while (
        !spare_held.compare_exchange_weak(held, held - freed + bytes, std::memory_order_relaxed));
    slot = std::move(v); // frees what the slot held
    v = V();
    p.stamp[i] = ++p.clock;
    if (!p.registered) {
      p.registered = true;
      register_spare_pool(&release_all);
    }
    return true;
  }

  /// Moves a kept vector of at least `count` elements (and at most twice as many) into `v`,
  /// cut to `count` elements without writing them, if `v` is empty and has less room. True
  /// if it did.
  static bool take(V& v, std::size_t count) noexcept {
    if (count * sizeof(element) < spare_min_bytes || !v.empty() || v.capacity() >= count) {
      return false;
    }
    pool& p = instance();
    if (!p.wanted.load(std::memory_order_relaxed)) {
      p.wanted.store(true, std::memory_order_relaxed); // from now on, vectors of V are kept
    }
    if (spare_held.load(std::memory_order_relaxed) == 0) return false;
    std::lock_guard<std::mutex> lock(p.mutex);
    for (V& s : p.slots) {
      if (s.size() >= count && s.size() / 2 <= count) {
        release(s, v);
        v.resize(count); // shrinks: trivially copyable elements are not touched
        spare_takes.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
    }
    return false;
  }

private:
  struct pool {
    std::mutex mutex;
    V slots[2];
    std::uint64_t stamp[2] = {0, 0}; ///< `clock` when each slot was filled
    std::uint64_t clock = 0;
    bool registered = false;
    std::atomic<bool> wanted{false}; ///< a vector of V has been received in this process
  };
  static pool& instance() noexcept {
    // Never destroyed: a runtime shut down by a static object's destructor at exit still
    // releases the pools (reachable, so not a leak to LeakSanitizer).
    static pool* p = new pool;
    return *p;
  }
  /// Empties `s` into `to` and takes its bytes off spare_held.
  static void release(V& s, V& to) noexcept {
    const std::size_t bytes = s.capacity() * sizeof(element);
    to = std::move(s);
    s = V();
    spare_held.fetch_sub(bytes, std::memory_order_relaxed);
  }
  /// Empties `s`, freeing its storage.
  static void release(V& s) noexcept {
    V gone;
    release(s, gone);
  }
  static void release_all() noexcept {
    pool& p = instance();
    std::lock_guard<std::mutex> lock(p.mutex);
    for (V& s : p.slots)
      release(s);
  }
};

} // namespace mpirpc::detail
