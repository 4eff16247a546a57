// SPDX-License-Identifier: MIT
// The cumulative counters behind mpirpc::stats(), and the report of dropped messages. Internal.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <mpirpc/runtime.hpp>

#include "core/session.hpp"
#include "net/segment_stream.hpp"

namespace mpirpc::detail {

/// Counters each part of the engine adds to, any thread. Relaxed unless a test relies on
/// seeing a count together with what caused it (malformed messages and failed one-way calls
/// are counted after their log line is written, and with seq_cst).
struct statistics {
  std::atomic<std::uint64_t> requests_sent{0};
  std::atomic<std::uint64_t> requests_served{0};
  std::atomic<std::uint64_t> replies_received{0};
  std::atomic<std::uint64_t> late_replies{0};
  std::atomic<std::uint64_t> malformed{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> calls_delayed{0};
  std::atomic<std::uint64_t> one_way_delayed{0};
  std::atomic<std::uint64_t> one_way_sent{0};
  std::atomic<std::uint64_t> one_way_run{0};
  std::atomic<std::uint64_t> one_way_failed{0};
  std::atomic<std::uint64_t> batches_sent{0};
  std::atomic<std::uint64_t> messages_batched{0};

  /// The counters above (the rref figures are left at zero: the rref service adds them).
  runtime_stats snapshot() const noexcept {
    runtime_stats s;
    s.requests_sent = requests_sent.load();
    s.requests_served = requests_served.load();
    s.replies_received = replies_received.load();
    s.late_replies_dropped = late_replies.load();
    s.malformed_messages = malformed.load();
    s.timeouts = timeouts.load();
    s.calls_delayed = calls_delayed.load();
    s.one_way_delayed = one_way_delayed.load();
    s.one_way_sent = one_way_sent.load();
    s.one_way_run = one_way_run.load();
    s.one_way_failed = one_way_failed.load();
    s.batches_sent = batches_sent.load();
    s.messages_batched = messages_batched.load();
    return s;
  }
};

/// What the receiving side reports: lines to the session's log, and counts. Any thread.
class diagnostics final : public drop_report {
public:
  diagnostics(const session& s, statistics& counters) : _session(s), _counters(counters) {}
  void log(const std::string& line) const noexcept override { _session.log(line); }
  void count_malformed() noexcept override {
    _counters.malformed.fetch_add(1, std::memory_order_seq_cst);
  }
  /// A one-way call's failure: logged, then counted, since nobody waits for it.
  void one_way_failed(const std::string& what) noexcept {
    _session.log(what); // before the count: whoever sees the count finds the line written
    _counters.one_way_failed.fetch_add(1, std::memory_order_seq_cst);
  }

private:
  const session& _session;
  statistics& _counters;
};

} // namespace mpirpc::detail
