// SPDX-License-Identifier: MIT
// How arguments and results travel: the serialization rules of mpirpc.
//
// Every parameter and result type of a remote function must be serializable, which is
// checked at compile time (mpirpc::is_serializable_v). Three paths, chosen per type:
//  1. Fast path, no archive: trivially copyable values (ints, doubles, enums, std::array of
//     them, plain structs) are copied byte for byte; std::string and std::vector<T> of
//     trivially copyable T are a length and their bytes. Buffers of at least
//     large_payload_threshold bytes are not copied into the message at all: they travel as a
//     separate MPI message sent straight from (and received straight into) their storage.
//     A received std::vector is resized before the data is received into it, which
//     value-initialises (zero-fills) it first: 1.3-1.8 ms for a std::vector<double> of 16 MiB
//     on the 2-core development machine, where its whole echo takes 11-17 ms. So large vectors
//     that mpirpc is done with (a handler's result once sent, an argument passed as an rvalue
//     once sent) are kept, a few and within options::spare_buffer_bytes, and the next large
//     vector of the same type is received into one of them without that pass (see
//     detail/spare_buffers.hpp). A vector whose allocator default-initialises (its
//     construct(p) with no arguments does `::new (p) T`) is not zero-filled in the first place.
//  2. Composites of serializable types: std::vector, std::array, std::pair, std::tuple,
//     std::map, std::unordered_map, std::optional, element by element, still without an archive.
//  3. Everything else through Boost.Serialization (written by detail::checked_oarchive, in the
//     format of a Boost.MPI packed archive, read back by detail::checked_iarchive, which checks
//     every read): a type with a member `template <class Archive> void serialize(Archive&,
//     unsigned)`, or a free `serialize(Archive&, T&, unsigned)` found by argument-dependent
//     lookup (put it in your type's namespace). A type whose serialize lives elsewhere (e.g.
//     namespace boost::serialization) opts in with `template <> struct
//     mpirpc::is_serializable<T> : std::true_type {};`.
// A trivially copyable type takes path 1 even if it also has serialize(), except where some
// bytes would be no value: a bool is one byte that must be 0 or 1, and std::optional (and a
// pair, tuple or array holding a bool or an optional) takes path 2, its flag checked. The
// members of a plain struct are not checked: a bool or an enum member of one is only as valid
// as the sender's bytes. Raw pointers and std::string_view are rejected: their value means
// nothing on another rank; a plain struct must not hold pointers either (that cannot be
// checked). All ranks run the same build on the same architecture (homogeneous MPI), so byte
// copies are exact.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/serialization/array.hpp>
#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/utility.hpp>
#include <boost/serialization/vector.hpp>

#include <mpirpc/detail/checked_iarchive.hpp>
#include <mpirpc/detail/checked_oarchive.hpp>
#include <mpirpc/detail/library.hpp>
#include <mpirpc/detail/spare_buffers.hpp>
#include <mpirpc/errors.hpp>

namespace mpirpc {

/// Contiguous buffers of at least this many bytes travel as their own MPI message, without
/// being copied into the call's message.
inline constexpr std::size_t large_payload_threshold = 32 * 1024;
static_assert(detail::spare_min_bytes == large_payload_threshold,
              "only vectors that travel out of line are kept for reuse");

template <class T> struct is_serializable;

namespace detail {

template <class T, class = void> struct has_member_serialize : std::false_type {};
template <class T>
struct has_member_serialize<
    T, std::void_t<decltype(std::declval<T&>().serialize(std::declval<checked_oarchive&>(), 0u))>>
    : std::true_type {};

template <class T, class = void> struct has_adl_serialize : std::false_type {};
template <class T>
struct has_adl_serialize<
    T, std::void_t<decltype(serialize(std::declval<checked_oarchive&>(), std::declval<T&>(), 0u))>>
    : std::true_type {};

/// Views refer to the caller's memory: copying their bytes would send an address.
template <class T> struct is_view : std::false_type {};
template <class C, class Tr> struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};

/// Types some of whose byte patterns are no value: a bool other than 0 or 1, an optional's flag.
/// Received bytes copied into one would be undefined behaviour, so these are never copied as
/// bytes, even when trivially copyable: their codecs check what they read.
template <class T> struct has_invalid_bytes : std::false_type {};
template <> struct has_invalid_bytes<bool> : std::true_type {};
template <class T> struct has_invalid_bytes<std::optional<T>> : std::true_type {};
template <class A, class B>
struct has_invalid_bytes<std::pair<A, B>>
    : std::bool_constant<has_invalid_bytes<std::remove_cv_t<A>>::value ||
                         has_invalid_bytes<std::remove_cv_t<B>>::value> {};
template <class... Ts>
struct has_invalid_bytes<std::tuple<Ts...>>
    : std::bool_constant<(has_invalid_bytes<std::remove_cv_t<Ts>>::value || ...)> {};
template <class T, std::size_t N>
struct has_invalid_bytes<std::array<T, N>> : has_invalid_bytes<std::remove_cv_t<T>> {};

template <class T>
inline constexpr bool is_plain_v =
    std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
    !std::is_same_v<T, std::nullptr_t> && !is_view<T>::value &&
    !has_invalid_bytes<std::remove_cv_t<T>>::value;

template <class T>
inline constexpr bool uses_boost_v =
    !is_plain_v<T> && (has_member_serialize<T>::value || has_adl_serialize<T>::value);

template <class T> struct composite_serializable : std::false_type {};
template <> struct composite_serializable<bool> : std::true_type {};
template <class T, class A>
struct composite_serializable<std::vector<T, A>> : is_serializable<T> {};
template <class T, std::size_t N>
struct composite_serializable<std::array<T, N>> : is_serializable<T> {};
template <class A, class B>
struct composite_serializable<std::pair<A, B>>
    : std::bool_constant<is_serializable<A>::value && is_serializable<B>::value> {};
template <class... Ts>
struct composite_serializable<std::tuple<Ts...>>
    : std::bool_constant<(is_serializable<Ts>::value && ...)> {};
template <class K, class V, class C, class A>
struct composite_serializable<std::map<K, V, C, A>>
    : std::bool_constant<is_serializable<K>::value && is_serializable<V>::value> {};
template <class K, class V, class H, class E, class A>
struct composite_serializable<std::unordered_map<K, V, H, E, A>>
    : std::bool_constant<is_serializable<K>::value && is_serializable<V>::value> {};
template <class T> struct composite_serializable<std::optional<T>> : is_serializable<T> {};
template <class C, class Tr, class A>
struct composite_serializable<std::basic_string<C, Tr, A>> : std::bool_constant<is_plain_v<C>> {};

} // namespace detail

/// True when T can be an argument or result of a remote function. Specialize it to
/// std::true_type for a Boost-serializable type whose serialize() ADL cannot find.
template <class T>
struct is_serializable
    : std::bool_constant<detail::is_plain_v<T> || detail::composite_serializable<T>::value ||
                         detail::uses_boost_v<T>> {};
template <class T> inline constexpr bool is_serializable_v = is_serializable<T>::value;

namespace detail {

/// Pulls out-of-line buffers of a message from the transport as the decoder reaches them.
class segment_source {
public:
  virtual ~segment_source() = default;
  /// Size of the next out-of-line buffer; throws serialization_error if there is none.
  /// Checked before memory is reserved for it.
  virtual std::size_t next_segment_size() const = 0;
  /// Receives the next out-of-line buffer, which must be exactly `bytes` long, into `dst`.
  virtual void receive_segment(void* dst, std::size_t bytes) = 0;
};

/// One out-of-line buffer of an outgoing message; the storage must outlive the send.
struct segment {
  const void* data;
  std::size_t bytes;
};

/// Appends values to a message buffer. Not thread-safe; one per message being built.
class writer {
public:
  explicit writer(std::vector<char>& out, std::vector<segment>* segments = nullptr)
      : _out(out), _segments(segments) {}

  void write_bytes(const void* data, std::size_t n) {
    const std::size_t at = _out.size();
    _out.resize(at + n);
    if (n) std::memcpy(_out.data() + at, data, n);
  }
  template <class T> void write_plain(const T& v) { write_bytes(&v, sizeof(T)); }
  /// The message being built, for the Boost path's archive to append to in place.
  std::vector<char>& buffer() noexcept { return _out; }
  /// A contiguous buffer: inline when small, out of line (no copy) when large and allowed.
  void write_buffer(const void* data, std::size_t n) {
    if (_segments && n >= large_payload_threshold) {
      write_plain<std::uint64_t>(static_cast<std::uint64_t>(n) | out_of_line_bit);
      _segments->push_back(segment{data, n});
    } else {
      write_plain<std::uint64_t>(static_cast<std::uint64_t>(n));
      write_bytes(data, n);
    }
  }
  /// Writes every buffer inline while the guard lives: for values whose storage will not
  /// outlive the send, such as a temporary made by converting an argument.
  class inline_only {
  public:
    explicit inline_only(writer& w) : _w(w), _saved(w._segments) { w._segments = nullptr; }
    ~inline_only() { _w._segments = _saved; }
    inline_only(const inline_only&) = delete;
    inline_only& operator=(const inline_only&) = delete;

  private:
    writer& _w;
    std::vector<segment>* _saved;
  };

  static constexpr std::uint64_t out_of_line_bit = std::uint64_t(1) << 63;

private:
  std::vector<char>& _out;
  std::vector<segment>* _segments;
};

/// Reads values from a received message; every read is bounds-checked and a short or
/// inconsistent message throws serialization_error.
class reader {
public:
  reader(const char* data, std::size_t size, segment_source* segments = nullptr)
      : _data(data), _size(size), _segments(segments) {}

  std::size_t remaining() const noexcept { return _size - _pos; }
  std::size_t position() const noexcept { return _pos; }

  void read_bytes(void* dst, std::size_t n) {
    need(n);
    if (n) std::memcpy(dst, _data + _pos, n);
    _pos += n;
  }
  template <class T> T read_plain() {
    T v;
    read_bytes(&v, sizeof(T));
    return v;
  }
  const char* skip(std::size_t n) {
    need(n);
    const char* p = _data + _pos;
    _pos += n;
    return p;
  }
  /// Reads a buffer written by writer::write_buffer. `prepare(n)` returns where n bytes go.
  template <class Prepare> void read_buffer(Prepare&& prepare, std::size_t element_size) {
    const std::uint64_t word = read_plain<std::uint64_t>();
    const bool out_of_line = (word & writer::out_of_line_bit) != 0;
    const std::uint64_t n = word & ~writer::out_of_line_bit;
    if (element_size == 0 || n % element_size != 0) {
      fail("buffer length " + std::to_string(n) + " is not a multiple of its element size " +
           std::to_string(element_size));
    }
    if (out_of_line) {
      if (!_segments) fail("out-of-line buffer where none may be");
      if (_segments->next_segment_size() != n) {
        fail("out-of-line buffer of " + std::to_string(n) + " bytes announced, but the next one " +
             "carries " + std::to_string(_segments->next_segment_size()));
      }
      void* dst = prepare(static_cast<std::size_t>(n));
      _segments->receive_segment(dst, static_cast<std::size_t>(n));
    } else {
      need(static_cast<std::size_t>(n));
      void* dst = prepare(static_cast<std::size_t>(n));
      if (n) std::memcpy(dst, _data + _pos, static_cast<std::size_t>(n));
      _pos += static_cast<std::size_t>(n);
    }
  }
  /// Reads an element count and checks it against what is left (every element takes at
  /// least `min_wire_size` bytes).
  std::size_t read_count(std::size_t min_wire_size) {
    const std::uint64_t n = read_plain<std::uint64_t>();
    // Elements that may take no bytes at all are still bounded by the bytes left, so that a
    // forged count can neither reserve huge memory nor spin through empty elements.
    if (n > remaining() / std::max<std::size_t>(min_wire_size, 1)) {
      fail("element count " + std::to_string(n) + " exceeds the message");
    }
    if (n > (std::uint64_t(1) << 40)) fail("element count " + std::to_string(n) + " too large");
    return static_cast<std::size_t>(n);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw serialization_error("mpirpc: malformed message: " + what + " (at byte " +
                              std::to_string(_pos) + " of " + std::to_string(_size) + ")");
  }

private:
  void need(std::size_t n) const {
    if (n > remaining()) {
      fail("needs " + std::to_string(n) + " more bytes, only " + std::to_string(remaining()) +
           " left");
    }
  }
  const char* _data;
  std::size_t _size;
  std::size_t _pos = 0;
  segment_source* _segments;
};

template <class T, class = void> struct codec;

template <class T> struct codec<T, std::enable_if_t<is_plain_v<T>>> {
  static constexpr std::size_t min_wire_size = sizeof(T);
  static void save(writer& w, const T& v) { w.write_plain(v); }
  static void load(reader& r, T& v) { r.read_bytes(&v, sizeof(T)); }
};

/// A bool: one byte, which must be 0 or 1.
template <> struct codec<bool, void> {
  static constexpr std::size_t min_wire_size = 1;
  static void save(writer& w, bool v) { w.write_plain<std::uint8_t>(v ? 1 : 0); }
  static void load(reader& r, bool& v) {
    const auto byte = r.read_plain<std::uint8_t>();
    if (byte > 1) r.fail("bad bool " + std::to_string(byte));
    v = byte != 0;
  }
};

template <class C, class Tr, class A>
struct codec<std::basic_string<C, Tr, A>, std::enable_if_t<is_plain_v<C>>> {
  static constexpr std::size_t min_wire_size = 8;
  static void save(writer& w, const std::basic_string<C, Tr, A>& s) {
    w.write_buffer(s.data(), s.size() * sizeof(C));
  }
  static void load(reader& r, std::basic_string<C, Tr, A>& s) {
    r.read_buffer(
        [&](std::size_t n) -> void* {
          s.resize(n / sizeof(C));
          return s.data();
        },
        sizeof(C));
  }
};

template <class T, class A>
struct codec<std::vector<T, A>, std::enable_if_t<is_serializable<T>::value>> {
  static constexpr std::size_t min_wire_size = 8;
  static constexpr bool contiguous = is_plain_v<T> && !std::is_same_v<T, bool>;
  static void save(writer& w, const std::vector<T, A>& v) {
    if constexpr (contiguous) {
      w.write_buffer(v.data(), v.size() * sizeof(T));
    } else {
      w.write_plain<std::uint64_t>(v.size());
      for (const auto& e : v)
        codec<T>::save(w, e);
    }
  }
  static void load(reader& r, std::vector<T, A>& v) {
    if constexpr (contiguous) {
      r.read_buffer(
          [&](std::size_t n) -> void* {
            // Storage kept from an earlier large vector of this type is not zero-filled again
            // (detail/spare_buffers.hpp).
            if constexpr (is_spare_vector_v<std::vector<T, A>>) {
              if (spare_vectors<std::vector<T, A>>::take(v, n / sizeof(T))) return v.data();
            }
            v.resize(n / sizeof(T));
            return v.data();
          },
          sizeof(T));
    } else {
      const std::size_t n = r.read_count(codec<T>::min_wire_size);
      v.clear();
      v.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        T e{};
        codec<T>::load(r, e);
        v.push_back(std::move(e));
      }
    }
  }
};

/// Offers `value` to its type's pool (detail/spare_buffers.hpp) if it is a vector that the
/// codec receives in one piece (is_plain elements), the only kind a decode takes back.
template <class T> void offer_spare(T& value) noexcept {
  if constexpr (is_spare_vector_v<T>) {
    if constexpr (codec<T>::contiguous) spare_vectors<T>::offer(value);
  }
}

template <class T, std::size_t N>
struct codec<std::array<T, N>,
             std::enable_if_t<!is_plain_v<std::array<T, N>> && is_serializable<T>::value>> {
  static constexpr std::size_t min_wire_size = N * codec<T>::min_wire_size;
  static void save(writer& w, const std::array<T, N>& a) {
    for (const auto& e : a)
      codec<T>::save(w, e);
  }
  static void load(reader& r, std::array<T, N>& a) {
    for (auto& e : a)
      codec<T>::load(r, e);
  }
};

template <class A, class B>
struct codec<std::pair<A, B>,
             std::enable_if_t<!is_plain_v<std::pair<A, B>> && is_serializable<A>::value &&
                              is_serializable<B>::value>> {
  static constexpr std::size_t min_wire_size = codec<A>::min_wire_size + codec<B>::min_wire_size;
  static void save(writer& w, const std::pair<A, B>& p) {
    codec<A>::save(w, p.first);
    codec<B>::save(w, p.second);
  }
  static void load(reader& r, std::pair<A, B>& p) {
    codec<A>::load(r, p.first);
    codec<B>::load(r, p.second);
  }
};

template <class... Ts>
struct codec<std::tuple<Ts...>, std::enable_if_t<!is_plain_v<std::tuple<Ts...>> &&
                                                 (is_serializable<Ts>::value && ...)>> {
  static constexpr std::size_t min_wire_size = (std::size_t(0) + ... + codec<Ts>::min_wire_size);
  static void save(writer& w, const std::tuple<Ts...>& t) {
    std::apply([&](const auto&... e) { (codec<std::decay_t<decltype(e)>>::save(w, e), ...); }, t);
  }
  static void load(reader& r, std::tuple<Ts...>& t) {
    std::apply([&](auto&... e) { (codec<std::decay_t<decltype(e)>>::load(r, e), ...); }, t);
  }
};

template <class Map> struct map_codec {
  static constexpr std::size_t min_wire_size = 8;
  using key_type = typename Map::key_type;
  using mapped_type = typename Map::mapped_type;
  static void save(writer& w, const Map& m) {
    w.write_plain<std::uint64_t>(m.size());
    for (const auto& [k, v] : m) {
      codec<key_type>::save(w, k);
      codec<mapped_type>::save(w, v);
    }
  }
  static void load(reader& r, Map& m) {
    const std::size_t n =
        r.read_count(codec<key_type>::min_wire_size + codec<mapped_type>::min_wire_size);
    m.clear();
    for (std::size_t i = 0; i < n; ++i) {
      key_type k{};
      mapped_type v{};
      codec<key_type>::load(r, k);
      codec<mapped_type>::load(r, v);
      m.emplace(std::move(k), std::move(v));
    }
  }
};
template <class K, class V, class C, class A>
struct codec<std::map<K, V, C, A>,
             std::enable_if_t<is_serializable<K>::value && is_serializable<V>::value>>
    : map_codec<std::map<K, V, C, A>> {};
template <class K, class V, class H, class E, class A>
struct codec<std::unordered_map<K, V, H, E, A>,
             std::enable_if_t<is_serializable<K>::value && is_serializable<V>::value>>
    : map_codec<std::unordered_map<K, V, H, E, A>> {};

template <class T>
struct codec<std::optional<T>,
             std::enable_if_t<!is_plain_v<std::optional<T>> && is_serializable<T>::value>> {
  static constexpr std::size_t min_wire_size = 1;
  static void save(writer& w, const std::optional<T>& o) {
    w.write_plain<std::uint8_t>(o ? 1 : 0);
    if (o) codec<T>::save(w, *o);
  }
  static void load(reader& r, std::optional<T>& o) {
    const auto present = r.read_plain<std::uint8_t>();
    if (present > 1) r.fail("bad optional flag");
    if (present) {
      T v{};
      codec<T>::load(r, v);
      o = std::move(v);
    } else {
      o.reset();
    }
  }
};

/// Anything else that is_serializable accepts: Boost.Serialization, a u64 length then the bytes
/// of checked_oarchive (those of a Boost.MPI packed archive).
template <class T>
struct codec<T, std::enable_if_t<!is_plain_v<T> && !composite_serializable<T>::value &&
                                 is_serializable<T>::value>> {
  static constexpr std::size_t min_wire_size = 8;
  /// Written straight into the message after a length word filled in at the end; on an error
  /// the message is cut back to where the value began.
  static void save(writer& w, const T& v) {
    std::vector<char>& out = w.buffer();
    const std::size_t at = out.size();
    w.write_plain<std::uint64_t>(0);
    try {
      checked_oarchive archive(out);
      archive << v;
    } catch (...) {
      out.resize(at);
      rethrow_as_serialization_error("serialize", typeid(T).name());
    }
    const std::uint64_t n = out.size() - at - sizeof(std::uint64_t);
    std::memcpy(out.data() + at, &n, sizeof n);
  }
  /// Read with checked_iarchive (bounds-checked, straight from the message), not with
  /// boost::mpi::packed_iarchive, which does not check where its buffer ends.
  static void load(reader& r, T& v) {
    const auto n = r.read_plain<std::uint64_t>();
    if (n > r.remaining()) r.fail("archive of " + std::to_string(n) + " bytes exceeds the message");
    const char* bytes = r.skip(static_cast<std::size_t>(n));
    try {
      checked_iarchive archive(bytes, static_cast<std::size_t>(n));
      archive >> v;
      if (archive.remaining() != 0) {
        archive.fail(std::to_string(archive.remaining()) + " bytes left over after the value");
      }
    } catch (...) {
      rethrow_as_serialization_error("deserialize", typeid(T).name());
    }
  }
};

template <class T> void save(writer& w, const T& v) {
  codec<T>::save(w, v);
}
template <class T> void load(reader& r, T& v) {
  codec<T>::load(r, v);
}

} // namespace detail
} // namespace mpirpc
