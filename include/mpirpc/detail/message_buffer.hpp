// SPDX-License-Identifier: MIT
// Internal: the bytes of a message being built (writer) or read (reader), and its out-of-line
// buffers (segment, segment_source), which travel as MPI messages of their own.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

/// Contiguous buffers of at least this many bytes travel out of line (users know it as
/// mpirpc::large_payload_threshold, serialization.hpp).
inline constexpr std::size_t out_of_line_threshold = 32 * 1024;

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
    if (_segments && n >= out_of_line_threshold) {
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

} // namespace mpirpc::detail
