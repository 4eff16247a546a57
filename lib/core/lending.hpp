// SPDX-License-Identifier: MIT
// What a message being built borrows, kept if it is sent and given back if not. Internal.
#pragma once

#include <cstddef>

namespace mpirpc::detail {

/// The log of what messages being built on the calling thread have borrowed (the weight of
/// remote references written into them; rref/ implements it). Positions are marks of that
/// thread's log. Any thread, for its own log.
class lending_log {
public:
  virtual std::size_t mark() const noexcept = 0;
  /// What was borrowed since `mark` stays with the message (it was sent).
  virtual void commit(std::size_t mark) noexcept = 0;
  /// What was borrowed since `mark` goes back (the message was not sent).
  virtual void undo(std::size_t mark) noexcept = 0;

protected:
  ~lending_log() = default;
};

/// One outgoing message's share of the lending log: given back unless committed.
class outgoing_transaction {
public:
  /// What is borrowed from now on.
  explicit outgoing_transaction(lending_log& log) noexcept : _log(log), _mark(log.mark()) {}
  /// What was borrowed since `mark` (0: everything in this thread's log).
  outgoing_transaction(lending_log& log, std::size_t mark) noexcept : _log(log), _mark(mark) {}
  ~outgoing_transaction() {
    if (_sent) {
      _log.commit(_mark);
    } else {
      _log.undo(_mark);
    }
  }
  outgoing_transaction(const outgoing_transaction&) = delete;
  outgoing_transaction& operator=(const outgoing_transaction&) = delete;
  /// The message was sent: what it borrowed stays with it.
  void sent() noexcept { _sent = true; }

private:
  lending_log& _log;
  std::size_t _mark;
  bool _sent = false;
};

} // namespace mpirpc::detail
