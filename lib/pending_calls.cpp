// SPDX-License-Identifier: MIT
#include "pending_calls.hpp"

namespace mpirpc::detail {

std::uint64_t pending_calls::insert(pending_call call) {
  std::lock_guard<std::mutex> lock(_mutex);
  std::uint32_t index;
  if (!_free.empty()) {
    index = _free.back();
    _free.pop_back();
  } else {
    index = static_cast<std::uint32_t>(_slots.size());
    _slots.emplace_back();
  }
  slot& s = _slots[index];
  s.generation += 1;
  s.used = true;
  s.call = std::move(call);
  _size.fetch_add(1, std::memory_order_seq_cst);
  return (std::uint64_t(s.generation) << 32) | index;
}

std::optional<pending_call> pending_calls::take(std::uint64_t id) {
  const auto index = static_cast<std::uint32_t>(id & 0xffffffffu);
  const auto generation = static_cast<std::uint32_t>(id >> 32);
  std::lock_guard<std::mutex> lock(_mutex);
  if (index >= _slots.size()) return std::nullopt;
  slot& s = _slots[index];
  if (!s.used || s.generation != generation) return std::nullopt;
  s.used = false;
  std::optional<pending_call> out(std::move(s.call));
  s.call = pending_call{};
  _free.push_back(index);
  _size.fetch_sub(1, std::memory_order_relaxed);
  return out;
}

std::vector<pending_call> pending_calls::take_expired(std::chrono::steady_clock::time_point now) {
  std::vector<pending_call> out;
  std::lock_guard<std::mutex> lock(_mutex);
  for (std::uint32_t i = 0; i < _slots.size(); ++i) {
    slot& s = _slots[i];
    if (s.used && s.call.deadline <= now) {
      s.used = false;
      out.push_back(std::move(s.call));
      s.call = pending_call{};
      _free.push_back(i);
      _size.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  return out;
}

std::vector<pending_call> pending_calls::take_all() {
  return take_expired(std::chrono::steady_clock::time_point::max());
}

} // namespace mpirpc::detail
