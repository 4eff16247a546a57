// SPDX-License-Identifier: MIT
// The Boost.Serialization path of serialization.hpp: the serializer maps of checked_oarchive
// (which does the saving) and checked_iarchive (which does the loading).
#include <exception>
#include <string>

#include <boost/archive/detail/archive_serializer_map.hpp>
#include <boost/archive/impl/archive_serializer_map.ipp>

#include <mpirpc/serialization.hpp>

#include "errors_internal.hpp"

// The maps of pointer serializers of our archives. Boost instantiates one for each archive in
// the library that defines the archive (Boost.MPI for packed_iarchive and packed_oarchive);
// checked_iarchive and checked_oarchive are ours. Classes serialized through a pointer to a base
// (BOOST_CLASS_EXPORT) need them.
template class boost::archive::detail::archive_serializer_map<mpirpc::detail::checked_iarchive>;
template class boost::archive::detail::archive_serializer_map<mpirpc::detail::checked_oarchive>;

namespace mpirpc::detail {

void rethrow_as_serialization_error(const char* direction, const char* type_name) {
  std::string what;
  try {
    throw;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "a non-standard exception";
  }
  throw serialization_error("mpirpc: Boost.Serialization could not " + std::string(direction) +
                            " a value of type " + demangle(type_name) + ": " + what);
}

} // namespace mpirpc::detail
