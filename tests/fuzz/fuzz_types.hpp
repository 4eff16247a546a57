// SPDX-License-Identifier: MIT
// The functions and results the decoder's fuzz target knows (tests/fuzz/fuzz_decoder.cpp), and
// the values its seed corpus encodes (tests/fuzz/make_corpus.cpp): one argument list per
// function name, one result type per call id, covering every path of serialization.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/serialization/base_object.hpp>
#include <boost/serialization/export.hpp>
#include <boost/serialization/shared_ptr.hpp>
#include <boost/serialization/version.hpp>

#include <mpirpc/serialization.hpp>

#include "rref/rref_wire.hpp"

namespace fuzz {

/// Trivially copyable: the fast path, its bytes.
struct plain_point {
  int id;
  double x;
  double y;
  char tag[4];
  std::uint8_t color;
};
static_assert(std::is_trivially_copyable_v<plain_point>);

/// The Boost path: a member serialize() with a string and containers.
struct user_record {
  std::string name;
  std::vector<double> values;
  std::map<std::string, int> counts;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& name& values& counts; }
};

/// The Boost path with a class version, a nested class, a bool and a pair.
struct user_nested {
  user_record base;
  std::vector<std::string> notes;
  int level = 0;
  bool flag = false;
  std::pair<int, std::string> labelled;
  long added_in_version_2 = 0;
  template <class Archive> void serialize(Archive& ar, unsigned version) {
    ar& base& notes& level& flag& labelled;
    if (version >= 2) ar& added_in_version_2;
  }
};

/// The Boost path through pointers: object tracking (two pointers to one object) and a
/// polymorphic class exported by name (class names in the archive).
struct shape {
  virtual ~shape() = default;
  int id = 0;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& id; }
};
struct circle : shape {
  double radius = 0;
  template <class Archive> void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<shape>(*this) & radius;
  }
};
struct user_graph {
  std::shared_ptr<user_record> first;
  std::shared_ptr<user_record> second; ///< often the same object as first
  std::vector<std::shared_ptr<shape>> shapes;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& first& second& shapes; }
};

/// Stands for an mpirpc::rref<T> inside a payload: its 24-byte encoding, decoded with the
/// library's own checks (lib/rref/rref_wire.hpp) against a world of `workers` ranks; what rref_table
/// adds (a record's owner) needs a running engine.
struct rref_stand_in {
  mpirpc::detail::wire::wire_rref bytes{};
  ~rref_stand_in() {} // not trivially copyable, like rref<T>: element by element in containers
  rref_stand_in() = default;
  rref_stand_in(const rref_stand_in&) = default;
  rref_stand_in& operator=(const rref_stand_in&) = default;
};
inline constexpr std::size_t workers = 4;

/// What a registered function is to the decoder (see receiver::run_request, rref_table::serve).
enum class kind { function, member, fetch, release, replenish };

} // namespace fuzz

BOOST_CLASS_VERSION(fuzz::user_nested, 2)
BOOST_CLASS_EXPORT(fuzz::circle)

namespace mpirpc::detail {
template <> struct composite_serializable<fuzz::rref_stand_in> : std::true_type {};
template <> struct codec<fuzz::rref_stand_in, void> {
  static constexpr std::size_t min_wire_size = 24;
  static void save(writer& w, const fuzz::rref_stand_in& r) { w.write_plain(r.bytes); }
  static void load(reader& in, fuzz::rref_stand_in& r) {
    r.bytes = wire::read_rref(in, fuzz::workers);
  }
};
} // namespace mpirpc::detail

namespace fuzz {

// Argument lists, one per function the fuzz target knows. FUZZ_FUNCTIONS(X) calls
// X(name, kind, argument types...) for each.
using map_si = std::map<std::string, int>;
using umap_is = std::unordered_map<int, std::string>;
using tuple_isd = std::tuple<int, std::string, double>;
using pair_svi = std::pair<std::string, std::vector<int>>;
using vvd = std::vector<std::vector<double>>;
using array_s2 = std::array<std::string, 2>;
using array_p2 = std::array<plain_point, 2>;

#define FUZZ_FUNCTIONS(X)                                                                          \
  X("fuzz::ints", function, int, double, std::uint64_t, char, bool)                                \
  X("fuzz::string", function, std::string)                                                         \
  X("fuzz::vector_double", function, std::vector<double>)                                          \
  X("fuzz::vector_string", function, std::vector<std::string>)                                     \
  X("fuzz::map", function, map_si)                                                                 \
  X("fuzz::optional", function, std::optional<int>, std::optional<std::string>)                    \
  X("fuzz::tuple_pair", function, tuple_isd, pair_svi)                                             \
  X("fuzz::plain_struct", function, plain_point, array_p2)                                         \
  X("fuzz::boost", function, user_record)                                                          \
  X("fuzz::boost_nested", function, user_nested, std::vector<user_record>)                         \
  X("fuzz::boost_pointers", function, user_graph)                                                  \
  X("fuzz::rref", function, rref_stand_in, std::vector<rref_stand_in>)                             \
  X("fuzz::mixed", function, vvd, umap_is, array_s2, std::vector<bool>)                            \
  X("counter::add", member, int)                                                                   \
  X("mpirpc::rref::to_here", fetch)                                                                \
  X("mpirpc::rref::release", release)                                                              \
  X("mpirpc::rref::replenish", replenish)

// Result types, by call id (a reply's decoder is chosen by the pending call it answers).
// FUZZ_RESULTS(X) calls X(call id, type) for each; void is call id 6.
#define FUZZ_RESULTS(X)                                                                            \
  X(1, int)                                                                                        \
  X(2, std::string)                                                                                \
  X(3, std::vector<double>)                                                                        \
  X(4, map_si)                                                                                     \
  X(5, user_record)                                                                                \
  X(7, std::optional<std::string>)                                                                 \
  X(8, std::vector<std::string>)                                                                   \
  X(9, rref_stand_in)                                                                              \
  X(10, user_nested)                                                                               \
  X(11, tuple_isd)                                                                                 \
  X(12, user_graph)
inline constexpr std::uint64_t void_call_id = 6;

} // namespace fuzz
