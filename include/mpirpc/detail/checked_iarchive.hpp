// SPDX-License-Identifier: MIT
// Internal: the input archive of the Boost path of serialization.hpp.
//
// It reads the bytes that boost::mpi::packed_oarchive writes on a homogeneous Boost.MPI (the
// Debian build is one: BOOST_MPI_HOMOGENEOUS, so packed archives are binary_buffer_*primitive):
// primitives as their bytes, a string as an unsigned int length and its bytes, class ids as
// int_least16_t, versions as int_least8_t, the other special types of Boost.Serialization
// (tracking, object ids, collection sizes, item and library versions) as their bytes. Unlike
// boost::mpi::packed_iarchive, whose only bounds check is an assert(), every read is checked
// against the end of the archive and a malformed archive throws serialization_error. Lengths and
// element counts are checked before anything is sized: a string's length against the bytes
// left, a collection's size against the bytes left (so every element of a collection is taken
// to use at least one byte, as for the library's own composites), an array against the bytes
// left divided by its element size. A bool or a tracking flag must be 0 or 1, a class name
// shorter than BOOST_SERIALIZATION_MAX_KEY_SIZE. It reads straight from the message, without
// a copy, an iostream or MPI.
//
// Pointers: Boost.Serialization's compiled loader (basic_iarchive) trusts the class ids and
// object ids it reads: a forged class id indexes its class table out of bounds, a forged object
// id makes a pointer refer to an earlier object of another class. So the archive keeps its own
// copy of both tables (the classes the loader registers, in order, and the class of each object
// it tracks) and accepts a pointer's class id only if it is the null-pointer tag, the pointer's
// own class (non-polymorphic pointers), a known class (polymorphic ones), or the next id
// followed by the name of a class that is not known yet and can be loaded through this archive
// (polymorphic or abstract pointers); a pointer's object id must name a new object or an earlier
// object of the same class; a new object of a class that does not convert to the pointer's is
// destroyed and refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include <boost/archive/basic_archive.hpp>
#include <boost/archive/detail/basic_iserializer.hpp>
#include <boost/archive/detail/basic_pointer_iserializer.hpp>
#include <boost/archive/detail/common_iarchive.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/mpl/placeholders.hpp>
#include <boost/serialization/array_optimization.hpp>
#include <boost/serialization/array_wrapper.hpp>
#include <boost/serialization/collection_size_type.hpp>
#include <boost/serialization/extended_type_info.hpp>
#include <boost/serialization/is_bitwise_serializable.hpp>
#include <boost/serialization/item_version_type.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/void_cast.hpp>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

/// Bounds-checked reads from a byte range: the primitive layer of checked_iarchive (the
/// counterpart of boost::mpi::binary_buffer_iprimitive).
class checked_iprimitive {
public:
  checked_iprimitive(const char* data, std::size_t size) noexcept : _data(data), _size(size) {}

  std::size_t remaining() const noexcept { return _size - _pos; }
  std::size_t position() const noexcept { return _pos; }

  void load_binary(void* address, std::size_t count) { load_impl(address, count); }

  /// Arrays of bitwise-serializable elements (std::vector<int>, arrays) in one copy.
  template <class T>
  void load_array(boost::serialization::array_wrapper<T> const& x, unsigned int /*version*/) {
    static_assert(boost::serialization::is_bitwise_serializable<std::remove_const_t<T>>::value);
    const std::size_t count = x.count();
    if (count > remaining() / sizeof(T)) {
      fail("an array of " + std::to_string(count) + " elements of " + std::to_string(sizeof(T)) +
           " bytes exceeds the " + std::to_string(remaining()) + " bytes left");
    }
    load_impl(x.address(), count * sizeof(T));
  }
  template <class T> void load(boost::serialization::array_wrapper<T> const& x) {
    load_array(x, 0u);
  }

  using use_array_optimization = boost::serialization::is_bitwise_serializable<boost::mpl::_1>;

  /// Primitives: their bytes.
  template <class T> void load(T& t) {
    static_assert(boost::serialization::is_bitwise_serializable<std::remove_const_t<T>>::value,
                  "checked_iarchive loads only bitwise-serializable primitives");
    load_impl(&t, sizeof(T));
  }
  void load(bool& b) { b = load_flag("bool"); }
  void load(boost::archive::tracking_type& t) {
    t = boost::archive::tracking_type(load_flag("tracking flag"));
  }
  /// A collection's size, checked before the collection is sized.
  void load(boost::serialization::collection_size_type& t) {
    std::size_t n = 0;
    load_impl(&n, sizeof n);
    if (n > remaining()) {
      fail("a collection of " + std::to_string(n) + " elements exceeds the " +
           std::to_string(remaining()) + " bytes left");
    }
    t = boost::serialization::collection_size_type(n);
  }
  /// A string: unsigned int length, then that many bytes (what binary_buffer_oprimitive writes).
  template <class C, class Tr, class A> void load(std::basic_string<C, Tr, A>& s) {
    unsigned int length = 0; // in characters (checked_oarchive writes all of them)
    load_impl(&length, sizeof length);
    if (length > remaining() / sizeof(C)) {
      fail("a string of " + std::to_string(std::size_t(length) * sizeof(C)) +
           " bytes exceeds the " + std::to_string(remaining()) + " bytes left");
    }
    s.resize(length);
    load_impl(s.data(), std::size_t(length) * sizeof(C));
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw serialization_error("malformed archive: " + what + " (at byte " + std::to_string(_pos) +
                              " of " + std::to_string(_size) + ")");
  }

protected:
  void load_impl(void* p, std::size_t n) {
    if (n > remaining()) {
      fail("needs " + std::to_string(n) + " more bytes, only " + std::to_string(remaining()) +
           " left");
    }
    if (n) std::memcpy(p, _data + _pos, n);
    _pos += n;
  }
  bool load_flag(const char* what) {
    unsigned char byte = 0;
    load_impl(&byte, 1);
    if (byte > 1) fail(std::string("bad ") + what + " " + std::to_string(byte));
    return byte != 0;
  }

private:
  const char* _data;
  std::size_t _size;
  std::size_t _pos = 0;
};

/// A Boost.Serialization input archive over the bytes of a boost::mpi::packed_oarchive (made
/// with the default no_header flag), checked as described at the top of this file. Modelled on
/// boost::mpi::packed_iarchive.
class checked_iarchive : public checked_iprimitive,
                         public boost::archive::detail::common_iarchive<checked_iarchive> {
  using basic_iserializer = boost::archive::detail::basic_iserializer;
  using basic_pointer_iserializer = boost::archive::detail::basic_pointer_iserializer;
  using extended_type_info = boost::serialization::extended_type_info;
  using finder = const basic_pointer_iserializer* (*)(const extended_type_info&);

public:
  checked_iarchive(const char* data, std::size_t size,
                   unsigned int flags = boost::archive::no_header)
      : checked_iprimitive(data, size), boost::archive::detail::common_iarchive<checked_iarchive>(
                                            flags) {}

  // Everything else the usual way, through the serialization library.
  template <class T> void load_override(T& x, boost::mpl::false_) {
    boost::archive::detail::common_iarchive<checked_iarchive>::load_override(x);
  }
  // Bitwise-serializable types directly through the primitives.
  template <class T> void load_override(T& x, boost::mpl::true_) { checked_iprimitive::load(x); }
  template <class T> void load_override(T& x) {
    using optimized =
        typename boost::mpl::apply1<use_array_optimization, std::remove_const_t<T>>::type;
    load_override(x, optimized());
  }

  // The special types, as packed_oarchive writes them.
  void load_override(boost::archive::class_id_optional_type&) {}
  void load_override(boost::archive::class_id_type& t) {
    boost::int_least16_t x = 0;
    checked_iprimitive::load(x);
    check_class_id(x);
    t = boost::archive::class_id_type(x);
  }
  void load_override(boost::archive::class_id_reference_type& t) {
    load_override(static_cast<boost::archive::class_id_type&>(t));
  }
  void load_override(boost::archive::object_id_type& t) {
    boost::uint_least32_t x = 0;
    checked_iprimitive::load(x);
    check_object_id(x);
    t = boost::archive::object_id_type(x);
  }
  void load_override(boost::archive::version_type& t) {
    boost::int_least8_t x = 0;
    checked_iprimitive::load(x);
    t = boost::archive::version_type(x);
  }
  void load_override(boost::archive::class_name_type& t) {
    unsigned int length = 0;
    checked_iprimitive::load(length);
    if (length > BOOST_SERIALIZATION_MAX_KEY_SIZE - 1) {
      fail("a class name of " + std::to_string(length) + " bytes is longer than " +
           std::to_string(BOOST_SERIALIZATION_MAX_KEY_SIZE - 1));
    }
    char* out = t;
    load_binary(out, length);
    out[length] = '\0';
    if (_context.named) check_class_name(out);
  }

  // The loader's entry points, seen before basic_iarchive acts (Boost calls them on the
  // archive's own type), to keep the copy of its class table.
  void load_object(void* t, const basic_iserializer& bis) {
    known(bis);
    // The object a pointer's load has just allocated and constructed is being filled in.
    if (_context.target && *_context.target == t) _context.created = t;
    load_context object;
    object.cls = &bis;
    const scope guard(*this, object);
    boost::archive::detail::basic_iarchive::load_object(t, bis);
  }
  void register_basic_serializer(const basic_iserializer& bis) {
    known(bis);
    boost::archive::detail::basic_iarchive::register_basic_serializer(bis);
  }
  const basic_pointer_iserializer* load_pointer(void*& t, const basic_pointer_iserializer* bpis,
                                                finder find) {
    load_context pointer;
    pointer.bpis = bpis;
    pointer.find = find;
    pointer.target = &t;
    const scope guard(*this, pointer);
    const basic_pointer_iserializer* got = nullptr;
    try {
      got = boost::archive::detail::basic_iarchive::load_pointer(t, bpis, find);
    } catch (...) {
      discard_created(t);
      throw;
    }
    // A new object of a class the pointer cannot hold: Boost would throw once it is built and
    // leave it to leak. Known classes of polymorphic pointers are checked here, on the object.
    if (_context.created && got && bpis && got != bpis &&
        !boost::serialization::void_upcast(got->get_eti(), bpis->get_eti(), t)) {
      discard_created(t);
      fail("the object is of a class that is not the pointer's");
    }
    return got;
  }

private:
  /// The object or pointer being loaded. An object: its class. A pointer: its static type
  /// (null if abstract), the lookup of classes by name, the pointer itself (`target`), then as
  /// it is read: whether a class name must follow (a new class), the object's class, its
  /// object id if tracked, and the object Boost allocated for it, once constructed.
  struct load_context {
    const basic_iserializer* cls = nullptr;
    const basic_pointer_iserializer* bpis = nullptr;
    finder find = nullptr;
    void** target = nullptr;
    bool named = false;
    std::size_t object_id = static_cast<std::size_t>(-1);
    void* created = nullptr;
  };
  class scope {
  public:
    scope(checked_iarchive& a, const load_context& c) : _a(a), _saved(a._context) {
      a._context = c;
    }
    ~scope() { _a._context = _saved; }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

  private:
    checked_iarchive& _a;
    load_context _saved;
  };

  /// Records a class as basic_iarchive registers it (once, the next id).
  void known(const basic_iserializer& bis) {
    if (!is_known(bis)) _classes.push_back(&bis);
  }
  bool is_known(const basic_iserializer& bis) const {
    for (const basic_iserializer* c : _classes) {
      if (c == &bis) return true;
    }
    return false;
  }
  void check_class_id(int id) {
    if (id == -1) return; // BOOST_SERIALIZATION_NULL_POINTER_TAG
    const std::size_t count = _classes.size();
    if (id < 0 || static_cast<std::size_t>(id) > count) {
      fail("class id " + std::to_string(id) + " where " + std::to_string(count) +
           " classes are known");
    }
    if (!_context.target) fail("a class id outside a pointer");
    const bool polymorphic =
        !_context.bpis || _context.bpis->get_basic_serializer().is_polymorphic();
    if (static_cast<std::size_t>(id) == count) {
      // A new class: basic_iarchive reads its name only for a polymorphic or abstract pointer.
      if (!polymorphic) fail("class id " + std::to_string(id) + " names no known class");
      _context.named = true;
      return;
    }
    // A non-polymorphic pointer is written with its own class; a polymorphic one with the
    // object's, checked against the pointer once the object is built (see load_pointer).
    if (!polymorphic && _classes[id] != &_context.bpis->get_basic_serializer()) {
      fail("class id " + std::to_string(id) + " names a class that is not the pointer's");
    }
    _context.cls = _classes[id];
  }
  /// An object id, read before an object is loaded when its class is tracked: a new object
  /// (any id from the count of tracked objects on), or an earlier one, which a pointer may
  /// name only if it is of the pointer's class.
  void check_object_id(std::uint32_t id) {
    if (id >= _objects.size()) {
      _objects.push_back(_context.cls); // basic_iarchive tracks it next
      _referenced.push_back(false);
      _context.object_id = _objects.size() - 1;
      return;
    }
    if (_context.target) {
      if (!_context.cls || _objects[id] != _context.cls) {
        fail("object id " + std::to_string(id) + " names an object of another class");
      }
      _referenced[id] = true;
    }
  }
  /// Destroys the object Boost built for the pointer being loaded, which fails: Boost would
  /// leave it to leak. Not if a pointer to it was loaded meanwhile (a cycle), which may own it.
  void discard_created(void*& t) noexcept {
    if (!_context.created || !_context.cls) return;
    if (_context.object_id < _referenced.size() && _referenced[_context.object_id]) return;
    _context.cls->destroy(_context.created);
    _context.created = nullptr;
    t = nullptr;
  }
  void check_class_name(const char* key) {
    _context.named = false;
    // An unknown or empty name: basic_iarchive throws unregistered_class itself.
    const extended_type_info* eti = key[0] ? extended_type_info::find(key) : nullptr;
    if (!eti) return;
    const basic_pointer_iserializer* found = _context.find ? _context.find(*eti) : nullptr;
    if (!found) fail(std::string("class '") + key + "' cannot be loaded through a pointer here");
    if (is_known(found->get_basic_serializer())) {
      fail(std::string("class '") + key + "' is announced as new but already known");
    }
    known(found->get_basic_serializer()); // basic_iarchive registers it next
    _context.cls = &found->get_basic_serializer();
  }

  // Kept in the archive while small: most values have a few classes and no tracked objects.
  template <class T> using table = boost::container::small_vector<T, 8>;
  table<const basic_iserializer*> _classes; ///< basic_iarchive's classes, by class id
  table<const basic_iserializer*> _objects; ///< the class of each tracked object, by object id
  table<bool> _referenced;                  ///< whether a pointer named that object again
  load_context _context;
};

} // namespace mpirpc::detail

BOOST_SERIALIZATION_REGISTER_ARCHIVE(mpirpc::detail::checked_iarchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(mpirpc::detail::checked_iarchive)
