// SPDX-License-Identifier: MIT
// Writes the seed corpus of fuzz_decoder: real messages, encoded by the library's own writer
// (serialization.hpp, checked_oarchive for the Boost path), one file per message, in
// fuzz_decoder's input format ([u8 tag][u32 L][control message][segment bytes]).
//   make_corpus DIR
// The committed corpus (tests/fuzz/corpus) is its output; rerun it after a wire format change.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include <mpi.h>

#include <mpirpc/serialization.hpp>

#include "fuzz_types.hpp"
#include "core/registry.hpp"
#include "rref/rref_wire.hpp"
#include "net/wire.hpp"

/// Open MPI's MPI_Init/MPI_Finalize leave allocations behind that LeakSanitizer would report
/// at exit; they are not the decoder's.
extern "C" const char* __asan_default_options() {
  return "detect_leaks=0";
}

namespace {

using mpirpc::detail::segment;
using mpirpc::detail::writer;
namespace wire = mpirpc::detail::wire;

std::string g_dir;
int g_written = 0;

/// Frames header, payload, segment table and segment bytes as fuzz_decoder reads them.
void write_message(const std::string& name, int tag, wire::kind kind, std::uint16_t flags,
                   std::uint64_t call_id, std::uint64_t function_id,
                   const std::vector<char>& payload, const std::vector<segment>& segments) {
  wire::header h{};
  h.magic = wire::magic;
  h.version = wire::version;
  h.kind = static_cast<std::uint8_t>(kind);
  h.flags = flags;
  h.segment_count = static_cast<std::uint32_t>(segments.size());
  h.data_tag = segments.empty() ? 0 : 7;
  h.call_id = call_id;
  h.function_id = function_id;
  h.payload_size = payload.size();
  std::vector<char> control(sizeof h);
  std::memcpy(control.data(), &h, sizeof h);
  control.insert(control.end(), payload.begin(), payload.end());
  for (const segment& s : segments) {
    const std::uint64_t n = s.bytes;
    control.insert(control.end(), reinterpret_cast<const char*>(&n),
                   reinterpret_cast<const char*>(&n) + sizeof n);
  }
  std::vector<char> out;
  out.push_back(static_cast<char>(tag));
  const auto length = static_cast<std::uint32_t>(control.size());
  out.insert(out.end(), reinterpret_cast<const char*>(&length),
             reinterpret_cast<const char*>(&length) + sizeof length);
  out.insert(out.end(), control.begin(), control.end());
  for (const segment& s : segments) {
    const char* p = static_cast<const char*>(s.data);
    out.insert(out.end(), p, p + s.bytes);
  }
  std::ofstream file(g_dir + "/" + name, std::ios::binary);
  file.write(out.data(), static_cast<std::streamsize>(out.size()));
  if (!file) {
    std::fprintf(stderr, "make_corpus: cannot write %s/%s\n", g_dir.c_str(), name.c_str());
    std::exit(1);
  }
  ++g_written;
}

/// A request for `function` with the prefix words `prefix` (flags) and `args`, encoded as
/// rpc.hpp encodes arguments passed with their parameter types (large buffers out of line).
template <class... A>
void request(const std::string& name, const char* function, std::uint16_t flags,
             const std::vector<std::uint64_t>& prefix, const A&... args) {
  std::vector<char> payload;
  std::vector<segment> segments;
  writer w(payload, &segments);
  for (std::uint64_t word : prefix)
    w.write_plain(word);
  (mpirpc::detail::save(w, args), ...);
  write_message("request-" + name, wire::tag_request, wire::kind::request, flags, 1,
                mpirpc::detail::function_id_of(function), payload, segments);
}

template <class T> void reply(const std::string& name, std::uint64_t call_id, const T& value) {
  std::vector<char> payload;
  std::vector<segment> segments;
  writer w(payload, &segments);
  mpirpc::detail::save(w, value);
  write_message("reply-" + name, wire::tag_reply, wire::kind::reply_value, 0, call_id, 99, payload,
                segments);
}

/// A batch (outbox_set::put): `header | payload` of each message back to back.
void batch(const std::string& name, int tag, wire::kind kind, std::uint16_t flags,
           std::uint64_t function_id, const std::vector<std::vector<char>>& payloads) {
  std::vector<char> all;
  std::uint64_t call = 1;
  for (const std::vector<char>& p : payloads) {
    wire::header h{};
    h.magic = wire::magic;
    h.version = wire::version;
    h.kind = static_cast<std::uint8_t>(kind);
    h.flags = flags;
    h.call_id = (flags & wire::request_one_way) ? 0 : call++;
    h.function_id = function_id;
    h.payload_size = p.size();
    const char* b = reinterpret_cast<const char*>(&h);
    all.insert(all.end(), b, b + sizeof h);
    all.insert(all.end(), p.begin(), p.end());
  }
  write_message(name, tag, wire::kind::batch, 0, payloads.size(), 0, all, {});
}

std::vector<char> string_payload(const std::string& text) {
  std::vector<char> payload;
  writer w(payload);
  mpirpc::detail::save(w, text);
  return payload;
}

void void_reply() {
  write_message("reply-void", wire::tag_reply, wire::kind::reply_value, 0, fuzz::void_call_id, 99,
                {}, {});
}

void error_reply() {
  std::vector<char> payload;
  writer w(payload);
  w.write_plain<std::uint8_t>(static_cast<std::uint8_t>(wire::error_code::remote_exception));
  mpirpc::detail::save(w, std::string("worker1"));
  mpirpc::detail::save(w, std::string("std::runtime_error"));
  mpirpc::detail::save(w, std::string("something went wrong"));
  write_message("reply-error", wire::tag_reply, wire::kind::reply_error, 0, 1, 99, payload, {});
}

fuzz::user_record sample_record() {
  return fuzz::user_record{"record", {1.5, -2.0, 1e300}, {{"alpha", 1}, {"beta", -2}}};
}

fuzz::user_nested sample_nested() {
  fuzz::user_nested n;
  n.base = sample_record();
  n.notes = {"first", "", "third"};
  n.level = 7;
  n.flag = true;
  n.labelled = {3, "three"};
  n.added_in_version_2 = 1234567890123;
  return n;
}

fuzz::user_graph sample_graph() {
  fuzz::user_graph g;
  g.first = std::make_shared<fuzz::user_record>(sample_record());
  g.second = g.first;
  auto c = std::make_shared<fuzz::circle>();
  c->id = 3;
  c->radius = 0.5;
  auto s = std::make_shared<fuzz::shape>();
  s->id = 4;
  g.shapes = {c, s, c, nullptr};
  return g;
}

fuzz::rref_stand_in sample_rref(std::uint64_t id, std::uint32_t owner, std::uint64_t weight) {
  fuzz::rref_stand_in r;
  r.bytes = wire::wire_rref{id, owner, 1, weight};
  return r;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  g_dir = argv[1];
  MPI_Init(&argc, &argv);

  const std::uint64_t one_of_rank0 = 1;                            // object id 0:1
  const std::uint64_t one_of_rank2 = (std::uint64_t(2) << 40) | 5; // object id 2:5

  // Requests with flags 0, one per argument list.
  request("ints", "fuzz::ints", 0, {}, 42, 3.5, std::uint64_t(1) << 40, 'x', true);
  request("string", "fuzz::string", 0, {}, std::string("hello, world"));
  request("string-empty", "fuzz::string", 0, {}, std::string());
  request("string-large", "fuzz::string", 0, {}, std::string(40000, 's'));
  request("vector-double", "fuzz::vector_double", 0, {}, std::vector<double>{1, 2.5, -3});
  request("vector-double-large", "fuzz::vector_double", 0, {},
          std::vector<double>(mpirpc::large_payload_threshold / sizeof(double), 0.25));
  request("vector-string", "fuzz::vector_string", 0, {},
          std::vector<std::string>{"a", "", "ccc", "dddd"});
  request("vector-string-large", "fuzz::vector_string", 0, {},
          std::vector<std::string>{"small", std::string(33000, 'L'), "tail"});
  request("map", "fuzz::map", 0, {}, fuzz::map_si{{"one", 1}, {"two", 2}, {"", -1}});
  request("optional", "fuzz::optional", 0, {}, std::optional<int>(5),
          std::optional<std::string>("present"));
  request("optional-empty", "fuzz::optional", 0, {}, std::optional<int>(),
          std::optional<std::string>());
  request("tuple-pair", "fuzz::tuple_pair", 0, {}, fuzz::tuple_isd{1, "two", 3.0},
          fuzz::pair_svi{"four", {5, 6, 7}});
  fuzz::plain_point p;
  std::memset(&p, 0, sizeof p); // padding too: the corpus is the same on every run
  p.id = 9;
  p.x = 1.0;
  p.y = -1.0;
  std::memcpy(p.tag, "abcd", 4);
  p.color = 200;
  request("plain-struct", "fuzz::plain_struct", 0, {}, p, fuzz::array_p2{p, p});
  request("boost", "fuzz::boost", 0, {}, sample_record());
  request("boost-empty", "fuzz::boost", 0, {}, fuzz::user_record{});
  request("boost-nested", "fuzz::boost_nested", 0, {}, sample_nested(),
          std::vector<fuzz::user_record>{sample_record(), fuzz::user_record{}});
  request("boost-pointers", "fuzz::boost_pointers", 0, {}, sample_graph());
  request("rref", "fuzz::rref", 0, {}, sample_rref(one_of_rank2, 2, std::uint64_t(1) << 32),
          std::vector<fuzz::rref_stand_in>{sample_rref(one_of_rank0, 0, 1), fuzz::rref_stand_in{}});
  request("mixed", "fuzz::mixed", 0, {}, fuzz::vvd{{1, 2}, {}, {3}},
          fuzz::umap_is{{1, "one"}, {-1, "minus one"}}, fuzz::array_s2{"x", "y"},
          std::vector<bool>{true, false, true});

  // Flagged requests: the rref prefix (docs/wire.md, "Flagged requests").
  const std::uint64_t creation = wire::initial_weight;
  request("creates-rref", "fuzz::string", wire::request_creates_rref, {one_of_rank0, creation},
          std::string("made remotely"));
  request("on-rref-member", "counter::add", wire::request_on_rref, {one_of_rank2, 1}, 2);
  request("both-flags", "counter::add", wire::request_on_rref | wire::request_creates_rref,
          {one_of_rank0 + 1, creation, one_of_rank2, 1}, 3);
  request("member-without-object", "counter::add", 0, {}, 4);

  // The internal functions of the rref protocol.
  request("to-here", "mpirpc::rref::to_here", 0, {one_of_rank0, 1});
  request("release", "mpirpc::rref::release", 0, {one_of_rank2, std::uint64_t(1) << 31});
  request("replenish", "mpirpc::rref::replenish", 0, {one_of_rank2, wire::replenish_weight});

  // Replies, one per result type, and an error reply.
  reply("int", 1, 17);
  reply("string", 2, std::string("result text"));
  reply("vector-double", 3, std::vector<double>{0.5, 0.25});
  reply("vector-double-large", 3,
        std::vector<double>(mpirpc::large_payload_threshold / sizeof(double) + 1, 2.0));
  reply("map", 4, fuzz::map_si{{"k", 1}});
  reply("boost", 5, sample_record());
  void_reply();
  batch("batch-requests", wire::tag_request, wire::kind::request, 0,
        mpirpc::detail::function_id_of("fuzz::string"),
        {string_payload("one"), string_payload(""), string_payload("three")});
  batch("batch-one-way", wire::tag_request, wire::kind::request, wire::request_one_way,
        mpirpc::detail::function_id_of("fuzz::string"),
        {string_payload("ff"), string_payload("ff2")});
  reply("optional", 7, std::optional<std::string>("maybe"));
  reply("vector-string", 8, std::vector<std::string>{"r1", "r2"});
  reply("rref", 9, sample_rref(one_of_rank2, 2, 7));
  reply("boost-nested", 10, sample_nested());
  reply("tuple", 11, fuzz::tuple_isd{-1, "tuple", 0.125});
  reply("boost-pointers", 12, sample_graph());
  error_reply();

  std::printf("make_corpus: wrote %d messages to %s\n", g_written, g_dir.c_str());
  MPI_Finalize();
  return 0;
}
