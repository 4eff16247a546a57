// SPDX-License-Identifier: MIT
#include "testing.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>

#include <mpirpc/errors.hpp>
#include <mpirpc/serialization.hpp>

#include "engine.hpp"

namespace mpirpc::detail {

/// The engine's internals the seam needs (a friend of engine).
struct testing_access {
  static transport& transport_of(engine& e) { return *e._transport; }
  static message_counter& messages(engine& e) { return e._messages; }
};

namespace testing {

namespace {
std::mutex g_mutex;
std::condition_variable g_arrived;
std::map<std::uint64_t, std::optional<reply>> g_expected; // under g_mutex
std::atomic<int> g_expected_count{0};

/// The engine's late_reply_hook: keeps a reply a test expects for take_reply. Costs one atomic
/// load when none is expected.
bool capture_reply(const incoming& message) {
  if (g_expected_count.load(std::memory_order_acquire) == 0) return false;
  wire::header h;
  std::memcpy(&h, message.bytes.data(), sizeof h); // validated by dispatch
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_expected.find(h.call_id);
  if (it == g_expected.end() || it->second) return false;
  it->second = reply{message.source, h, message.bytes};
  g_arrived.notify_all();
  return true;
}
} // namespace

void send_raw(int dest, int tag, const std::vector<char>& control,
              const std::vector<std::vector<char>>& data, int data_tag) {
  engine& e = running_engine();
  std::vector<segment> parts;
  for (const auto& d : data)
    parts.push_back(segment{d.data(), d.size()});
  // Counted as sender::send_message counts a message (core/message_counter.hpp).
  testing_access::messages(e).send([&](bool* control_sent) {
    testing_access::transport_of(e).send_raw(dest, tag, control.data(), control.size(), parts,
                                             data_tag, control_sent);
  });
}

wire::header make_header(wire::kind kind, std::uint64_t call_id, std::uint64_t function_id,
                         std::uint64_t payload_size, std::uint32_t segment_count,
                         std::uint32_t data_tag) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(kind);
  h.flags = 0;
  h.segment_count = segment_count;
  h.data_tag = data_tag;
  h.call_id = call_id;
  h.function_id = function_id;
  h.payload_size = payload_size;
  return h;
}

std::vector<char> make_message(const wire::header& h, const std::vector<char>& payload,
                               const std::vector<std::uint64_t>& table) {
  std::vector<char> out(sizeof h + payload.size() + table.size() * sizeof(std::uint64_t));
  char* p = out.data();
  std::memcpy(p, &h, sizeof h);
  p += sizeof h;
  if (!payload.empty()) std::memcpy(p, payload.data(), payload.size());
  p += payload.size();
  if (!table.empty()) std::memcpy(p, table.data(), table.size() * sizeof(std::uint64_t));
  return out;
}

void expect_reply(std::uint64_t call_id) {
  g_late_reply_hook.store(&capture_reply, std::memory_order_release);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_expected.emplace(call_id, std::nullopt).second) g_expected_count.fetch_add(1);
}

std::optional<reply> take_reply(std::uint64_t call_id, std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(g_mutex);
  g_arrived.wait_for(lock, limit, [&] {
    auto it = g_expected.find(call_id);
    return it == g_expected.end() || it->second.has_value();
  });
  auto it = g_expected.find(call_id);
  if (it == g_expected.end()) return std::nullopt;
  std::optional<reply> out;
  if (it->second) out.emplace(std::move(*it->second));
  g_expected.erase(it);
  g_expected_count.fetch_sub(1);
  return out;
}

error_reply decode_error(const reply& r) {
  if (r.header.kind != static_cast<std::uint8_t>(wire::kind::reply_error)) {
    throw serialization_error("mpirpc test seam: kind " + std::to_string(r.header.kind) +
                              " is not an error reply");
  }
  reader in(r.bytes.data() + sizeof(wire::header), static_cast<std::size_t>(r.header.payload_size));
  error_reply out;
  out.code = static_cast<wire::error_code>(in.read_plain<std::uint8_t>());
  load(in, out.origin);
  load(in, out.type);
  load(in, out.message);
  return out;
}

std::pair<std::uint64_t, std::uint64_t> message_counts() {
  engine& e = running_engine();
  return {testing_access::messages(e).sent_count(), testing_access::messages(e).received_count()};
}

void set_patience(std::chrono::milliseconds p) {
  testing_access::transport_of(running_engine()).set_patience(p);
}

std::chrono::milliseconds patience() {
  return testing_access::transport_of(running_engine()).patience();
}

} // namespace testing
} // namespace mpirpc::detail
