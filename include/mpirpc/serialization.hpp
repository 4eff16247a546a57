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

#include <cstddef>
#include <type_traits>

#include <mpirpc/detail/codec.hpp>
#include <mpirpc/detail/message_buffer.hpp>
#include <mpirpc/detail/serialization_traits.hpp>
#include <mpirpc/detail/spare_buffers.hpp>

namespace mpirpc {

/// Contiguous buffers of at least this many bytes travel as their own MPI message, without
/// being copied into the call's message.
inline constexpr std::size_t large_payload_threshold = detail::out_of_line_threshold;
static_assert(detail::spare_min_bytes == large_payload_threshold,
              "only vectors that travel out of line are kept for reuse");

/// True when T can be an argument or result of a remote function. Specialize it to
/// std::true_type for a Boost-serializable type whose serialize() ADL cannot find.
template <class T>
struct is_serializable
    : std::bool_constant<detail::is_plain_v<T> || detail::composite_serializable<T>::value ||
                         detail::uses_boost_v<T>> {};
template <class T> inline constexpr bool is_serializable_v = is_serializable<T>::value;

} // namespace mpirpc
