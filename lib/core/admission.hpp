// SPDX-License-Identifier: MIT
// The gate of the send path, closed when the runtime stops. Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

namespace mpirpc::detail {

/// Admits threads into the send path (and a waiter into its polls) until the runtime stops;
/// close() waits until every admitted thread has left, so that the communicators can be freed
/// after it. Once closed, replies are dropped too: in a non-graceful stop the callers' ranks
/// are stopping as well, and a large reply to a rank that no longer receives would never
/// complete. Thread-safe.
class admission_gate {
public:
  /// One thread inside the gate for the pass's lifetime; admitted unless the gate is closed.
  class pass {
  public:
    explicit pass(admission_gate& g) noexcept : _gate(g) {
      _gate._inside.fetch_add(1, std::memory_order_seq_cst);
      _admitted = _gate._open.load(std::memory_order_seq_cst);
    }
    ~pass() { _gate._inside.fetch_sub(1, std::memory_order_seq_cst); }
    pass(const pass&) = delete;
    pass& operator=(const pass&) = delete;
    explicit operator bool() const noexcept { return _admitted; }

  private:
    admission_gate& _gate;
    bool _admitted;
  };

  /// Whether new work is still accepted.
  bool open() const noexcept { return _open.load(std::memory_order_seq_cst); }
  /// Refuses everyone from now on and waits until nobody is inside.
  void close() noexcept {
    _open.store(false, std::memory_order_seq_cst);
    while (_inside.load(std::memory_order_seq_cst) > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

private:
  std::atomic<bool> _open{true};
  std::atomic<int> _inside{0};
};

} // namespace mpirpc::detail
