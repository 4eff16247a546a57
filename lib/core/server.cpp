// SPDX-License-Identifier: MIT
#include "core/server.hpp"

#include <exception>
#include <string>

namespace mpirpc::detail {

bool server::queue(incoming&& message) {
  {
    std::lock_guard<std::mutex> lock(_mutex);
    _queue.push_back(std::move(message));
    _queued.fetch_add(1, std::memory_order_seq_cst);
  }
  return !_warned.exchange(true);
}

void server::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(_mutex);
    _tasks.push_back(std::move(task));
    _queued.fetch_add(1, std::memory_order_seq_cst);
  }
  _hooks.work_posted();
}

void server::run_queued() {
  while (_queued.load(std::memory_order_seq_cst) > 0 && try_take_slot()) {
    incoming message;
    std::function<void()> task;
    {
      std::lock_guard<std::mutex> lock(_mutex);
      if (!_queue.empty()) {
        message = std::move(_queue.front());
        _queue.pop_front();
      } else if (!_tasks.empty()) {
        task = std::move(_tasks.front());
        _tasks.pop_front();
      } else {
        release_slot();
        return;
      }
      _queued.fetch_sub(1, std::memory_order_seq_cst);
    }
    if (task) {
      try {
        task();
      } catch (const std::exception& e) {
        _session.log(std::string("a deferred call failed: ") + e.what());
      } catch (...) {
        _session.log("a deferred call failed with a non-standard exception");
      }
      task = nullptr;
      release_slot();
      continue;
    }
    _hooks.run_queued_request(message);
    release_slot();
  }
}

std::deque<incoming> server::take_all() noexcept {
  std::deque<incoming> unserved;
  std::deque<std::function<void()>> tasks; // dropped: their replies can no longer be sent
  {
    std::lock_guard<std::mutex> lock(_mutex);
    unserved.swap(_queue);
    tasks.swap(_tasks);
    _queued.store(0, std::memory_order_seq_cst);
  }
  return unserved;
}

} // namespace mpirpc::detail
