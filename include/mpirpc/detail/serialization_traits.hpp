// SPDX-License-Identifier: MIT
// Internal: the traits that choose a type's serialization path (serialization.hpp): plain bytes,
// a composite of serializable types, or Boost.Serialization.
#pragma once

#include <array>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <mpirpc/detail/checked_oarchive.hpp>

namespace mpirpc {

template <class T> struct is_serializable; // serialization.hpp

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
} // namespace mpirpc
