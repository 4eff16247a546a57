// SPDX-License-Identifier: MIT
// Internal: the output archive of the Boost path of serialization.hpp.
//
// It writes exactly the bytes that boost::mpi::packed_oarchive writes on a homogeneous
// Boost.MPI (the Debian build is one: binary_buffer_oprimitive), which checked_iarchive reads:
// primitives as their bytes, a string as an unsigned int length and its bytes, class ids as
// int_least16_t, versions as int_least8_t, a class name as a string, the other special types
// of Boost.Serialization (tracking, object ids, collection sizes, item and library versions) as
// their bytes. Unlike packed_oarchive, whose binary_buffer_oprimitive narrows every byte count
// to int (a string of 4 GiB + 16 bytes is written as 16 bytes, without an error), sizes are
// std::size_t, and a block (a string, save_binary, an array) larger than the limit (INT_MAX: the
// archive travels in the inline part of a message, which cannot exceed it) throws
// serialization_error before anything of it is written (which also refuses any string whose
// length the format's unsigned int cannot hold). It appends to a std::vector<char> (the message
// itself), each block in one copy, without MPI.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <boost/archive/basic_archive.hpp>
#include <boost/archive/detail/common_oarchive.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/mpl/placeholders.hpp>
#include <boost/serialization/array_optimization.hpp>
#include <boost/serialization/array_wrapper.hpp>
#include <boost/serialization/collection_size_type.hpp>
#include <boost/serialization/is_bitwise_serializable.hpp>
#include <boost/serialization/item_version_type.hpp>
#include <boost/serialization/string.hpp>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

/// Appends to a byte vector, every block checked against a limit: the primitive layer of
/// checked_oarchive (the counterpart of boost::mpi::binary_buffer_oprimitive).
class checked_oprimitive {
public:
  /// The largest block an archive writes: one message's inline part cannot exceed INT_MAX.
  static constexpr std::size_t max_block = INT_MAX;

  /// `block_limit` (at most max_block) is for tests, which cannot allocate 2 GiB cheaply.
  explicit checked_oprimitive(std::vector<char>& out, std::size_t block_limit = max_block) noexcept
      : _out(out), _limit(block_limit < max_block ? block_limit : max_block) {}

  std::size_t block_limit() const noexcept { return _limit; }

  void save_binary(const void* address, std::size_t count) {
    check_block("binary block", count);
    append(address, count);
  }

  /// Arrays of bitwise-serializable elements (std::vector<int>, arrays) in one copy.
  template <class T>
  void save_array(boost::serialization::array_wrapper<T> const& x, unsigned int /*version*/) {
    static_assert(boost::serialization::is_bitwise_serializable<std::remove_const_t<T>>::value);
    const std::size_t count = x.count();
    if (count > _limit / sizeof(T)) {
      refuse("an array of " + std::to_string(count) + " elements of " + std::to_string(sizeof(T)) +
             " bytes");
    }
    append(x.address(), count * sizeof(T));
  }
  template <class T> void save(boost::serialization::array_wrapper<T> const& x) {
    save_array(x, 0u);
  }

  using use_array_optimization = boost::serialization::is_bitwise_serializable<boost::mpl::_1>;

  /// Primitives: their bytes.
  template <class T> void save(const T& t) {
    static_assert(boost::serialization::is_bitwise_serializable<std::remove_const_t<T>>::value,
                  "checked_oarchive saves only bitwise-serializable primitives");
    append(&t, sizeof(T));
  }
  /// A string: unsigned int length, then its size() bytes (as binary_buffer_oprimitive does).
  /// The block limit also keeps the length within what the unsigned int can hold.
  /// A string: its length in characters as an unsigned int, then its characters. (Boost.MPI's
  /// own primitive writes size() bytes, which cuts wide strings short; here every character
  /// is written, and checked_iarchive reads them all.)
  template <class C> void save(const std::basic_string<C>& s) {
    static_assert(max_block <= UINT_MAX);
    check_block("string", s.size() * sizeof(C));
    const auto length = static_cast<unsigned int>(s.size());
    append(&length, sizeof length);
    append(s.data(), s.size() * sizeof(C));
  }

protected:
  void append(const void* p, std::size_t n) {
    // One memmove per block, the vector growing geometrically; nothing is zero-filled first.
    const char* bytes = static_cast<const char*>(p);
    _out.insert(_out.end(), bytes, bytes + n);
  }

private:
  void check_block(const char* what, std::size_t n) const {
    if (n > _limit) refuse(std::string("a ") + what + " of " + std::to_string(n) + " bytes");
  }
  [[noreturn]] void refuse(const std::string& what) const {
    throw serialization_error(
        what + " exceeds the limit of " + std::to_string(_limit) +
        " bytes for one block of a Boost archive, which travels in the inline part of a message; "
        "pass large data as std::string or std::vector arguments, which travel out of line");
  }

  std::vector<char>& _out;
  std::size_t _limit;
};

/// A Boost.Serialization output archive that writes the bytes of a boost::mpi::packed_oarchive
/// (made with the default no_header flag), checked as described at the top of this file.
/// Modelled on boost::mpi::packed_oarchive.
class checked_oarchive : public checked_oprimitive,
                         public boost::archive::detail::common_oarchive<checked_oarchive> {
public:
  explicit checked_oarchive(std::vector<char>& out, unsigned int flags = boost::archive::no_header,
                            std::size_t block_limit = max_block)
      : checked_oprimitive(out, block_limit),
        boost::archive::detail::common_oarchive<checked_oarchive>(flags) {}

  // Everything else the usual way, through the serialization library.
  template <class T> void save_override(T const& x, boost::mpl::false_) {
    boost::archive::detail::common_oarchive<checked_oarchive>::save_override(x);
  }
  // Bitwise-serializable types directly through the primitives.
  template <class T> void save_override(T const& x, boost::mpl::true_) {
    checked_oprimitive::save(x);
  }
  template <class T> void save_override(T const& x) {
    using optimized = typename boost::mpl::apply1<use_array_optimization, T>::type;
    save_override(x, optimized());
  }

  // The special types, as packed_oarchive writes them (the others, bitwise-serializable, as
  // their bytes through the overloads above).
  void save_override(const boost::archive::class_id_optional_type&) {}
  void save_override(const boost::archive::class_name_type& t) {
    const std::string s(t);
    *this->This() << s;
  }
  void save_override(const boost::archive::class_id_type& t) {
    const boost::int_least16_t x = t;
    *this->This() << x;
  }
  void save_override(const boost::archive::version_type& t) {
    const boost::int_least8_t x = t;
    *this->This() << x;
  }
};

} // namespace mpirpc::detail

BOOST_SERIALIZATION_REGISTER_ARCHIVE(mpirpc::detail::checked_oarchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(mpirpc::detail::checked_oarchive)
