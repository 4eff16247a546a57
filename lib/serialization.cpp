// SPDX-License-Identifier: MIT
// The Boost.Serialization path of serialization.hpp: saving, and the serializer map of
// checked_iarchive (which does the loading).
#include <deque>
#include <memory>

#include <boost/archive/detail/archive_serializer_map.hpp>
#include <boost/archive/impl/archive_serializer_map.ipp>

#include <mpirpc/serialization.hpp>

#include "errors_internal.hpp"
#include "transport.hpp"

// The map of pointer serializers of checked_iarchive. Boost instantiates it for each archive in
// the library that defines the archive (Boost.MPI for packed_iarchive); checked_iarchive is
// ours. Classes serialized through a pointer to a base (BOOST_CLASS_EXPORT) need it.
template class boost::archive::detail::archive_serializer_map<mpirpc::detail::checked_iarchive>;

namespace mpirpc::detail {

namespace {
using packed_buffer = boost::mpi::packed_oarchive::buffer_type;

/// A packed-archive buffer owned by a thread. Boost.MPI allocates it with MPI_Alloc_mem, and a
/// thread may outlive MPI (the application's main thread, after MPI_Finalize): then the memory
/// is left to the process's exit instead of being freed through a finalized MPI.
class thread_buffer {
public:
  thread_buffer() : _buffer(new packed_buffer) {}
  ~thread_buffer() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) {
      (void)_buffer.release(); // deliberately not freed: MPI_Free_mem is gone
    }
  }
  thread_buffer(const thread_buffer&) = delete;
  thread_buffer& operator=(const thread_buffer&) = delete;
  packed_buffer& get() noexcept { return *_buffer; }

private:
  std::unique_ptr<packed_buffer> _buffer;
};

struct scratch_stack {
  std::deque<thread_buffer> buffers;
  std::size_t depth = 0;
};
scratch_stack& scratch() {
  thread_local scratch_stack s;
  return s;
}
} // namespace

MPI_Comm pack_comm() {
  static MPI_Comm comm = [] {
    MPI_Comm c = MPI_COMM_NULL;
    check_mpi(MPI_Comm_dup(MPI_COMM_SELF, &c), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    return c;
  }();
  return comm;
}

void boost_save_begin(packed_buffer*& out) {
  scratch_stack& s = scratch();
  if (s.depth == s.buffers.size()) s.buffers.emplace_back();
  out = &s.buffers[s.depth++].get();
  out->clear();
}

void boost_save_end(writer& w, packed_buffer& buffer, bool commit) {
  if (commit) {
    w.write_plain<std::uint64_t>(buffer.size());
    w.write_bytes(buffer.data(), buffer.size());
  }
  --scratch().depth;
}

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
