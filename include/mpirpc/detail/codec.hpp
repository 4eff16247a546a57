// SPDX-License-Identifier: MIT
// Internal: the codecs, one per path of serialization.hpp: codec<T>::save appends a T to a
// message, codec<T>::load reads one back, checking what it reads. Use it through
// mpirpc/serialization.hpp, which defines is_serializable.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
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
#include <mpirpc/detail/message_buffer.hpp>
#include <mpirpc/detail/serialization_traits.hpp>
#include <mpirpc/detail/spare_buffers.hpp>

namespace mpirpc {

template <class T> struct is_serializable; // serialization.hpp

namespace detail {

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
