// SPDX-License-Identifier: MIT
// mpirpc/serialization.hpp: codec round trips, is_serializable, out-of-line buffers, bad input.
#include <catch2/catch.hpp>

#include <array>
#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <boost/mpi/packed_oarchive.hpp>
#include <boost/serialization/array_wrapper.hpp>
#include <boost/serialization/base_object.hpp>
#include <boost/serialization/export.hpp>
#include <boost/serialization/shared_ptr.hpp>

#include <mpirpc/serialization.hpp>

namespace test_types {

enum class color : std::uint8_t { red = 1, green = 2, blue = 200 };
enum legacy_enum { first = -3, second = 70000 };

struct plain_record {
  int id;
  double weight;
  char code[3];
  color tint;
};
static_assert(std::is_trivially_copyable_v<plain_record>);

/// Not trivially copyable; Boost path through a member serialize().
struct member_point {
  double x = 0;
  double y = 0;
  std::string label;
  std::vector<int> tags;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& x& y& label& tags; }
  bool operator==(const member_point& o) const {
    return x == o.x && y == o.y && label == o.label && tags == o.tags;
  }
};

/// Boost path with wide strings (Boost.MPI's packed archive wrote only size() bytes of them).
struct wide_labels {
  std::wstring wide;
  std::string narrow; // after the wide one: a short read of it would misplace this
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& wide& narrow; }
  bool operator==(const wide_labels& o) const { return wide == o.wide && narrow == o.narrow; }
};

/// Boost path through a free serialize() found by argument-dependent lookup.
struct adl_named {
  std::string name;
  std::map<std::string, int> counts;
  bool operator==(const adl_named& o) const { return name == o.name && counts == o.counts; }
};
template <class Archive> void serialize(Archive& ar, adl_named& v, unsigned) {
  ar& v.name& v.counts;
}

/// Not serializable: not trivially copyable and no serialize().
struct holds_string {
  std::string text;
};

/// Boost path; its serialize() throws when told to, on save or on load.
struct picky {
  std::string text;
  static inline bool refuse_loads = false;
  template <class Archive> void serialize(Archive& ar, unsigned) {
    if constexpr (Archive::is_saving::value) {
      if (text == "refuse") throw std::runtime_error("refusing to save");
    } else {
      if (refuse_loads) throw std::runtime_error("refusing to load");
    }
    ar& text;
  }
};

/// Boost path holding only a string.
struct boxed_text {
  std::string text;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& text; }
};

/// Boost path through pointers: a polymorphic class exported by name, and tracking (one object
/// reached through two pointers).
struct animal {
  virtual ~animal() = default;
  std::string name;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& name; }
};
struct dog : animal {
  int barks = 0;
  template <class Archive> void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::base_object<animal>(*this) & barks;
  }
};
struct zoo {
  std::vector<std::shared_ptr<animal>> animals;
  std::shared_ptr<animal> favourite;
  template <class Archive> void serialize(Archive& ar, unsigned) { ar& animals& favourite; }
};

} // namespace test_types

BOOST_CLASS_EXPORT(test_types::dog)

namespace elsewhere {
/// Its serialize() lives in boost::serialization, where mpirpc's ADL check cannot see it.
struct opted_in {
  std::string text;
  long value = 0;
  bool operator==(const opted_in& o) const { return text == o.text && value == o.value; }
};
} // namespace elsewhere

namespace boost::serialization {
template <class Archive> void serialize(Archive& ar, elsewhere::opted_in& v, unsigned) {
  ar& v.text& v.value;
}
} // namespace boost::serialization

// Without the opt-in the type would be rejected (checked below via the detectors).
template <> struct mpirpc::is_serializable<elsewhere::opted_in> : std::true_type {};

using namespace test_types;
using mpirpc::is_serializable_v;
using mpirpc::serialization_error;
using mpirpc::detail::reader;
using mpirpc::detail::segment;
using mpirpc::detail::segment_source;
using mpirpc::detail::writer;

// ---- compile-time classification

static_assert(is_serializable_v<int>);
static_assert(is_serializable_v<double>);
static_assert(is_serializable_v<color>);
static_assert(is_serializable_v<legacy_enum>);
static_assert(is_serializable_v<plain_record>);
static_assert(is_serializable_v<std::array<int, 4>>);
static_assert(is_serializable_v<std::array<std::string, 2>>);
static_assert(is_serializable_v<std::string>);
static_assert(is_serializable_v<std::vector<double>>);
static_assert(is_serializable_v<std::vector<bool>>);
static_assert(is_serializable_v<std::vector<std::string>>);
static_assert(is_serializable_v<std::vector<std::vector<int>>>);
static_assert(is_serializable_v<std::pair<int, std::string>>);
static_assert(is_serializable_v<std::tuple<int, std::string, double>>);
static_assert(is_serializable_v<std::map<std::string, std::vector<int>>>);
static_assert(is_serializable_v<std::unordered_map<int, std::string>>);
static_assert(is_serializable_v<std::optional<std::string>>);
static_assert(is_serializable_v<member_point>);
static_assert(is_serializable_v<adl_named>);
static_assert(is_serializable_v<elsewhere::opted_in>);
static_assert(is_serializable_v<std::vector<member_point>>);

static_assert(!is_serializable_v<int*>);
static_assert(!is_serializable_v<const char*>);
static_assert(!is_serializable_v<plain_record*>);
static_assert(!is_serializable_v<std::nullptr_t>);
static_assert(!is_serializable_v<int plain_record::*>);
static_assert(!is_serializable_v<holds_string>);
static_assert(!is_serializable_v<std::vector<holds_string>>);
static_assert(!is_serializable_v<std::vector<int*>>);
static_assert(!is_serializable_v<std::pair<int, holds_string>>);
static_assert(!is_serializable_v<std::tuple<int, int*>>);
static_assert(!is_serializable_v<std::map<int, holds_string>>);
static_assert(!is_serializable_v<std::optional<holds_string>>);
static_assert(!is_serializable_v<std::array<holds_string, 1>>);

// The opt-in is what makes elsewhere::opted_in serializable: neither detector finds it.
static_assert(!mpirpc::detail::has_member_serialize<elsewhere::opted_in>::value);
static_assert(!mpirpc::detail::has_adl_serialize<elsewhere::opted_in>::value);
static_assert(mpirpc::detail::has_member_serialize<member_point>::value);
static_assert(mpirpc::detail::has_adl_serialize<adl_named>::value);

namespace {

/// Encodes `value` inline (no segment list) and returns the message bytes.
template <class T> std::vector<char> encode(const T& value) {
  std::vector<char> bytes;
  writer w(bytes);
  mpirpc::detail::save(w, value);
  return bytes;
}

/// Decodes a T from `bytes`, requiring that the whole message is consumed.
template <class T> T decode(const std::vector<char>& bytes, segment_source* segments = nullptr) {
  reader r(bytes.data(), bytes.size(), segments);
  T out{};
  mpirpc::detail::load(r, out);
  REQUIRE(r.remaining() == 0);
  return out;
}

template <class T> T round_trip(const T& value) {
  return decode<T>(encode(value));
}

/// Appends raw words to a hand-built (possibly malformed) message.
template <class T> void put(std::vector<char>& bytes, T value) {
  const std::size_t at = bytes.size();
  bytes.resize(at + sizeof(T));
  std::memcpy(bytes.data() + at, &value, sizeof(T));
}

/// Plays the transport: hands out the buffers a writer put aside, in order, and rejects a
/// request that does not match them, as the runtime's segment table does.
class fake_segment_source final : public segment_source {
public:
  explicit fake_segment_source(std::vector<segment> segments) : _segments(std::move(segments)) {}
  std::size_t next_segment_size() const override {
    if (_next >= _segments.size()) throw serialization_error("fake source: no segment left");
    return _segments[_next].bytes;
  }
  void receive_segment(void* dst, std::size_t bytes) override {
    if (_next >= _segments.size()) throw serialization_error("fake source: no segment left");
    if (_segments[_next].bytes != bytes) {
      throw serialization_error("fake source: segment of " + std::to_string(bytes) +
                                " bytes requested, " + std::to_string(_segments[_next].bytes) +
                                " available");
    }
    std::memcpy(dst, _segments[_next].data, bytes);
    ++_next;
  }
  std::size_t delivered() const { return _next; }

private:
  std::vector<segment> _segments;
  std::size_t _next = 0;
};

enum class child_outcome { serialization_error, other_exception, no_exception, crashed };

/// Runs `f` in a forked child and reports how it ended: for inputs that make the library read
/// out of bounds or attempt a huge allocation (after a failed huge allocation, Open MPI may
/// abort at exit; see the report). The child touches no MPI and leaves with _exit.
template <class F> child_outcome run_in_child(F&& f) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 2;
    try {
      f();
    } catch (const serialization_error&) {
      code = 0;
    } catch (...) {
      code = 1;
    }
    _exit(code);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  if (!WIFEXITED(status)) return child_outcome::crashed;
  switch (WEXITSTATUS(status)) {
  case 0:
    return child_outcome::serialization_error;
  case 1:
    return child_outcome::other_exception;
  default:
    return child_outcome::no_exception;
  }
}

} // namespace

CATCH_REGISTER_ENUM(child_outcome, child_outcome::serialization_error,
                    child_outcome::other_exception, child_outcome::no_exception,
                    child_outcome::crashed)

// ---- fast path

TEST_CASE("plain values round-trip byte for byte", "[serialization]") {
  CHECK(round_trip(0) == 0);
  CHECK(round_trip(-123456789) == -123456789);
  CHECK(round_trip(std::int64_t{1} << 62) == (std::int64_t{1} << 62));
  CHECK(round_trip(std::uint8_t{255}) == 255);
  CHECK(round_trip(3.25) == 3.25);
  CHECK(round_trip(-0.1f) == -0.1f);
  CHECK(round_trip(true) == true);
  CHECK(round_trip('z') == 'z');
  CHECK(encode(42).size() == sizeof(int));
  CHECK(encode(2.5).size() == sizeof(double));
}

TEST_CASE("enums round-trip", "[serialization]") {
  CHECK(round_trip(color::blue) == color::blue);
  CHECK(round_trip(color::red) == color::red);
  CHECK(round_trip(second) == second);
  CHECK(round_trip(first) == first);
  CHECK(encode(color::green).size() == 1);
}

TEST_CASE("a trivially copyable struct round-trips as its bytes", "[serialization]") {
  const plain_record in{17, 0.75, {'a', 'b', 'c'}, color::green};
  CHECK(encode(in).size() == sizeof(plain_record));
  const plain_record out = round_trip(in);
  CHECK(out.id == 17);
  CHECK(out.weight == 0.75);
  CHECK(std::string(out.code, 3) == "abc");
  CHECK(out.tint == color::green);
}

TEST_CASE("std::array of plain and of composite elements round-trips", "[serialization]") {
  const std::array<int, 4> ints{1, -2, 3, -4};
  CHECK(encode(ints).size() == sizeof(ints));
  CHECK(round_trip(ints) == ints);

  const std::array<double, 0> none{};
  CHECK(encode(none).size() == sizeof(none));
  CHECK(round_trip(none) == none);

  const std::array<std::string, 3> words{"", "one", std::string(300, 'w')};
  CHECK(round_trip(words) == words);
}

TEST_CASE("std::string round-trips: empty, short, and large without segments", "[serialization]") {
  SECTION("empty") {
    const std::string s;
    CHECK(encode(s).size() == 8);
    CHECK(round_trip(s).empty());
  }
  SECTION("short, with embedded NUL") {
    const std::string s("ab\0cd", 5);
    CHECK(encode(s).size() == 8 + 5);
    CHECK(round_trip(s) == s);
  }
  SECTION("large, inline because the writer has no segment list") {
    std::string s(mpirpc::large_payload_threshold + 17, '\0');
    for (std::size_t i = 0; i < s.size(); ++i)
      s[i] = static_cast<char>('a' + i % 26);
    const std::vector<char> bytes = encode(s);
    CHECK(bytes.size() == 8 + s.size());
    std::uint64_t word = 0;
    std::memcpy(&word, bytes.data(), 8);
    CHECK((word & writer::out_of_line_bit) == 0);
    CHECK(word == s.size());
    CHECK(decode<std::string>(bytes) == s);
  }
  SECTION("exactly the threshold, inline") {
    const std::string s(mpirpc::large_payload_threshold, 'x');
    CHECK(encode(s).size() == 8 + s.size());
    CHECK(round_trip(s) == s);
  }
}

TEST_CASE("std::vector of plain values is a length and its bytes", "[serialization]") {
  const std::vector<double> v{1.5, -2.25, 1e300, 0.0};
  CHECK(encode(v).size() == 8 + v.size() * sizeof(double));
  CHECK(round_trip(v) == v);

  CHECK(round_trip(std::vector<int>{}).empty());
  CHECK(encode(std::vector<int>{}).size() == 8);

  const std::vector<plain_record> records{{1, 1.0, {'x', 'y', 'z'}, color::red},
                                          {2, 2.0, {'p', 'q', 'r'}, color::blue}};
  const auto back = round_trip(records);
  REQUIRE(back.size() == 2);
  CHECK(back[1].id == 2);
  CHECK(back[1].tint == color::blue);
  CHECK(std::string(back[0].code, 3) == "xyz");

  // Decoding replaces previous content instead of appending to it.
  const auto bytes = encode(std::vector<int>{7, 8});
  reader r(bytes.data(), bytes.size());
  std::vector<int> target{1, 2, 3, 4, 5};
  mpirpc::detail::load(r, target);
  CHECK(target == std::vector<int>{7, 8});
}

TEST_CASE("std::vector<bool> round-trips element by element", "[serialization]") {
  const std::vector<bool> bits{true, false, false, true, true, false, true};
  CHECK(round_trip(bits) == bits);
  CHECK(round_trip(std::vector<bool>{}).empty());
  std::vector<bool> many(1000);
  for (std::size_t i = 0; i < many.size(); ++i)
    many[i] = (i * 7) % 3 == 0;
  CHECK(round_trip(many) == many);
}

TEST_CASE("vectors of strings and nested vectors round-trip", "[serialization]") {
  const std::vector<std::string> words{"alpha", "", "gamma", std::string(1000, 'd')};
  CHECK(round_trip(words) == words);

  const std::vector<std::vector<int>> nested{{1, 2, 3}, {}, {4}, std::vector<int>(500, 9)};
  CHECK(round_trip(nested) == nested);

  const std::vector<std::vector<std::string>> deeper{{"a", "b"}, {}, {"", "c"}};
  CHECK(round_trip(deeper) == deeper);
}

// ---- composites

TEST_CASE("pair and tuple round-trip", "[serialization]") {
  const std::pair<int, std::string> p{42, "answer"};
  CHECK(round_trip(p) == p);

  const std::pair<int, double> plain_pair{-1, 0.5};
  CHECK(round_trip(plain_pair) == plain_pair);

  const std::tuple<int, std::string, std::vector<double>, color> t{
      7, "seven", {7.0, 0.7}, color::blue};
  CHECK(round_trip(t) == t);

  const std::tuple<> empty;
  CHECK(round_trip(empty) == empty);
}

TEST_CASE("map and unordered_map round-trip", "[serialization]") {
  const std::map<std::string, std::vector<int>> m{{"a", {1}}, {"b", {}}, {"long key", {2, 3}}};
  CHECK(round_trip(m) == m);
  CHECK(round_trip(std::map<int, int>{}).empty());

  std::unordered_map<int, std::string> u;
  for (int i = 0; i < 100; ++i)
    u.emplace(i * 31, std::to_string(i));
  CHECK(round_trip(u) == u);

  // Decoding replaces previous content.
  const auto bytes = encode(std::map<int, int>{{1, 10}});
  reader r(bytes.data(), bytes.size());
  std::map<int, int> target{{5, 50}, {6, 60}};
  mpirpc::detail::load(r, target);
  CHECK(target == std::map<int, int>{{1, 10}});
}

TEST_CASE("optional round-trips present and absent", "[serialization]") {
  const std::optional<std::string> present{"here"};
  CHECK(round_trip(present) == present);
  const std::optional<std::string> absent;
  CHECK(encode(absent).size() == 1);
  CHECK_FALSE(round_trip(absent).has_value());

  // An absent value decoded into an engaged optional resets it.
  const auto bytes = encode(absent);
  reader r(bytes.data(), bytes.size());
  std::optional<std::string> target{"stale"};
  mpirpc::detail::load(r, target);
  CHECK_FALSE(target.has_value());

  const std::vector<std::optional<int>> mixed{1, std::nullopt, 3};
  CHECK(round_trip(mixed) == mixed);
}

// ---- Boost path

TEST_CASE("a struct with a member serialize() round-trips through Boost", "[serialization]") {
  const member_point in{1.5, -2.5, "corner", {1, 2, 3}};
  const member_point out = round_trip(in);
  CHECK(out == in);

  const std::vector<member_point> many{in, member_point{}, {0, 9, std::string(2000, 'q'), {}}};
  CHECK(round_trip(many) == many);

  const std::map<int, member_point> keyed{{1, in}, {2, member_point{}}};
  CHECK(round_trip(keyed) == keyed);
}

TEST_CASE("wide strings inside a Boost type arrive whole", "[serialization]") {
  const wide_labels in{L"wide \u00e9t\u00e9 label", "narrow"};
  CHECK(round_trip(in) == in);
  CHECK(round_trip(wide_labels{}) == wide_labels{});
}

TEST_CASE("a struct with a free ADL serialize() round-trips through Boost", "[serialization]") {
  const adl_named in{"tally", {{"x", 1}, {"y", -2}}};
  CHECK(round_trip(in) == in);
  const std::optional<adl_named> wrapped{in};
  CHECK(round_trip(wrapped) == wrapped);
}

TEST_CASE("pointers, shared objects and exported derived classes round-trip through Boost",
          "[serialization]") {
  zoo in;
  auto rex = std::make_shared<dog>();
  rex->name = "rex";
  rex->barks = 3;
  auto generic = std::make_shared<animal>();
  generic->name = "generic";
  in.animals = {rex, generic, nullptr};
  in.favourite = rex;
  const zoo out = round_trip(in);
  REQUIRE(out.animals.size() == 3);
  const auto* back = dynamic_cast<const dog*>(out.animals[0].get());
  REQUIRE(back != nullptr);
  CHECK(back->name == "rex");
  CHECK(back->barks == 3);
  CHECK(out.animals[1]->name == "generic");
  CHECK(dynamic_cast<const dog*>(out.animals[1].get()) == nullptr);
  CHECK(out.animals[2] == nullptr);
  CHECK(out.favourite == out.animals[0]); // one object, tracked
}

TEST_CASE("a corrupted archive with pointers decodes or throws, never crashes",
          "[serialization][archive]") {
  // Boost's own loader trusts class ids and object ids; checked_iarchive checks them (see
  // checked_iarchive.hpp). Every byte of the archive is set to values that make ids forged.
  zoo in;
  auto rex = std::make_shared<dog>();
  rex->name = "rex";
  auto generic = std::make_shared<animal>();
  in.animals = {rex, generic, rex, nullptr};
  in.favourite = generic;
  const std::vector<char> bytes = encode(in);
  int refused = 0;
  for (std::size_t i = 8; i < bytes.size(); ++i) {
    for (const int value : {0x00, 0x01, 0x02, 0x05, 0x7f, 0x80, 0xff}) {
      std::vector<char> forged = bytes;
      forged[i] = static_cast<char>(value);
      reader r(forged.data(), forged.size());
      zoo out;
      try {
        mpirpc::detail::load(r, out);
      } catch (const serialization_error&) {
        ++refused;
      }
    }
  }
  CHECK(refused > 0);
  CHECK(decode<zoo>(bytes).animals.size() == 4);
}

TEST_CASE("a type opted in through is_serializable round-trips through Boost", "[serialization]") {
  const elsewhere::opted_in in{"opted", 123456789L};
  CHECK(round_trip(in) == in);
  const std::pair<elsewhere::opted_in, int> p{in, 5};
  CHECK(round_trip(p) == p);
}

TEST_CASE("values follow each other in one message", "[serialization]") {
  std::vector<char> bytes;
  writer w(bytes);
  mpirpc::detail::save(w, 5);
  mpirpc::detail::save(w, std::string("mid"));
  mpirpc::detail::save(w, member_point{1, 2, "p", {}});
  mpirpc::detail::save(w, 2.5);

  reader r(bytes.data(), bytes.size());
  int a = 0;
  std::string b;
  member_point c;
  double d = 0;
  mpirpc::detail::load(r, a);
  mpirpc::detail::load(r, b);
  mpirpc::detail::load(r, c);
  mpirpc::detail::load(r, d);
  CHECK(a == 5);
  CHECK(b == "mid");
  CHECK(c == member_point{1, 2, "p", {}});
  CHECK(d == 2.5);
  CHECK(r.remaining() == 0);
  CHECK(r.position() == bytes.size());
}

// ---- out-of-line buffers

TEST_CASE("a writer with a segment list puts a large vector out of line", "[serialization]") {
  std::vector<double> big(mpirpc::large_payload_threshold / sizeof(double) + 100);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<double>(i) * 0.5;
  const std::vector<int> small{1, 2, 3};

  std::vector<char> bytes;
  std::vector<segment> segments;
  writer w(bytes, &segments);
  mpirpc::detail::save(w, small);
  mpirpc::detail::save(w, big);
  mpirpc::detail::save(w, 99);

  // Inline: small vector (8 + 12), the marker word of the large one (8), the int (4).
  CHECK(bytes.size() == 8 + small.size() * sizeof(int) + 8 + sizeof(int));
  REQUIRE(segments.size() == 1);
  CHECK(segments[0].data == static_cast<const void*>(big.data())); // no copy
  CHECK(segments[0].bytes == big.size() * sizeof(double));

  fake_segment_source source(segments);
  reader r(bytes.data(), bytes.size(), &source);
  std::vector<int> small_out;
  std::vector<double> big_out;
  int tail = 0;
  mpirpc::detail::load(r, small_out);
  mpirpc::detail::load(r, big_out);
  mpirpc::detail::load(r, tail);
  CHECK(small_out == small);
  CHECK(big_out == big);
  CHECK(tail == 99);
  CHECK(source.delivered() == 1);
  CHECK(r.remaining() == 0);
}

TEST_CASE("large strings inside composites go out of line, each in order", "[serialization]") {
  const std::vector<std::string> strings{std::string(mpirpc::large_payload_threshold, 'a'), "tiny",
                                         std::string(mpirpc::large_payload_threshold * 2, 'b')};
  std::vector<char> bytes;
  std::vector<segment> segments;
  writer w(bytes, &segments);
  mpirpc::detail::save(w, strings);
  REQUIRE(segments.size() == 2);
  CHECK(segments[0].bytes == strings[0].size());
  CHECK(segments[1].bytes == strings[2].size());
  CHECK(bytes.size() < 100);

  fake_segment_source source(segments);
  CHECK(decode<std::vector<std::string>>(bytes, &source) == strings);
  CHECK(source.delivered() == 2);
}

TEST_CASE("writer::inline_only keeps large buffers inline while it lives", "[serialization]") {
  const std::vector<int> big(mpirpc::large_payload_threshold / sizeof(int) * 2, 7);
  std::vector<char> bytes;
  std::vector<segment> segments;
  writer w(bytes, &segments);
  {
    const writer::inline_only guard(w);
    mpirpc::detail::save(w, big);
  }
  CHECK(segments.empty());
  CHECK(bytes.size() == 8 + big.size() * sizeof(int));
  mpirpc::detail::save(w, big); // the guard is gone: out of line again
  REQUIRE(segments.size() == 1);
  CHECK(bytes.size() == 8 + big.size() * sizeof(int) + 8);

  fake_segment_source source(segments);
  reader r(bytes.data(), bytes.size(), &source);
  std::vector<int> first, second;
  mpirpc::detail::load(r, first);
  mpirpc::detail::load(r, second);
  CHECK(first == big);
  CHECK(second == big);
  CHECK(source.delivered() == 1);
  CHECK(r.remaining() == 0);
}

TEST_CASE("buffers below the threshold stay inline even with a segment list", "[serialization]") {
  const std::vector<char> just_below(mpirpc::large_payload_threshold - 1, 'k');
  std::vector<char> bytes;
  std::vector<segment> segments;
  writer w(bytes, &segments);
  mpirpc::detail::save(w, just_below);
  CHECK(segments.empty());
  CHECK(bytes.size() == 8 + just_below.size());
  CHECK(decode<std::vector<char>>(bytes) == just_below);
}

// ---- malformed input

TEST_CASE("a truncated message throws serialization_error saying what is short",
          "[serialization]") {
  SECTION("a plain value") {
    const std::vector<char> bytes(2, '\0');
    reader r(bytes.data(), bytes.size());
    int v = 0;
    CHECK_THROWS_AS(mpirpc::detail::load(r, v), serialization_error);
    reader r2(bytes.data(), bytes.size());
    CHECK_THROWS_WITH(mpirpc::detail::load(r2, v),
                      Catch::Contains("malformed message") &&
                          Catch::Contains("needs 4 more bytes, only 2 left"));
  }
  SECTION("an empty message") {
    const std::vector<char> bytes;
    CHECK_THROWS_WITH(decode<double>(bytes), Catch::Contains("needs 8 more bytes, only 0 left"));
  }
  SECTION("a string missing its last byte") {
    std::vector<char> bytes = encode(std::string("hello"));
    bytes.pop_back();
    CHECK_THROWS_AS(decode<std::string>(bytes), serialization_error);
    CHECK_THROWS_WITH(decode<std::string>(bytes),
                      Catch::Contains("needs 5 more bytes, only 4 left"));
  }
  SECTION("a length word cut short") {
    std::vector<char> bytes = encode(std::vector<int>{1, 2});
    bytes.resize(5);
    CHECK_THROWS_WITH(decode<std::vector<int>>(bytes),
                      Catch::Contains("needs 8 more bytes, only 5 left"));
  }
  SECTION("a map missing its last value") {
    std::vector<char> bytes = encode(std::map<int, std::string>{{1, "one"}, {2, "two"}});
    bytes.resize(bytes.size() - 3);
    CHECK_THROWS_AS((decode<std::map<int, std::string>>(bytes)), serialization_error);
  }
  SECTION("a Boost archive cut short") {
    std::vector<char> bytes = encode(member_point{1, 2, "label", {1, 2}});
    bytes.resize(bytes.size() - 1);
    CHECK_THROWS_AS(decode<member_point>(bytes), serialization_error);
    CHECK_THROWS_WITH(decode<member_point>(bytes), Catch::Contains("exceeds the message"));
  }
  SECTION("the error names the position") {
    std::vector<char> bytes = encode(std::pair<int, std::string>{1, "abc"});
    bytes.pop_back();
    CHECK_THROWS_WITH((decode<std::pair<int, std::string>>(bytes)),
                      Catch::Contains("at byte 12 of 14"));
  }
}

TEST_CASE("a huge element count throws serialization_error", "[serialization]") {
  SECTION("vector of strings") {
    std::vector<char> bytes;
    put<std::uint64_t>(bytes, std::uint64_t{1} << 50);
    put<std::uint64_t>(bytes, 0);
    CHECK_THROWS_AS(decode<std::vector<std::string>>(bytes), serialization_error);
    CHECK_THROWS_WITH(decode<std::vector<std::string>>(bytes),
                      Catch::Contains("element count 1125899906842624 exceeds the message"));
  }
  SECTION("vector<bool>") {
    std::vector<char> bytes;
    put<std::uint64_t>(bytes, 1000);
    put<std::uint8_t>(bytes, 1);
    CHECK_THROWS_WITH(decode<std::vector<bool>>(bytes),
                      Catch::Contains("element count 1000 exceeds the message"));
  }
  SECTION("map") {
    std::vector<char> bytes;
    put<std::uint64_t>(bytes, ~std::uint64_t{0});
    CHECK_THROWS_AS((decode<std::map<int, int>>(bytes)), serialization_error);
    CHECK_THROWS_WITH((decode<std::map<int, int>>(bytes)), Catch::Contains("element count"));
  }
  SECTION("elements whose wire size has no lower bound") {
    // A pair of strings takes at least 16 bytes, but its codec declares no minimum: the count
    // must still be rejected rather than reserving memory for it.
    using element = std::pair<std::string, std::string>;
    std::vector<char> bytes;
    put<std::uint64_t>(bytes, std::uint64_t{1} << 50);
    CHECK_THROWS_WITH(decode<std::vector<element>>(bytes), Catch::Contains("element count"));
  }
}

TEST_CASE("composite elements with a large count are rejected before memory is reserved",
          "[serialization]") {
  // A count of 2^40 pairs of strings in an 8-byte message: read_count() must refuse it from
  // the elements' minimum wire size, before load() reserve()s 64 TiB. Run in a child process,
  // so that a regression (std::bad_alloc) cannot disturb this one.
  using element = std::pair<std::string, std::string>;
  std::vector<char> bytes;
  put<std::uint64_t>(bytes, std::uint64_t{1} << 40);
  const child_outcome outcome = run_in_child([&] { (void)decode<std::vector<element>>(bytes); });
  CHECK(outcome == child_outcome::serialization_error);
}

TEST_CASE("a length that is not a multiple of the element size throws", "[serialization]") {
  std::vector<char> bytes;
  put<std::uint64_t>(bytes, 7);
  bytes.resize(bytes.size() + 7);
  CHECK_THROWS_AS(decode<std::vector<int>>(bytes), serialization_error);
  CHECK_THROWS_WITH(decode<std::vector<int>>(bytes),
                    Catch::Contains("buffer length 7 is not a multiple of its element size 4"));

  std::vector<char> wide;
  put<std::uint64_t>(wide, 3);
  wide.resize(wide.size() + 3);
  CHECK_THROWS_WITH(decode<std::u16string>(wide),
                    Catch::Contains("buffer length 3 is not a multiple of its element size 2"));
}

TEST_CASE("an out-of-line marker without a segment source throws", "[serialization]") {
  std::vector<double> big(mpirpc::large_payload_threshold / sizeof(double));
  std::vector<char> bytes;
  std::vector<segment> segments;
  writer w(bytes, &segments);
  mpirpc::detail::save(w, big);
  REQUIRE(segments.size() == 1);
  CHECK_THROWS_AS(decode<std::vector<double>>(bytes), serialization_error);
  CHECK_THROWS_WITH(decode<std::vector<double>>(bytes),
                    Catch::Contains("out-of-line buffer where none may be"));

  // The same for a hand-made marker on a short string.
  std::vector<char> forged;
  put<std::uint64_t>(forged, 4 | writer::out_of_line_bit);
  CHECK_THROWS_WITH(decode<std::string>(forged),
                    Catch::Contains("out-of-line buffer where none may be"));
}

TEST_CASE("an out-of-line length that disagrees with the segment throws", "[serialization]") {
  const std::array<char, 16> payload{};
  fake_segment_source source({segment{payload.data(), payload.size()}});
  std::vector<char> forged;
  put<std::uint64_t>(forged, 64 | writer::out_of_line_bit);
  CHECK_THROWS_WITH(decode<std::string>(forged, &source),
                    Catch::Contains("64 bytes announced, but the next one carries 16"));
  CHECK(source.delivered() == 0);
}

TEST_CASE("a huge out-of-line length is rejected before memory is reserved for it",
          "[serialization]") {
  // read_buffer() must compare the announced length with the segment table before it lets
  // prepare(n) -- here std::string::resize(2^46) -- reserve memory. Run in a child process,
  // like the case above.
  const std::array<char, 16> payload{};
  fake_segment_source source({segment{payload.data(), payload.size()}});
  std::vector<char> forged;
  put<std::uint64_t>(forged, (std::uint64_t{1} << 46) | writer::out_of_line_bit);
  const child_outcome outcome = run_in_child([&] { (void)decode<std::string>(forged, &source); });
  CHECK(outcome == child_outcome::serialization_error);
}

TEST_CASE("a bad optional flag throws", "[serialization]") {
  std::vector<char> bytes;
  put<std::uint8_t>(bytes, 2);
  put<std::uint64_t>(bytes, 0);
  CHECK_THROWS_AS(decode<std::optional<std::string>>(bytes), serialization_error);
  CHECK_THROWS_WITH(decode<std::optional<std::string>>(bytes),
                    Catch::Contains("bad optional flag"));
  // A trivially copyable optional is not copied as bytes either: its flag is checked too.
  static_assert(std::is_trivially_copyable_v<std::optional<int>>);
  static_assert(!mpirpc::detail::is_plain_v<std::optional<int>>);
  std::vector<char> small;
  put<std::uint8_t>(small, 2);
  put<std::int32_t>(small, 5);
  CHECK_THROWS_WITH(decode<std::optional<int>>(small), Catch::Contains("bad optional flag"));
  CHECK(encode(std::optional<int>(5)).size() == 1 + sizeof(int));
  CHECK(encode(std::optional<int>()).size() == 1);
}

TEST_CASE("a bool other than 0 or 1 throws, alone or inside composites", "[serialization]") {
  CHECK(encode(true) == std::vector<char>{1});
  CHECK(encode(false) == std::vector<char>{0});
  const std::vector<char> two{2};
  CHECK_THROWS_WITH(decode<bool>(two),
                    Catch::Contains("bad bool 2") && Catch::Contains("(at byte 1 of 1)"));
  // A pair, tuple or array holding a bool goes member by member, not as its bytes.
  static_assert(!mpirpc::detail::is_plain_v<std::pair<int, bool>>);
  static_assert(!mpirpc::detail::is_plain_v<std::tuple<double, std::optional<char>>>);
  static_assert(!mpirpc::detail::is_plain_v<std::array<bool, 3>>);
  CHECK(round_trip(std::pair<int, bool>{7, true}) == std::pair<int, bool>{7, true});
  CHECK(encode(std::pair<int, bool>{7, true}).size() == sizeof(int) + 1);
  CHECK(round_trip(std::array<bool, 3>{true, false, true}) ==
        std::array<bool, 3>{true, false, true});
  using bools = std::array<bool, 3>;
  const std::vector<char> bad_array{1, 0, 9};
  CHECK_THROWS_WITH(decode<bools>(bad_array), Catch::Contains("bad bool 9"));
  std::vector<char> bad_vector;
  put<std::uint64_t>(bad_vector, 2);
  put<std::uint8_t>(bad_vector, 1);
  put<std::uint8_t>(bad_vector, 255);
  CHECK_THROWS_WITH(decode<std::vector<bool>>(bad_vector), Catch::Contains("bad bool 255"));
}

TEST_CASE("an exception inside Boost serialization becomes serialization_error",
          "[serialization]") {
  picky in{"fine"};
  const std::vector<char> bytes = encode(in);
  CHECK(decode<picky>(bytes).text == "fine");

  in.text = "refuse";
  CHECK_THROWS_AS(encode(in), serialization_error);
  CHECK_THROWS_WITH(encode(in), Catch::Contains("could not serialize") &&
                                    Catch::Contains("test_types::picky") &&
                                    Catch::Contains("refusing to save"));

  // An aborted save leaves nothing behind: the next value encodes normally.
  std::vector<char> out;
  writer w(out);
  CHECK_THROWS_AS(mpirpc::detail::save(w, in), serialization_error);
  CHECK(out.empty());
  mpirpc::detail::save(w, picky{"after"});
  CHECK(decode<picky>(out).text == "after");

  picky::refuse_loads = true;
  CHECK_THROWS_AS(decode<picky>(bytes), serialization_error);
  CHECK_THROWS_WITH(decode<picky>(bytes), Catch::Contains("could not deserialize") &&
                                              Catch::Contains("test_types::picky") &&
                                              Catch::Contains("refusing to load"));
  picky::refuse_loads = false;
}

TEST_CASE("a string inside a Boost archive longer than the archive throws", "[serialization]") {
  // The archive of boxed_text is [2 bytes class info][u32 length][bytes]. Claim 4096 bytes
  // where 3 follow; the outer length stays consistent. boost::mpi::packed_iarchive (a
  // binary_buffer_iprimitive on this homogeneous Boost.MPI) only assert()s its bounds and would
  // read 4093 bytes past the buffer; checked_iarchive refuses the length before sizing the string.
  std::vector<char> bytes = encode(boxed_text{"abc"});
  REQUIRE(bytes.size() == 8 + 2 + 4 + 3);
  std::uint32_t length = 0;
  std::memcpy(&length, bytes.data() + 10, 4);
  REQUIRE(length == 3);
  length = 4096;
  std::memcpy(bytes.data() + 10, &length, 4);

  CHECK_THROWS_AS(decode<boxed_text>(bytes), serialization_error);
  CHECK_THROWS_WITH(
      decode<boxed_text>(bytes),
      Catch::Contains("could not deserialize a value of type test_types::boxed_text") &&
          Catch::Contains("a string of 4096 bytes exceeds the 3 bytes left") &&
          Catch::Contains("(at byte 6 of 9)"));
}

TEST_CASE("bytes left over inside a Boost archive throw", "[serialization]") {
  std::vector<char> bytes = encode(boxed_text{"abc"});
  std::uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  length += 2;
  std::memcpy(bytes.data(), &length, 8);
  bytes.push_back('x');
  bytes.push_back('y');
  CHECK_THROWS_WITH(decode<boxed_text>(bytes),
                    Catch::Contains("could not deserialize") &&
                        Catch::Contains("2 bytes left over after the value"));
}

// ---- checked_iarchive on its own

namespace {

/// The bytes boost::mpi::packed_oarchive writes for `value`: the format of the Boost path (on
/// this homogeneous Boost.MPI the communicator is not used).
template <class T> std::vector<char> pack(const T& value) {
  boost::mpi::packed_oarchive::buffer_type buffer;
  boost::mpi::packed_oarchive archive(MPI_COMM_SELF, buffer);
  archive << value;
  return std::vector<char>(buffer.begin(), buffer.end());
}

/// The bytes checked_oarchive writes for `value` (what the Boost path sends).
template <class T> std::vector<char> save_checked(const T& value) {
  std::vector<char> bytes;
  mpirpc::detail::checked_oarchive archive(bytes);
  archive << value;
  return bytes;
}

/// Reads a T back with checked_iarchive from exactly `size` bytes of a heap block of that size,
/// so that a read past the end would be caught by AddressSanitizer.
template <class T> T unpack(const std::vector<char>& bytes, std::size_t size) {
  std::vector<char> exact(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
  mpirpc::detail::checked_iarchive archive(exact.data(), exact.size());
  T out{};
  archive >> out;
  CHECK(archive.remaining() == 0);
  return out;
}

} // namespace

/// Members of every kind checked_iarchive handles: primitives, a bool, strings, containers
/// (through boost/serialization headers), a nested class with its own class information, and a
/// class version.
struct archive_sample {
  struct inner {
    std::vector<std::string> words;
    short small = 0;
    template <class Archive> void serialize(Archive& ar, unsigned) { ar& words& small; }
    bool operator==(const inner& o) const { return words == o.words && small == o.small; }
  };
  int number = 0;
  double real = 0;
  bool flag = false;
  std::string text;
  std::vector<double> values;
  std::map<std::string, int> counts;
  std::vector<inner> parts;
  std::pair<int, std::string> tagged;
  long added_in_version_1 = 0;
  template <class Archive> void serialize(Archive& ar, unsigned version) {
    ar& number& real& flag& text& values& counts& parts& tagged;
    if (version >= 1) ar& added_in_version_1;
  }
  bool operator==(const archive_sample& o) const {
    return number == o.number && real == o.real && flag == o.flag && text == o.text &&
           values == o.values && counts == o.counts && parts == o.parts && tagged == o.tagged &&
           added_in_version_1 == o.added_in_version_1;
  }
};
BOOST_CLASS_VERSION(archive_sample, 1)

namespace {
archive_sample make_archive_sample() {
  archive_sample s;
  s.number = -42;
  s.real = 2.5;
  s.flag = true;
  s.text = "hello, archive";
  s.values = {1.0, -2.0, 3.5};
  s.counts = {{"a", 1}, {"bb", 22}};
  s.parts = {{{"x", "yz"}, 7}, {{}, -1}};
  s.tagged = {9, "nine"};
  s.added_in_version_1 = 1L << 40;
  return s;
}
} // namespace

TEST_CASE("checked_iarchive reads back what packed_oarchive writes", "[serialization][archive]") {
  const archive_sample in = make_archive_sample();
  const std::vector<char> bytes = pack(in);
  CHECK(unpack<archive_sample>(bytes, bytes.size()) == in);

  const std::vector<archive_sample> many{in, archive_sample{}, in};
  const std::vector<char> many_bytes = pack(many);
  CHECK(unpack<std::vector<archive_sample>>(many_bytes, many_bytes.size()) == many);

  const member_point point{1.5, -2.5, "corner", {1, 2, 3}};
  const std::vector<char> point_bytes = pack(point);
  CHECK(unpack<member_point>(point_bytes, point_bytes.size()) == point);
}

TEST_CASE("checked_iarchive throws at every truncation and never reads past the end",
          "[serialization][archive]") {
  const std::vector<archive_sample> value{make_archive_sample(), make_archive_sample()};
  const std::vector<char> bytes = pack(value);
  REQUIRE(bytes.size() > 100);
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    CAPTURE(size);
    CHECK_THROWS_AS(unpack<std::vector<archive_sample>>(bytes, size), serialization_error);
  }
  // The same through the codec (the Boost path), the outer length word telling the truth.
  const std::vector<char> one = pack(make_archive_sample());
  for (std::size_t size = 0; size < one.size(); ++size) {
    std::vector<char> message;
    put<std::uint64_t>(message, size);
    message.insert(message.end(), one.begin(), one.begin() + static_cast<std::ptrdiff_t>(size));
    CAPTURE(size);
    CHECK_THROWS_WITH(decode<archive_sample>(message),
                      Catch::Contains("could not deserialize a value of type archive_sample") &&
                          Catch::Contains("malformed archive"));
  }
}

TEST_CASE("checked_iarchive refuses counts and flags that cannot be right",
          "[serialization][archive]") {
  using mpirpc::detail::checked_iarchive;
  SECTION("a collection larger than the bytes left, before it is sized") {
    std::vector<char> bytes;
    put<std::uint64_t>(bytes, std::uint64_t(1) << 60); // collection_size_type
    put<std::uint32_t>(bytes, 0);                      // item version
    checked_iarchive archive(bytes.data(), bytes.size());
    std::vector<double> out;
    CHECK_THROWS_WITH(archive >> out,
                      Catch::Contains("a collection of 1152921504606846976 elements exceeds "
                                      "the 4 bytes left"));
  }
  SECTION("a bool that is neither 0 nor 1") {
    const std::vector<char> bytes{2};
    checked_iarchive archive(bytes.data(), bytes.size());
    bool out = false;
    CHECK_THROWS_WITH(archive >> out, Catch::Contains("bad bool 2"));
  }
  SECTION("a tracking flag that is neither 0 nor 1") {
    std::vector<char> bytes = pack(boxed_text{"abc"});
    REQUIRE(bytes[0] == 0); // tracking flag, then the class version
    bytes[0] = 7;
    checked_iarchive archive(bytes.data(), bytes.size());
    boxed_text out;
    CHECK_THROWS_WITH(archive >> out, Catch::Contains("bad tracking flag 7"));
  }
  SECTION("an archive with no bytes at all") {
    checked_iarchive archive(nullptr, 0);
    int out = 0;
    CHECK_THROWS_WITH(archive >> out, Catch::Contains("needs 4 more bytes, only 0 left") &&
                                          Catch::Contains("(at byte 0 of 0)"));
  }
}

// ---- checked_oarchive on its own

namespace {
zoo make_zoo() {
  zoo z;
  auto rex = std::make_shared<dog>();
  rex->name = "rex";
  rex->barks = 3;
  auto generic = std::make_shared<animal>();
  generic->name = "generic";
  z.animals = {rex, generic, rex, nullptr};
  z.favourite = generic;
  return z;
}

/// checked_oarchive writes what packed_oarchive writes, and the codec of a Boost-path type
/// sends exactly that after its length word.
template <class T> void check_same_bytes(const T& value) {
  const std::vector<char> expected = pack(value);
  CHECK(save_checked(value) == expected);
  if constexpr (mpirpc::detail::composite_serializable<T>::value) return; // element by element
  std::vector<char> message;
  put<std::uint64_t>(message, expected.size());
  message.insert(message.end(), expected.begin(), expected.end());
  CHECK(encode(value) == message);
}
} // namespace

TEST_CASE("checked_oarchive writes the bytes packed_oarchive writes", "[serialization][archive]") {
  check_same_bytes(make_archive_sample()); // versioned, nested classes, strings, map, vector
  check_same_bytes(archive_sample{});
  check_same_bytes(std::vector<archive_sample>{make_archive_sample(), archive_sample{}});
  check_same_bytes(member_point{1.5, -2.5, "corner", {1, 2, 3}});
  check_same_bytes(boxed_text{std::string(100000, 'q')});
  check_same_bytes(boxed_text{""});
  check_same_bytes(adl_named{"tally", {{"x", 1}, {"y", -2}}});
  check_same_bytes(elsewhere::opted_in{"opted", 123456789L});
  check_same_bytes(make_zoo()); // shared_ptr, an exported derived class, tracking, null
  check_same_bytes(zoo{});
}

TEST_CASE("checked_oarchive round-trips through checked_iarchive", "[serialization][archive]") {
  const archive_sample sample = make_archive_sample();
  const std::vector<char> bytes = save_checked(sample);
  CHECK(unpack<archive_sample>(bytes, bytes.size()) == sample);

  const std::vector<char> zoo_bytes = save_checked(make_zoo());
  const zoo out = unpack<zoo>(zoo_bytes, zoo_bytes.size());
  REQUIRE(out.animals.size() == 4);
  const auto* rex = dynamic_cast<const dog*>(out.animals[0].get());
  REQUIRE(rex != nullptr);
  CHECK(rex->barks == 3);
  CHECK(out.animals[2] == out.animals[0]);
  CHECK(out.animals[3] == nullptr);
  CHECK(out.favourite == out.animals[1]);
  CHECK(out.favourite->name == "generic");
}

TEST_CASE("checked_oarchive refuses a block over its limit before writing it",
          "[serialization][archive]") {
  using mpirpc::detail::checked_oarchive;
  const std::string advice = "pass large data as std::string or std::vector arguments, which "
                             "travel out of line";
  SECTION("a string, at the limit and over it (a test-only limit of 10 bytes)") {
    std::vector<char> bytes;
    checked_oarchive archive(bytes, boost::archive::no_header, 10);
    archive << std::string(10, 'a');
    CHECK(bytes.size() == sizeof(unsigned int) + 10);
    CHECK_THROWS_WITH(archive << std::string(11, 'b'),
                      Catch::Contains("a string of 11 bytes exceeds the limit of 10 bytes for "
                                      "one block of a Boost archive") &&
                          Catch::Contains(advice));
    CHECK(bytes.size() == sizeof(unsigned int) + 10); // nothing of it written
  }
  SECTION("the limit cannot be raised above INT_MAX") {
    std::vector<char> bytes;
    checked_oarchive archive(bytes, boost::archive::no_header, std::size_t(1) << 40);
    CHECK(archive.block_limit() == std::size_t(INT_MAX));
  }
  SECTION("save_binary of a huge count, refused before reading the (small) source") {
    std::vector<char> bytes;
    checked_oarchive archive(bytes);
    const char small[4] = {1, 2, 3, 4};
    const std::size_t huge = (std::size_t(1) << 32) + 16; // would be 16 once narrowed to int
    CHECK_THROWS_WITH(archive.save_binary(small, huge),
                      Catch::Contains("a binary block of 4294967312 bytes exceeds the limit of "
                                      "2147483647 bytes") &&
                          Catch::Contains(advice));
    CHECK_THROWS_AS(archive.save_binary(small, std::size_t(INT_MAX) + 1),
                    mpirpc::serialization_error);
    CHECK(bytes.empty());
    archive.save_binary(small, sizeof small);
    CHECK(bytes == std::vector<char>{1, 2, 3, 4});
  }
  SECTION("an array of a huge count, refused before reading the (small) source") {
    std::vector<char> bytes;
    checked_oarchive archive(bytes);
    const int small[2] = {1, 2};
    CHECK_THROWS_WITH(archive << boost::serialization::make_array(small, std::size_t(1) << 30),
                      Catch::Contains("an array of 1073741824 elements of 4 bytes exceeds the "
                                      "limit of 2147483647 bytes") &&
                          Catch::Contains(advice));
    CHECK(bytes.empty());
  }
  SECTION("a vector's elements as one array (a test-only limit of 8 bytes)") {
    std::vector<char> bytes;
    checked_oarchive archive(bytes, boost::archive::no_header, 8);
    CHECK_THROWS_WITH((archive << std::vector<int>{1, 2, 3}),
                      Catch::Contains("an array of 3 elements of 4 bytes exceeds the limit of 8"));
  }
}

TEST_CASE("a refused Boost save leaves the message as it was", "[serialization]") {
  std::vector<char> out;
  writer w(out);
  mpirpc::detail::save(w, 7);
  const std::vector<char> before = out;
  CHECK_THROWS_AS(mpirpc::detail::save(w, picky{"refuse"}), serialization_error);
  CHECK(out == before);
  mpirpc::detail::save(w, boxed_text{"next"});
  reader r(out.data(), out.size());
  int seven = 0;
  mpirpc::detail::load(r, seven);
  boxed_text next;
  mpirpc::detail::load(r, next);
  CHECK(seven == 7);
  CHECK(next.text == "next");
  CHECK(r.remaining() == 0);
}

TEST_CASE("views are not serializable: their bytes are an address", "[serialization]") {
  static_assert(!mpirpc::is_serializable_v<std::string_view>);
  static_assert(mpirpc::is_serializable_v<std::string>);
  SUCCEED();
}
