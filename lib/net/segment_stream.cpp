// SPDX-License-Identifier: MIT
#include "net/segment_stream.hpp"

#include <algorithm>
#include <cstring>
#include <exception>

#include <mpirpc/errors.hpp>

namespace mpirpc::detail {

namespace {
std::size_t chunk_of(std::uint64_t left) {
  return static_cast<std::size_t>(std::min<std::uint64_t>(left, wire::max_chunk));
}
} // namespace

segment_stream::segment_stream(transport& t, const incoming& message, const wire::header& h,
                               drop_report* report)
    : segment_stream(t, message.source, h.data_tag,
                     message.bytes.data() + sizeof(wire::header) + h.payload_size, h.segment_count,
                     report) {
  if (!message.prefetched.empty()) _prefetched = &message.prefetched;
}

segment_stream::segment_stream(transport& t, int source, std::uint32_t data_tag, const char* table,
                               std::uint32_t count, drop_report* report, bool counted)
    : _t(t), _report(report), _source(source), _tag(data_tag), _table(table), _count(count),
      _counted(counted) {}

segment_stream::~segment_stream() {
  if (_next < _count || _held) drain();
}

std::size_t segment_stream::next_segment_size() const {
  check_next();
  if (!_prefetched) hold_first_chunk(); // the decoder sizes its destination next
  return static_cast<std::size_t>(size_of(_next));
}

void segment_stream::receive_segment(void* dst, std::size_t bytes) {
  check_next();
  const std::uint64_t expected = size_of(_next);
  if (expected != bytes) {
    throw serialization_error("mpirpc: malformed message: out-of-line buffer of " +
                              std::to_string(bytes) + " bytes announced, table says " +
                              std::to_string(expected));
  }
  if (_prefetched) {
    if (bytes) std::memcpy(dst, (*_prefetched)[_next].data(), bytes);
  } else {
    receive_into(static_cast<char*>(dst));
  }
  ++_next;
}

void segment_stream::prefetch(std::vector<std::vector<char>>& out) {
  if (_prefetched) { // in memory already (prefetched before, or sent by this rank itself)
    _next = _count;
    return;
  }
  while (_next < _count) {
    hold_first_chunk(); // before sizing the copy
    out.emplace_back(static_cast<std::size_t>(size_of(_next)));
    receive_into(out.back().data());
    ++_next;
  }
}

bool segment_stream::drain() noexcept {
  if (_prefetched) {
    _next = _count;
    return true;
  }
  const std::uint32_t left_before = _count - std::min(_next, _count);
  try {
    std::vector<char> scratch;
    if (_held) {
      _held = false;
      _t.discard_matched(_held_message, _held_bytes, scratch);
      _taken += _held_bytes;
      _started = true;
    }
    while (_next < _count && !_gave_up) {
      const std::uint64_t size = size_of(_next);
      // One message at least (an empty buffer is one empty message), then until the bytes
      // the table announces have come; a chunk of another size just counts for its bytes.
      while (!_started || _taken < size) {
        MPI_Message m;
        std::size_t got = 0;
        if (!_t.match_data(_source, _tag, m, got)) {
          _gave_up = true;
          break;
        }
        _t.discard_matched(m, got, scratch);
        _taken += got;
        _started = true;
      }
      if (_gave_up) break;
      next_buffer();
    }
  } catch (const std::exception& e) {
    _gave_up = true;
    if (_report) _report->log(std::string("receiving out-of-line data failed: ") + e.what());
  }
  if (_gave_up && !_logged) {
    _logged = true;
    note_malformed("gave up receiving the out-of-line buffers of a message from rank " +
                   std::to_string(_source) + " (data tag " + std::to_string(_tag) +
                   "): " + std::to_string(_count - std::min(_next, _count)) + " of " +
                   std::to_string(left_before) + " left were not received within " +
                   std::to_string(_t.patience().count()) + " ms");
  }
  if (_gave_up) _next = _count; // nothing more is attempted
  return !_gave_up;
}

void segment_stream::check_next() const {
  if (_next >= _count) {
    throw serialization_error("mpirpc: malformed message: more out-of-line buffers referenced "
                              "than the message carries");
  }
}

std::uint64_t segment_stream::size_of(std::uint32_t i) const {
  std::uint64_t n;
  std::memcpy(&n, _table + std::size_t(i) * sizeof(std::uint64_t), sizeof n);
  return n;
}

/// Counts the message as malformed (once) and logs why.
void segment_stream::note_malformed(const std::string& what) const noexcept {
  if (!_report) return;
  _report->log(what); // before the count: whoever sees the count finds the line written
  if (!_counted) {
    _counted = true;
    _report->count_malformed();
  }
}

void segment_stream::fail_missing(std::uint64_t size) const {
  const bool first = !_gave_up;
  _gave_up = true;
  const std::string what =
      "out-of-line buffer " + std::to_string(_next + 1) + " of " + std::to_string(_count) + " (" +
      std::to_string(size) + " bytes) from rank " + std::to_string(_source) +
      " did not arrive within " + std::to_string(_t.patience().count()) + " ms";
  if (first) {
    _logged = true; // drain() adds nothing
    note_malformed("malformed message: " + what);
  }
  throw serialization_error("mpirpc: malformed message: " + what);
}

/// Discards a matched chunk of the wrong size, then throws. The table is wrong, so the chunk
/// stands for the rest of its buffer: drain() goes on with the next buffer.
void segment_stream::fail_size(MPI_Message& m, std::size_t got, std::size_t expected) const {
  std::vector<char> scratch;
  _t.discard_matched(m, got, scratch);
  _taken = size_of(_next);
  _started = true;
  const std::string what = "a chunk of " + std::to_string(got) + " bytes arrived from rank " +
                           std::to_string(_source) + " for out-of-line buffer " +
                           std::to_string(_next + 1) + " of " + std::to_string(_count) +
                           ", whose table entry (" + std::to_string(size_of(_next)) +
                           " bytes) implies " + std::to_string(expected);
  note_malformed("malformed message: " + what);
  throw serialization_error("mpirpc: malformed message: " + what);
}

/// Matches the first chunk of the next buffer and checks its size, once.
void segment_stream::hold_first_chunk() const {
  if (_held) return;
  const std::uint64_t size = size_of(_next);
  if (_gave_up) fail_missing(size);
  // One pacer for the whole buffer, from matching its first chunk to receiving its last, so
  // that the sizing of the destination in between counts as part of the transfer too.
  if (!_pacer) _pacer.emplace(_t.pacing_budget(), 0);
  MPI_Message m;
  std::size_t got = 0;
  if (!_t.match_data(_source, _tag, m, got, *_pacer)) fail_missing(size);
  if (got != chunk_of(size)) fail_size(m, got, chunk_of(size));
  _pacer->add_bytes(got); // the copy's share of the spin budget
  _held_message = m;
  _held_bytes = got;
  _held = true;
}

/// Receives the whole next buffer into `dst`, chunk by chunk.
void segment_stream::receive_into(char* dst) {
  hold_first_chunk();
  const std::uint64_t size = size_of(_next);
  _held = false;
  _started = true;
  _t.receive_matched(_held_message, dst, _held_bytes, *_pacer);
  _taken = _held_bytes;
  while (_taken < size) {
    const std::size_t expected = chunk_of(size - _taken);
    MPI_Message m;
    std::size_t got = 0;
    if (!_t.match_data(_source, _tag, m, got, *_pacer)) fail_missing(size);
    if (got != expected) fail_size(m, got, expected);
    _pacer->add_bytes(got);
    _t.receive_matched(m, dst + _taken, got, *_pacer);
    _taken += got;
  }
  next_buffer_state();
}

void segment_stream::next_buffer() {
  ++_next;
  next_buffer_state();
}

void segment_stream::next_buffer_state() const {
  _taken = 0;
  _started = false;
  _pacer.reset();
}

} // namespace mpirpc::detail
