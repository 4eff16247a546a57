// SPDX-License-Identifier: MIT
// libFuzzer target for the message decoder: everything a rank does with a received message's
// bytes before user code sees them (receiver::dispatch, run_request, rref_table::serve,
// handle_reply, decode_error_reply), minus the MPI receives and the engine's state.
//
// Input: [u8 tag][u32 L][L bytes: the control message][the out-of-line segments' bytes, back
// to back]. L is clipped to what follows. The control message (header | payload | segment
// table) goes through wire::validate; then a request is decoded as the function its
// function_id names (fuzz_types.hpp: a prefix when flags are set, the arguments with
// decode_arguments, or an internal function's payload), a value reply as the result type its
// call_id names, an error reply as code and three strings. Out-of-line buffers are served from
// the bytes after the control message, in order, through the reader's segment_source.
//
// A message may be refused only with an mpirpc::error (serialization_error, argument_error);
// any other exception, a crash, an over-read or undefined behaviour is a finding. Every
// decoded value is read back (touch) so that the sanitizers see its bytes used.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <tuple>
#include <vector>

#include <mpirpc/detail/bound_call.hpp>
#include <mpirpc/errors.hpp>
#include <mpirpc/serialization.hpp>

#include "errors_internal.hpp"
#include "fuzz_types.hpp"
#include "core/registry.hpp"
#include "rref/rref_wire.hpp"
#include "net/wire.hpp"

namespace {

using mpirpc::serialization_error;
using mpirpc::detail::codec;
using mpirpc::detail::reader;
using mpirpc::detail::segment_source;
namespace wire = mpirpc::detail::wire;

// ---- reading every decoded value back

volatile std::uint64_t g_sink = 0;
void mix(std::uint64_t v) {
  g_sink = g_sink * 1099511628211ull + v;
}

void touch(bool v) {
  mix(v ? 1 : 0);
}
void touch(char v) {
  mix(static_cast<unsigned char>(v));
}
void touch(int v) {
  mix(static_cast<std::uint64_t>(v));
}
void touch(short v) {
  mix(static_cast<std::uint64_t>(v));
}
void touch(long v) {
  mix(static_cast<std::uint64_t>(v));
}
void touch(std::uint8_t v) {
  mix(v);
}
void touch(std::uint64_t v) {
  mix(v);
}
void touch(double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  mix(bits);
}
void touch(const std::string& s) {
  mix(s.size());
  for (char c : s)
    touch(c);
}
void touch(const fuzz::plain_point& p);
void touch(const fuzz::user_record& r);
void touch(const fuzz::user_nested& n);
void touch(const fuzz::rref_stand_in& r);
void touch(const fuzz::user_graph& g);
template <class T, class A> void touch(const std::vector<T, A>& v);
template <class T, std::size_t N> void touch(const std::array<T, N>& a);
template <class K, class V, class C, class A> void touch(const std::map<K, V, C, A>& m);
template <class K, class V, class H, class E, class A>
void touch(const std::unordered_map<K, V, H, E, A>& m);
template <class T> void touch(const std::optional<T>& o);
template <class A, class B> void touch(const std::pair<A, B>& p);
template <class... T> void touch(const std::tuple<T...>& t);

void touch(const fuzz::plain_point& p) {
  touch(p.id);
  touch(p.x);
  touch(p.y);
  for (char c : p.tag)
    touch(c);
  touch(p.color);
}
void touch(const fuzz::user_record& r) {
  touch(r.name);
  touch(r.values);
  touch(r.counts);
}
void touch(const fuzz::user_nested& n) {
  touch(n.base);
  touch(n.notes);
  touch(n.level);
  touch(n.flag);
  touch(n.labelled);
  touch(n.added_in_version_2);
}
void touch(const fuzz::rref_stand_in& r) {
  mix(r.bytes.id);
  mix(r.bytes.owner);
  mix(r.bytes.flags);
  mix(r.bytes.weight);
}
void touch(const fuzz::user_graph& g) {
  for (const auto* r : {g.first.get(), g.second.get()}) {
    mix(r != nullptr);
    if (r) touch(*r);
  }
  mix(g.first == g.second);
  mix(g.shapes.size());
  for (const auto& s : g.shapes) {
    mix(s != nullptr);
    if (!s) continue;
    touch(s->id);
    if (const auto* c = dynamic_cast<const fuzz::circle*>(s.get())) touch(c->radius);
  }
}
template <class T, class A> void touch(const std::vector<T, A>& v) {
  mix(v.size());
  for (const auto& e : v)
    touch(static_cast<const T&>(e));
}
template <class T, std::size_t N> void touch(const std::array<T, N>& a) {
  for (const auto& e : a)
    touch(e);
}
template <class K, class V, class C, class A> void touch(const std::map<K, V, C, A>& m) {
  mix(m.size());
  for (const auto& [k, v] : m) {
    touch(k);
    touch(v);
  }
}
template <class K, class V, class H, class E, class A>
void touch(const std::unordered_map<K, V, H, E, A>& m) {
  mix(m.size());
  for (const auto& [k, v] : m) {
    touch(k);
    touch(v);
  }
}
template <class T> void touch(const std::optional<T>& o) {
  touch(o.has_value());
  if (o) touch(*o);
}
template <class A, class B> void touch(const std::pair<A, B>& p) {
  touch(p.first);
  touch(p.second);
}
template <class... T> void touch(const std::tuple<T...>& t) {
  std::apply([](const auto&... e) { (touch(e), ...); }, t);
}

// ---- the transport's part: out-of-line buffers

/// Serves the segments that the table announces from the bytes after the control message, as
/// segment_stream (lib/net/segment_stream.cpp) does from MPI: in order, each exactly its table
/// size. A segment whose bytes did not arrive fails before the decoder sizes anything for it, as
/// a transport that knows each incoming size would (see docs/wire.md, "Fuzzing").
class fuzz_segments final : public segment_source {
public:
  fuzz_segments(const char* table, std::uint32_t count, const std::uint8_t* data, std::size_t size)
      : _table(table), _count(count), _data(data), _size(size) {}

  std::size_t next_segment_size() const override {
    check_next();
    const std::uint64_t n = size_of(_next);
    if (n > _size - _used) {
      throw serialization_error("fuzz transport: segment of " + std::to_string(n) +
                                " bytes, only " + std::to_string(_size - _used) + " arrived");
    }
    return static_cast<std::size_t>(n);
  }

  void receive_segment(void* dst, std::size_t bytes) override {
    check_next();
    const std::uint64_t expected = size_of(_next);
    if (expected != bytes) {
      throw serialization_error("mpirpc: malformed message: out-of-line buffer of " +
                                std::to_string(bytes) + " bytes announced, table says " +
                                std::to_string(expected));
    }
    if (bytes > _size - _used) throw serialization_error("fuzz transport: segment cut short");
    if (bytes) std::memcpy(dst, _data + _used, bytes);
    _used += bytes;
    ++_next;
  }

private:
  void check_next() const {
    if (_next >= _count) {
      throw serialization_error("mpirpc: malformed message: more out-of-line buffers referenced "
                                "than the message carries");
    }
  }
  std::uint64_t size_of(std::uint32_t i) const {
    std::uint64_t n;
    std::memcpy(&n, _table + std::size_t(i) * sizeof n, sizeof n);
    return n;
  }
  const char* _table;
  std::uint32_t _count;
  std::uint32_t _next = 0;
  const std::uint8_t* _data;
  std::size_t _size;
  std::size_t _used = 0;
};

// ---- what the registry and the pending calls would say

template <class... A> void decode_call(reader& in) {
  std::tuple<A...> args;
  mpirpc::detail::decode_arguments(in, args);
  touch(args);
}

struct fuzz_function {
  std::uint64_t id;
  fuzz::kind kind;
  void (*decode)(reader&);
};

#define FUZZ_FUNCTION_ENTRY(name, k, ...)                                                          \
  fuzz_function{mpirpc::detail::function_id_of(name), fuzz::kind::k, &decode_call<__VA_ARGS__>},

const std::vector<fuzz_function>& functions() {
  using namespace fuzz;
  static const std::vector<fuzz_function> table{FUZZ_FUNCTIONS(FUZZ_FUNCTION_ENTRY)};
  return table;
}

template <class T> void decode_result(reader& in) {
  // As call_state::on_reply (rpc.hpp).
  T value{};
  codec<T>::load(in, value);
  if (in.remaining() != 0) in.fail("unexpected bytes after the result");
  touch(value);
}

void decode_void_result(reader& in) {
  if (in.remaining() != 0) in.fail("unexpected bytes in a void reply");
}

using result_decoder = void (*)(reader&);
result_decoder result_for(std::uint64_t call_id) {
  using namespace fuzz;
#define FUZZ_RESULT_CASE(id, T)                                                                    \
  case id:                                                                                         \
    return &decode_result<T>;
  switch (call_id) {
    FUZZ_RESULTS(FUZZ_RESULT_CASE)
  case void_call_id:
    return &decode_void_result;
  default:
    return nullptr; // a late reply: its segments are drained
  }
#undef FUZZ_RESULT_CASE
}

// ---- the decoder

/// receiver::run_request: rref_table::serve for flagged requests, else the function's invoker.
void decode_request(const wire::header& h, reader& in) {
  const fuzz_function* fn = nullptr;
  for (const fuzz_function& f : functions()) {
    if (f.id == h.function_id) fn = &f;
  }
  if (!fn) return; // unknown function: error reply code 2, segments drained
  const bool internal = fn->kind == fuzz::kind::fetch || fn->kind == fuzz::kind::release ||
                        fn->kind == fuzz::kind::replenish;
  try {
    if (h.flags != 0) {
      const wire::request_prefix prefix = wire::read_request_prefix(in, h.flags);
      mix(prefix.new_id ^ prefix.new_weight ^ prefix.self_id ^ prefix.self_weight);
      if (!(h.flags & wire::request_on_rref) && fn->kind == fuzz::kind::member) {
        in.fail("member function called without an object");
      }
    }
  } catch (...) {
    mpirpc::detail::rethrow_argument_error();
  }
  if (h.flags != 0 && internal) throw mpirpc::error("cannot be called through an rref");
  if (h.flags == 0 && fn->kind == fuzz::kind::member) {
    throw mpirpc::error("is a member function: call it through an rref");
  }
  try {
    switch (fn->kind) {
    case fuzz::kind::fetch: {
      const auto [id, weight] = wire::read_fetch_request(in);
      mix(id ^ weight);
      return;
    }
    case fuzz::kind::release: {
      const auto [id, weight] = wire::read_id_and_weight(in, wire::max_release_weight, "release");
      mix(id ^ weight);
      return;
    }
    case fuzz::kind::replenish: {
      const auto [id, weight] = wire::read_id_and_weight(in, wire::replenish_weight, "replenish");
      mix(id ^ weight);
      return;
    }
    case fuzz::kind::function:
    case fuzz::kind::member:
      break;
    }
  } catch (...) {
    mpirpc::detail::rethrow_argument_error();
  }
  fn->decode(in);
}

/// receiver::decode_error_reply.
void decode_error_reply(const char* payload, std::size_t size) {
  reader in(payload, size);
  mix(in.read_plain<std::uint8_t>());
  std::string origin, type, message;
  mpirpc::detail::load(in, origin);
  mpirpc::detail::load(in, type);
  mpirpc::detail::load(in, message);
  touch(origin);
  touch(type);
  touch(message);
}

void decode_message(int tag, const std::vector<char>& control, const std::uint8_t* segments,
                    std::size_t segments_size) {
  wire::header h;
  const std::string problem = wire::validate(control.data(), control.size(), tag, h);
  if (!problem.empty()) return; // counted, logged, perhaps answered with code 5
  if (h.kind == static_cast<std::uint8_t>(wire::kind::batch)) {
    // in_order_runs::handle_batch: each message checked with validate_batched, then decoded as one
    // arriving alone (no segments); the first bad one ends the batch.
    const char* p = control.data() + sizeof(wire::header);
    const char* const end = p + h.payload_size;
    while (p < end) {
      wire::header sub;
      std::size_t size = 0;
      if (!wire::validate_batched(p, static_cast<std::size_t>(end - p), tag, sub, size).empty()) {
        return;
      }
      try {
        decode_message(tag, std::vector<char>(p, p + size), nullptr, 0);
      } catch (const mpirpc::error&) {
        // refused, as the engine answers it; the batch goes on
      }
      p += size;
    }
    return;
  }
  // The payload in a block of its own, so that reading past its end is an over-read.
  const std::size_t offset = sizeof(wire::header);
  const std::vector<char> payload(control.begin() + static_cast<std::ptrdiff_t>(offset),
                                  control.begin() +
                                      static_cast<std::ptrdiff_t>(offset + h.payload_size));
  fuzz_segments source(control.data() + offset + h.payload_size, h.segment_count, segments,
                       segments_size);
  if (h.kind == static_cast<std::uint8_t>(wire::kind::request)) {
    reader in(payload.data(), payload.size(), &source);
    decode_request(h, in);
  } else if (h.kind == static_cast<std::uint8_t>(wire::kind::reply_value)) {
    const result_decoder decode = result_for(h.call_id);
    if (!decode) return;
    reader in(payload.data(), payload.size(), &source);
    decode(in);
  } else {
    decode_error_reply(payload.data(), payload.size());
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return 0;
  const int tag = data[0];
  std::uint32_t length;
  std::memcpy(&length, data + 1, sizeof length);
  const std::size_t control_size = std::min<std::size_t>(length, size - 5);
  // An exact-size copy: bytes past the control message are not the decoder's to read.
  const std::vector<char> control(data + 5, data + 5 + control_size);
  try {
    decode_message(tag, control, data + 5 + control_size, size - 5 - control_size);
  } catch (const mpirpc::error&) {
    // A refused message: the outcome the decoder promises for bad input.
  }
  return 0;
}
