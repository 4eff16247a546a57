// SPDX-License-Identifier: MIT
// Starting and stopping mpirpc on every rank, and the workers of the running session.
//
// The runtime is one per process. It starts collectively on a communicator (MPI_COMM_WORLD
// by default): every rank calls init_rpc() (or constructs an mpirpc::runtime) and becomes the
// worker named options::name ("worker<rank>" by default). If the application has not
// initialised MPI, init_rpc does it with MPI_THREAD_MULTIPLE and finalizes MPI at process exit;
// if it has, init_rpc checks that MPI_THREAD_MULTIPLE is provided and never finalizes MPI.
// The runtime communicates on a private duplicate of the communicator, so the application's
// own MPI traffic is untouched.
//
// Threads. The runtime runs num_worker_threads + 1 background threads. At any moment one of
// them is the progress thread: it polls MPI, completes futures with the replies it receives
// and runs an incoming request's handler itself (no hand-off on the critical path), while
// another thread takes over polling if the handler runs long (leader/followers). At most
// num_worker_threads handlers run at once; further requests wait in a queue. Between polls a
// thread sleeps as briefly as the OS allows while traffic flowed within the last millisecond,
// then for a quarter of the idle time beyond that (at most options::idle_poll_interval; 200 us
// while replies are owed and no thread waits for one; 1 ms for a waiting thread), so an idle
// rank keeps no core busy; where options::busy_poll allows, it spins instead of sleeping for
// the first 200 us after traffic.
//
// shutdown() is collective and graceful by default: it returns on every rank only once no
// call is in flight anywhere, serving requests while it waits.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <mpi.h>

#include <mpirpc/worker.hpp>

namespace mpirpc {

/// Whether mpirpc's threads may spin (keep a core busy) for up to 200 us after traffic instead
/// of sleeping between polls. Spinning cuts latency severalfold while calls flow; when spinning
/// threads outnumber cores without bound, a hand-off waits for a scheduler tick instead. The
/// spin is bounded, so it stays ahead with a few ranks per core.
enum class busy_polling {
  automatic, ///< spin unless this node runs more than two of the communicator's ranks per core
  enabled,
  disabled,
};

/// Start-up options. Defaults follow torch.distributed.rpc where it has one.
struct options {
  /// This rank's worker name; empty means "worker<rank>". Must be unique across ranks.
  std::string name;
  /// Handlers that may run at once on this rank (torch's num_worker_threads, default 16).
  int num_worker_threads = 16;
  /// Default timeout of every call (torch's rpc_timeout, 60 s); zero means none.
  std::chrono::duration<double> rpc_timeout = std::chrono::seconds(60);
  /// The communicator whose ranks become the workers. Duplicated; the user's is untouched.
  MPI_Comm comm = MPI_COMM_WORLD;
  /// Longest sleep between polls of an idle rank: bounds idle CPU and first-call latency.
  /// An idle poll costs 20-30 us of CPU on the 2-core development machine with 4 ranks (Open
  /// MPI's progress engine, oversubscribed), so 10 ms keeps an idle rank near 0.3 % of a core;
  /// the sleep grows to this bound only after about 40 ms without traffic.
  std::chrono::microseconds idle_poll_interval = std::chrono::microseconds(10000);
  /// Spinning for up to 200 us after a message or at the start of a wait; never while idle.
  /// The environment variable MPIRPC_BUSY_POLL=automatic|enabled|disabled overrides it.
  busy_polling busy_poll = busy_polling::automatic;
  /// Flow control: the most calls this worker may have awaiting a reply from any one worker.
  /// A call beyond it waits in rpc_sync/rpc_async/remote until an earlier call to that worker
  /// completes (its reply, error or timeout), so one worker flooding another keeps memory
  /// bounded on both sides. The wait counts toward the call's timeout; a call whose timeout
  /// passes while it waits fails with timeout_error without being sent. Only application code
  /// waits: calls made by handlers, and in continuations that run on the progress path (on
  /// mpirpc's threads, or on a thread inside future::wait that received the reply), are sent
  /// at once and may exceed the limit, since waiting there would hold the threads that serve
  /// and receive the calls the window waits for. Zero: no limit.
  int max_outstanding_calls = 1024;
  /// Flow control of one-way calls (rpc_ff), by bytes: the most bytes of one-way calls (their
  /// messages, large arguments included) this worker may have sent to any one worker that
  /// have not yet started there. A call beyond it waits in rpc_ff until earlier ones start;
  /// the receiver thus keeps at most about 1.25 × this much of one sender's one-way calls
  /// queued (the sender learns of their start in steps of a quarter of it), whatever the
  /// flood. The sender learns it from markers, small one-way messages of the runtime's own
  /// sent behind every quarter of the limit, which the receiver acknowledges once it takes
  /// them up (after the calls before them). Only application threads wait, as for
  /// max_outstanding_calls; one that waits the whole rpc_timeout throws timeout_error
  /// without sending the call.
  /// Stopping wakes a waiting caller with shutdown_error. Zero: no limit.
  std::size_t max_one_way_bytes = std::size_t(4) << 20;
  /// Memory this process may keep, between calls, for the storage of large vectors of
  /// trivially copyable elements that mpirpc is done with: a handler's result once its reply
  /// has left, an argument the handler did not take, and an argument passed as an rvalue
  /// (rpc_sync(to, f, std::move(v)), which then leaves v empty) once its request has left. The
  /// next large vector of that type received goes into it without being zero-filled first,
  /// which saves a pass over its memory (1.3-1.8 ms for 16 MiB on the 2-core development
  /// machine). At most two vectors per type are kept, all freed by shutdown(). Zero: none kept.
  std::size_t spare_buffer_bytes = std::size_t(32) << 20;
};

/// Counters of one rank's runtime since start. Read with stats().
struct runtime_stats {
  std::uint64_t requests_sent = 0;
  std::uint64_t requests_served = 0;
  std::uint64_t replies_received = 0;
  std::uint64_t late_replies_dropped = 0;
  std::uint64_t malformed_messages = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t calls_delayed = 0; ///< calls that waited for room (options::max_outstanding_calls)
  std::uint64_t rref_owned_objects = 0; ///< objects this worker owns that references keep alive
  std::uint64_t rref_references = 0;    ///< rref records alive on this worker (any owner)
  std::uint64_t one_way_sent = 0;       ///< rpc_ff calls this worker sent
  /// rpc_ff calls that waited for earlier ones to start (options::max_one_way_bytes)
  std::uint64_t one_way_delayed = 0;
  std::uint64_t one_way_run = 0; ///< rpc_ff calls this worker ran (or tried to)
  /// rpc_ff calls to this worker that failed here: the function threw, its arguments could not
  /// be decoded, it is not registered, or the worker was stopping. Each is logged on stderr.
  std::uint64_t one_way_failed = 0;
  std::uint64_t batches_sent = 0;     ///< MPI messages that carried several calls or replies
  std::uint64_t messages_batched = 0; ///< calls and replies that travelled in those batches
};

/// Starts the runtime on this rank. Collective over options.comm.
/// Throws init_error (already running, called from a handler or continuation, MPI finalized or
/// without MPI_THREAD_MULTIPLE, options::comm null, and, on every rank alike: duplicate or
/// invalid names, invalid options, conflicting registrations), mpi_error.
void init_rpc(options opts = {});
/// torch's spelling: init_rpc("worker1", opts).
void init_rpc(std::string name, options opts = {});

/// Stops the runtime. Collective. With graceful = true waits until no call is in flight on
/// any rank (every call has its reply or has timed out, and no handler runs), serving requests
/// meanwhile; with graceful = false fails this rank's outstanding
/// futures with shutdown_error, answers queued requests with shutdown_error, lets running
/// handlers finish and stops (other ranks must shut down too).
/// Throws shutdown_error when called from a handler or a progress-path continuation.
/// A call when not running does nothing.
void shutdown(bool graceful = true);
/// torch's shutdown(graceful, timeout): a graceful shutdown that gives up once `timeout` has
/// passed on any rank (zero or negative: no limit). Then, on every rank alike, the runtime
/// stops as with graceful = false (outstanding futures fail with shutdown_error) and this
/// throws shutdown_error naming the workers that still had work and how much (calls awaiting
/// replies, handlers running, requests queued, messages in flight). Ranks may pass different
/// timeouts; the first to expire decides for all.
void shutdown(bool graceful, std::chrono::duration<double> timeout);

/// True between init_rpc and shutdown.
bool is_running() noexcept;

/// This worker. Throws shutdown_error when not running.
worker_info get_worker_info();
/// The worker with this name; throws unknown_worker_error if there is none.
worker_info get_worker_info(std::string_view name);
/// Every worker, ordered by id.
std::vector<worker_info> get_worker_infos();

/// This rank's counters.
runtime_stats stats();

/// RAII form of init_rpc/shutdown: starts in the constructor, shuts down gracefully in the
/// destructor (errors there are reported on stderr, never thrown). Not copyable or movable.
class runtime {
public:
  explicit runtime(options opts = {});
  explicit runtime(std::string name, options opts = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Shuts down the session this object started, now (collective); the destructor then does
  /// nothing. Neither touches a later session started after this one was shut down.
  void shutdown(bool graceful = true);
  /// As mpirpc::shutdown(graceful, timeout), for this object's session.
  void shutdown(bool graceful, std::chrono::duration<double> timeout);

private:
  const void* _session = nullptr;
};

} // namespace mpirpc
