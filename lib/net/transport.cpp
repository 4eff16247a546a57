// SPDX-License-Identifier: MIT
#include "net/transport.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <thread>

#include <mpirpc/errors.hpp>

#include "net/backoff.hpp"
#include "net/wire.hpp"

namespace mpirpc::detail {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw mpi_error(call, rc, std::string(text, static_cast<std::size_t>(len)));
}

namespace {
using clock = std::chrono::steady_clock;

/// One pause of a back-off wait that has lasted `waited`: spins for `spin_for`, then sleeps a
/// quarter of the time waited so far, from 2 us up to 1 ms.
void back_off(clock::duration waited, std::chrono::microseconds spin_for) {
  if (waited < spin_for) {
    cpu_relax();
    return;
  }
  const auto quarter = std::chrono::duration_cast<std::chrono::microseconds>(waited / 4);
  std::this_thread::sleep_for(
      std::clamp(quarter, std::chrono::microseconds(2), std::chrono::microseconds(1000)));
}

} // namespace

void wait_with_backoff(int count, MPI_Request* requests, std::chrono::microseconds spin_for) {
  const auto start = clock::now();
  for (;;) {
    int done = 0;
    check_mpi(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done) return;
    back_off(clock::now() - start, spin_for);
  }
}

#if defined(__SANITIZE_THREAD__)
#define MPIRPC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MPIRPC_TSAN 1
#endif
#endif

#if defined(MPIRPC_TSAN)
// ThreadSanitizer's runtime (tsan_interface_ann): no report for accesses to the range.
extern "C" void AnnotateBenignRaceSized(const char* file, int line, const volatile void* mem,
                                        unsigned long size, const char* description);
#endif

namespace {
/// A buffer that only MPI writes (a posted receive's) and the runtime reads once MPI_Test*
/// reports its request complete. Open MPI may copy a message into it on any thread that calls
/// into MPI (a sender testing its posted sends), inside Open MPI, which ThreadSanitizer cannot
/// see into; when that thread's stack is lost from TSan's history, no suppression matches the
/// report (tests/sanitizers/README.md, class 6). Nothing outside TSan builds.
void mark_written_by_mpi(const void* data, std::size_t size) noexcept {
#if defined(MPIRPC_TSAN)
  AnnotateBenignRaceSized(__FILE__, __LINE__, data, static_cast<unsigned long>(size),
                          "a posted receive's buffer, written inside MPI");
#else
  (void)data;
  (void)size;
#endif
}

/// How long a send may wait for its receiver before the wait is reported on stderr.
constexpr std::chrono::seconds slow_send(10);

MPI_Comm duplicate(MPI_Comm comm) {
  MPI_Comm out = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(comm, &out), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
  return out;
}
} // namespace

transport::transport(MPI_Comm comm, std::chrono::microseconds spin_for) : _spin_for(spin_for) {
  check_mpi(MPI_Comm_rank(comm, &_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm, &_size), "MPI_Comm_size");
  _ctrl = duplicate(comm);
  _data = duplicate(comm);
  _coll = duplicate(comm);
  int* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(_ctrl, MPI_TAG_UB, &ub, &flag);
  if (flag && ub && *ub > 1) _tag_ub = static_cast<std::uint32_t>(*ub);
  _posted = std::make_unique<posted_sends>(_size);
  _request_ring.tag = wire::tag_request;
  _reply_ring.tag = wire::tag_reply;
  post_ring(_request_ring);
  post_ring(_reply_ring);
}

transport::~transport() {
  close();
}

void transport::close() noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // After a graceful shutdown every message has been received and these complete at once; a
  // receiver that stopped without serving would never take the rest.
  if (_ctrl != MPI_COMM_NULL && _posted) {
    _posted->finish(std::min(patience(), std::chrono::milliseconds(1000)));
  }
  if (_ctrl != MPI_COMM_NULL) cancel_posted();
  for (MPI_Comm* c : {&_ctrl, &_data, &_coll}) {
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  }
}

bool transport::try_receive(int tag, incoming& out, bool replies_expected) {
  if (_loopback_size.load(std::memory_order_acquire) > 0 && try_receive_from_self(tag, out)) {
    return true;
  }
  if (tag == wire::tag_request || tag == wire::tag_reply) {
    posted_ring& ring = tag == wire::tag_request ? _request_ring : _reply_ring;
    const ring_claim claim(ring);
    if (!claim) {
      // Another thread polls this tag and delivers what comes. It may be parked in Open MPI's
      // sched_yield (oversubscribed, every empty poll yields) holding the claim: yield too,
      // rather than spin on a core it may need (W5, 4 ranks on 2 cores: 1.2 -> 0.7 M calls/s).
      std::this_thread::yield();
      return false;
    }
    return take_locked(ring, out);
  }
  if (tag != MPI_ANY_TAG) return probe_and_receive(MPI_ANY_SOURCE, tag, out);
  // Relaxed load and store, not an increment: MPI_ANY_TAG polls come from the leader alone.
  const unsigned polls = _any_polls.load(std::memory_order_relaxed) + 1;
  _any_polls.store(polls, std::memory_order_relaxed);
  if (!replies_expected && polls % replies_poll_every != 0) {
    const ring_claim claim(_request_ring);
    if (claim && take_locked(_request_ring, out)) return true;
  } else if (take_either(out)) {
    return true;
  }
  const unsigned empty = _empty_any_polls.load(std::memory_order_relaxed) + 1;
  _empty_any_polls.store(empty, std::memory_order_relaxed);
  if (empty % stray_poll_every == 0) return try_receive_stray(out);
  return false;
}

void transport::post_ring(posted_ring& ring) {
  for (std::size_t i = 0; i < posted_ring::depth; ++i) {
    ring.requests[i] = MPI_REQUEST_NULL;
    ring.buffers[i].resize(wire::max_control_bytes);
    mark_written_by_mpi(ring.buffers[i].data(), ring.buffers[i].size());
  }
  for (std::size_t i = 0; i < posted_ring::depth; ++i)
    repost(ring, i);
}

void transport::repost(posted_ring& ring, std::size_t slot) {
  check_mpi(MPI_Irecv(ring.buffers[slot].data(), static_cast<int>(wire::max_control_bytes),
                      MPI_BYTE, MPI_ANY_SOURCE, ring.tag, _ctrl, &ring.requests[slot]),
            "MPI_Irecv");
}

void transport::repost_taken(posted_ring& ring) {
  if (ring.unposted == posted_ring::depth) return;
  const std::size_t slot = ring.unposted;
  ring.unposted = posted_ring::depth;
  repost(ring, slot); // after every slot still posted: MPI matches in posting order
}

bool transport::take_locked(posted_ring& ring, incoming& out) {
  repost_taken(ring);
  MPI_Request& oldest = ring.requests[ring.head];
  if (oldest == MPI_REQUEST_NULL) repost(ring, ring.head); // an earlier re-post failed
  int done = 0;
  MPI_Status status;
  const int rc = MPI_Test(&oldest, &done, &status);
  if (!done) {
    check_mpi(rc, "MPI_Test");
    return false;
  }
  return complete_taken(ring, rc, status, out);
}

bool transport::take_either(incoming& out) {
  ring_claim requests(_request_ring);
  ring_claim replies(_reply_ring);
  if (!requests || !replies) {
    // Another thread polls one of the tags (a waiter takes replies): test the other alone.
    if (requests) return take_locked(_request_ring, out);
    if (replies) return take_locked(_reply_ring, out);
    return false;
  }
  // One test of both oldest receives: one round of MPI progress, not two.
  posted_ring* rings[2] = {&_request_ring, &_reply_ring};
  MPI_Request oldest[2];
  for (int i = 0; i < 2; ++i) {
    posted_ring& ring = *rings[i];
    repost_taken(ring);
    if (ring.requests[ring.head] == MPI_REQUEST_NULL) repost(ring, ring.head);
    oldest[i] = ring.requests[ring.head];
  }
  int index = MPI_UNDEFINED, done = 0;
  MPI_Status status;
  int rc = MPI_Testany(2, oldest, &index, &done, &status);
  if (rc == MPI_SUCCESS && !done) {
    // Open MPI's MPI_Testany checks the requests and then runs progress, without checking
    // again (MPI_Test checks again): a second call sees what that progress completed now,
    // not after this thread's next round (0.2 us of a round trip here).
    rc = MPI_Testany(2, oldest, &index, &done, &status);
  }
  if (!done || index == MPI_UNDEFINED) {
    check_mpi(rc, "MPI_Testany");
    return false;
  }
  posted_ring& ring = *rings[index];
  ring.requests[ring.head] = oldest[index]; // MPI_REQUEST_NULL: completed and freed
  if (index == 0) {
    replies.release();
  } else {
    requests.release();
  }
  return complete_taken(ring, rc, status, out);
}

bool transport::complete_taken(posted_ring& ring, int rc, const MPI_Status& status, incoming& out) {
  const std::size_t slot = ring.head;
  ring.head = (slot + 1) % posted_ring::depth;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  out.source = status.MPI_SOURCE;
  out.tag = ring.tag;
  out.prefetched.clear(); // `out` is reused: what a message from this rank carried is gone
  out.continuation = false;
  out.problem.clear();
  const char* data = ring.buffers[slot].data();
  // A receive that failed may still hold its request (Open MPI keeps it for MPI_Testany).
  if (rc != MPI_SUCCESS && ring.requests[slot] != MPI_REQUEST_NULL) {
    MPI_Request_free(&ring.requests[slot]);
  }
  if (rc == MPI_ERR_TRUNCATE) {
    // Only a sender that is not mpirpc's transport can cause this (which envelopes larger
    // messages). What arrived is kept so that a readable header can still be answered.
    out.bytes.assign(data, data + wire::max_control_bytes);
    out.problem = "a control message of " + std::to_string(count) + " bytes, more than the " +
                  std::to_string(wire::max_control_bytes) + " one may have";
  } else if (rc != MPI_SUCCESS) {
    repost(ring, slot);
    check_mpi(rc, "MPI_Test");
  } else {
    out.bytes.assign(data, data + std::max(count, 0));
  }
  ring.unposted = slot;
  // Under the ring's lock: the message it carries must be taken before the next one of its
  // tag, or the order of a sender's requests would be lost.
  if (out.problem.empty()) open_envelope(out);
  return true;
}

void transport::open_envelope(incoming& out) {
  constexpr std::size_t stub_size = sizeof(wire::header) + sizeof(std::uint64_t);
  if (out.bytes.size() != stub_size) return;
  wire::header h;
  std::memcpy(&h, out.bytes.data(), sizeof h);
  if (h.magic != wire::magic || h.version != wire::version ||
      h.kind != static_cast<std::uint8_t>(wire::kind::envelope)) {
    return; // an ordinary message (or a malformed one, for validate() to describe)
  }
  std::uint64_t size = 0;
  std::memcpy(&size, out.bytes.data() + sizeof h, sizeof size);
  const std::string what = "an envelope (data tag " + std::to_string(h.data_tag) + ") of a " +
                           std::to_string(size) + "-byte message";
  if (h.data_tag == 0 || h.data_tag > _tag_ub || h.data_tag > 0x7fffffffu ||
      size <= wire::max_control_bytes ||
      size > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
    out.problem = what + ": invalid";
    return;
  }
  transfer_pacer pacer(pacing_budget(), static_cast<std::size_t>(size));
  MPI_Message message;
  std::size_t bytes = 0;
  if (!match_data(out.source, h.data_tag, message, bytes, pacer)) {
    out.problem =
        what + " whose message did not arrive within " + std::to_string(patience().count()) + " ms";
    return;
  }
  if (bytes != size) {
    std::vector<char> scratch;
    discard_matched(message, bytes, scratch);
    out.problem = what + " that carried " + std::to_string(bytes) + " bytes";
    return;
  }
  out.bytes.resize(bytes);
  receive_matched(message, out.bytes.data(), bytes, pacer);
}

bool transport::try_receive_stray(incoming& out) {
  int flag = 0;
  MPI_Status status;
  check_mpi(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, _ctrl, &flag, &status), "MPI_Iprobe");
  // Tags 1 and 2 are left to their posted receives (all were in use), which keep their order.
  if (!flag || status.MPI_TAG == wire::tag_request || status.MPI_TAG == wire::tag_reply) {
    return false;
  }
  return probe_and_receive(status.MPI_SOURCE, status.MPI_TAG, out);
}

bool transport::probe_and_receive(int source, int tag, incoming& out) {
  int flag = 0;
  MPI_Message message;
  MPI_Status status;
  check_mpi(MPI_Improbe(source, tag, _ctrl, &flag, &message, &status), "MPI_Improbe");
  if (!flag) return false;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  out.bytes.resize(static_cast<std::size_t>(std::max(count, 0)));
  check_mpi(MPI_Mrecv(out.bytes.data(), count, MPI_BYTE, &message, &status), "MPI_Mrecv");
  out.source = status.MPI_SOURCE;
  out.tag = status.MPI_TAG;
  out.prefetched.clear();
  out.continuation = false;
  out.problem.clear();
  return true;
}

void transport::cancel_posted() noexcept {
  for (posted_ring* ring : {&_request_ring, &_reply_ring}) {
    while (ring->claimed.exchange(true, std::memory_order_acquire))
      std::this_thread::yield(); // a poller still inside (traffic has stopped: briefly)
    for (MPI_Request& r : ring->requests) {
      if (r != MPI_REQUEST_NULL) MPI_Cancel(&r);
    }
    // A cancelled receive completes at once; one that had matched a message completes when
    // the message is in (it is dropped: traffic has stopped). Bounded, never a hang.
    const auto deadline = clock::now() + std::chrono::seconds(1);
    for (;;) {
      int done = 0;
      MPI_Testall(static_cast<int>(posted_ring::depth), ring->requests, &done, MPI_STATUSES_IGNORE);
      if (done || clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

namespace {
// Messages up to this size go with MPI_Send (eager, returns at once); larger ones with
// MPI_Isend and a back-off wait, so that a rendezvous never busy-polls inside MPI.
constexpr std::size_t eager_limit = wire::max_control_bytes;
} // namespace

namespace {
/// Waits for every request, as wait_with_backoff, but does not stop at a failed one while
/// others are still pending (MPI may read their buffers until they complete). Returns the
/// first error (MPI_SUCCESS if none); `first_failed` tells whether request 0 failed.
///
/// A send cannot be abandoned: MPI may read its buffers until it completes, and Open MPI's
/// point-to-point layer does not cancel sends. So a send whose receiver never takes it (a
/// worker that stopped with shutdown(false), or that hangs) waits for good; `on_slow` is called
/// once when it has waited `slow_after`, so that such a wait is reported instead of silent.
int complete_all(std::vector<MPI_Request>& requests, bool& first_failed, transfer_pacer& pacer,
                 const std::function<void()>& on_slow) {
  const int count = static_cast<int>(requests.size());
  MPI_Status few[8];
  std::vector<MPI_Status> many(requests.size() > 8 ? requests.size() : 0);
  MPI_Status* statuses = many.empty() ? few : many.data();
  int first_error = MPI_SUCCESS;
  bool reported_slow = false;
  for (;;) {
    int done = 0;
    const int rc = MPI_Testall(count, requests.data(), &done, statuses);
    if (rc == MPI_ERR_IN_STATUS) {
      // Completed requests, failed or not, are freed (MPI_REQUEST_NULL); pending ones report
      // MPI_ERR_PENDING and are waited for on the next round.
      bool pending = false;
      for (int i = 0; i < count; ++i) {
        const int e = statuses[static_cast<std::size_t>(i)].MPI_ERROR;
        if (e == MPI_ERR_PENDING) {
          pending = true;
        } else if (e != MPI_SUCCESS) {
          if (first_error == MPI_SUCCESS) first_error = e;
          if (i == 0) first_failed = true;
        }
      }
      if (!pending) return first_error;
    } else if (rc != MPI_SUCCESS) {
      return rc; // nothing more is known about the requests
    } else if (done) {
      return first_error;
    }
    const auto waited = pacer.waited();
    if (!reported_slow && waited >= slow_send) {
      reported_slow = true;
      on_slow();
    }
    pacer.pause(waited);
  }
}
} // namespace

void transport::post_and_wait(int dest, int tag, const char* data, std::size_t size,
                              const std::vector<segment>& parts, int data_tag, bool chunked,
                              bool* control_sent) {
  // sender::send_message has checked that size fits MPI's int count.
  if (size <= eager_limit && parts.empty()) {
    // A message that Open MPI does not copy out at once is posted from a copy, so that this
    // thread does not wait for the receiver to take it (posted_sends).
    if (size > posted_sends::inline_bytes) {
      _posted->post(data, size, dest, tag, _ctrl);
    } else {
      check_mpi(MPI_Send(data, static_cast<int>(size), MPI_BYTE, dest, tag, _ctrl), "MPI_Send");
    }
    if (control_sent) *control_sent = true;
    return;
  }
  std::size_t total = size;
  for (const segment& s : parts)
    total += s.bytes;
  // Spins while the receiver should still be copying: its copy takes time in proportion to the
  // bytes, and this thread can do nothing else until it completes.
  transfer_pacer pacer(pacing_budget(), total);
  std::vector<MPI_Request> requests;
  requests.reserve(1 + parts.size());
  requests.push_back(MPI_REQUEST_NULL);
  // A control message too large for the receives posted for it goes in an envelope: a stub on
  // the control tag, the message itself on the data communicator ahead of its segments (one
  // tag, so MPI keeps the two in order).
  const bool enveloped =
      size > wire::max_control_bytes && (tag == wire::tag_request || tag == wire::tag_reply);
  if (enveloped) {
    if (parts.empty()) data_tag = static_cast<int>(next_data_tag());
    wire::header h{};
    h.magic = wire::magic;
    h.version = wire::version;
    h.kind = static_cast<std::uint8_t>(wire::kind::envelope);
    h.data_tag = static_cast<std::uint32_t>(data_tag);
    h.payload_size = sizeof(std::uint64_t);
    char stub[sizeof h + sizeof(std::uint64_t)];
    const std::uint64_t n = size;
    std::memcpy(stub, &h, sizeof h);
    std::memcpy(stub + sizeof h, &n, sizeof n);
    check_mpi(MPI_Send(stub, static_cast<int>(sizeof stub), MPI_BYTE, dest, tag, _ctrl),
              "MPI_Send"); // if this fails, nothing has left
    if (control_sent) *control_sent = true;
    // From here on the receiver has the message (the stub) and counts it, whatever follows; if
    // this fails, nothing else was posted and the receiver gives up after its patience.
    check_mpi(
        MPI_Isend(data, static_cast<int>(size), MPI_BYTE, dest, data_tag, _data, &requests.back()),
        "MPI_Isend");
  } else {
    check_mpi(MPI_Isend(data, static_cast<int>(size), MPI_BYTE, dest, tag, _ctrl, &requests.back()),
              "MPI_Isend"); // if this fails, nothing has left
    if (control_sent) *control_sent = true;
  }
  std::exception_ptr failure;
  try {
    for (const segment& s : parts) {
      const char* p = static_cast<const char*>(s.data);
      std::size_t left = s.bytes;
      do {
        const std::size_t chunk = chunked ? std::min(left, wire::max_chunk) : left;
        requests.push_back(MPI_REQUEST_NULL);
        check_mpi(MPI_Isend(p, static_cast<int>(chunk), MPI_BYTE, dest, data_tag, _data,
                            &requests.back()),
                  "MPI_Isend");
        p += chunk;
        left -= chunk;
      } while (left > 0);
    }
  } catch (...) {
    // The control message has left: the receiver will get it and wait for the segments that
    // were not posted (until its patience runs out). What was posted must complete before
    // the caller may release the buffers.
    failure = std::current_exception();
  }
  bool control_failed = false;
  const int rc = complete_all(requests, control_failed, pacer, [&] {
    std::fprintf(stderr,
                 "mpirpc[rank %d]: a message of %zu bytes to rank %d has waited %d s for the "
                 "receiver to take it, and waits on: MPI reads its buffers until then and cannot "
                 "cancel it. Is rank %d still serving? (A worker that stopped with "
                 "shutdown(false) receives nothing more.)\n",
                 _rank, total, dest, static_cast<int>(slow_send.count()), dest);
  });
  if (control_failed && control_sent && !enveloped) *control_sent = false;
  if (failure) std::rethrow_exception(failure);
  check_mpi(rc, "MPI_Testall");
}

void transport::send_to_self(int tag, const char* data, std::size_t size,
                             const std::vector<segment>& segments) {
  incoming message;
  message.source = _rank;
  message.tag = tag;
  message.bytes.assign(data, data + size);
  message.prefetched.reserve(segments.size());
  for (const segment& s : segments) {
    const char* p = static_cast<const char*>(s.data);
    message.prefetched.emplace_back(p, p + s.bytes);
  }
  std::lock_guard<std::mutex> lock(_loopback_mutex);
  _loopback.push_back(std::move(message));
  _loopback_size.fetch_add(1, std::memory_order_release);
}

bool transport::try_receive_from_self(int tag, incoming& out) {
  std::lock_guard<std::mutex> lock(_loopback_mutex);
  // The first one with the tag, as MPI matches: messages with one tag keep their order.
  const auto it = std::find_if(_loopback.begin(), _loopback.end(), [tag](const incoming& m) {
    return tag == MPI_ANY_TAG || m.tag == tag;
  });
  if (it == _loopback.end()) return false;
  out.source = it->source;
  out.tag = it->tag;
  out.bytes.swap(it->bytes); // out's buffer goes back with the entry and is freed with it
  out.prefetched = std::move(it->prefetched);
  out.continuation = false;
  _loopback.erase(it);
  _loopback_size.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void transport::send(int dest, int tag, const char* data, std::size_t size,
                     const std::vector<segment>& segments, std::uint32_t data_tag,
                     bool* control_sent) {
  if (control_sent) *control_sent = false;
  if (dest == _rank) {
    send_to_self(tag, data, size, segments); // all or nothing: throws only if it could not copy
    if (control_sent) *control_sent = true;
    return;
  }
  if (!segments.empty() && (data_tag == 0 || data_tag > _tag_ub)) {
    // Checked before anything is sent, so that no control message announces segments that
    // could never follow.
    throw mpi_error("MPI_Isend", MPI_ERR_TAG,
                    "data tag " + std::to_string(data_tag) + " outside 1.." +
                        std::to_string(_tag_ub));
  }
  post_and_wait(dest, tag, data, size, segments, static_cast<int>(data_tag), true, control_sent);
}

void transport::send_raw(int dest, int tag, const char* data, std::size_t size,
                         const std::vector<segment>& messages, int data_tag, bool* control_sent) {
  if (control_sent) *control_sent = false;
  post_and_wait(dest, tag, data, size, messages, data_tag, false, control_sent);
}

void transport::allreduce_sum(const std::uint64_t* in, std::uint64_t* out, int count) {
  MPI_Request request;
  check_mpi(MPI_Iallreduce(in, out, count, MPI_UINT64_T, MPI_SUM, _coll, &request),
            "MPI_Iallreduce");
  wait_with_backoff(1, &request);
}

void transport::allgather(const std::uint64_t* in, int count, std::uint64_t* out) {
  MPI_Request request;
  check_mpi(MPI_Iallgather(in, count, MPI_UINT64_T, out, count, MPI_UINT64_T, _coll, &request),
            "MPI_Iallgather");
  wait_with_backoff(1, &request);
}

bool transport::match_data(int source, std::uint32_t data_tag, MPI_Message& message,
                           std::size_t& bytes) {
  transfer_pacer pacer(pacing_budget(), 0);
  return match_data(source, data_tag, message, bytes, pacer);
}

bool transport::match_data(int source, std::uint32_t data_tag, MPI_Message& message,
                           std::size_t& bytes, transfer_pacer& pacer) {
  const auto limit = patience();
  const auto start = clock::now();
  for (;;) {
    int flag = 0;
    MPI_Status status;
    check_mpi(MPI_Improbe(source, static_cast<int>(data_tag), _data, &flag, &message, &status),
              "MPI_Improbe");
    if (flag) {
      int count = 0;
      MPI_Get_count(&status, MPI_BYTE, &count);
      bytes = static_cast<std::size_t>(std::max(count, 0));
      return true;
    }
    if (clock::now() - start >= limit) return false;
    pacer.pause(pacer.waited());
  }
}

void transport::receive_matched(MPI_Message& message, void* dst, std::size_t bytes) {
  transfer_pacer pacer(pacing_budget(), bytes);
  receive_matched(message, dst, bytes, pacer);
}

void transport::receive_matched(MPI_Message& message, void* dst, std::size_t bytes,
                                transfer_pacer& pacer) {
  MPI_Request request;
  check_mpi(MPI_Imrecv(dst, static_cast<int>(bytes), MPI_BYTE, &message, &request), "MPI_Imrecv");
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    pacer.pause(pacer.waited());
  }
}

void transport::discard_matched(MPI_Message& message, std::size_t bytes,
                                std::vector<char>& scratch) {
  scratch.resize(bytes);
  receive_matched(message, scratch.data(), bytes);
}

std::uint32_t transport::next_data_tag() noexcept {
  const std::uint32_t n = _next_tag.fetch_add(1, std::memory_order_relaxed);
  return 1 + n % _tag_ub;
}

} // namespace mpirpc::detail
