// SPDX-License-Identifier: MIT
// Start-up, shutdown and the process-wide runtime; the entry points the public templates call.
#include <mpirpc/barrier.hpp>
#include <mpirpc/runtime.hpp>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <mpirpc/detail/spare_buffers.hpp>
#include <mpirpc/errors.hpp>
#include <mpirpc/rpc.hpp>

#include "core/lending.hpp"
#include "core/registry.hpp"
#include "core/this_thread.hpp"
#include "core/waiting.hpp"
#include "engine.hpp"
#include "errors_internal.hpp"
#include "net/backoff.hpp"
#include "net/transport.hpp"
#include "rref/rref_table.hpp"

namespace mpirpc {
namespace detail {
namespace {

/// One session of the runtime: the engine and the rref service built on its parts.
struct rpc_session {
  rpc_session(const options& opts, std::unique_ptr<transport> t, std::vector<worker_info> workers,
              bool spin_allowed, bool oversubscribed)
      : eng(opts, std::move(t), std::move(workers), spin_allowed, oversubscribed, fork_lending()),
        rrefs(eng.identity(), eng.outgoing(), eng.tasks()) {
    eng.serve_flagged_with(rrefs);
  }
  /// A session that ends without shutdown() (the process exits with it running): the threads,
  /// which may be inside the rref table, stop before the table goes.
  ~rpc_session() {
    eng.stop_if_running("the runtime was destroyed");
    rrefs.clear();
  }
  rpc_session(const rpc_session&) = delete;
  rpc_session& operator=(const rpc_session&) = delete;
  engine eng;
  rref_table rrefs;
};

std::mutex g_lifecycle;                       // serialises init_rpc / shutdown
std::atomic<rpc_session*> g_session{nullptr}; // the running session, read on every call
// Every session of the process, kept (stopped) after it ends: a continuation may still hold a
// reply_token pointing at its engine, and a stopped engine drops such late replies safely;
// a reference record keeps a pointer to its table.
std::vector<std::unique_ptr<rpc_session>> g_sessions;
bool g_ever_started = false;
bool g_mpi_is_ours = false;

void finalize_mpi_at_exit() {
  mpirpc::shutdown(false);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void ensure_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) throw init_error("mpirpc: init_rpc() called after MPI_Finalize()");
  int provided = 0;
  if (!initialized) {
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    if (!g_mpi_is_ours) {
      g_mpi_is_ours = true;
      std::atexit(finalize_mpi_at_exit);
    }
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    throw init_error(
        "mpirpc: MPI provides thread level " + std::to_string(provided) +
        " but mpirpc needs MPI_THREAD_MULTIPLE: initialise MPI with MPI_Init_thread(&argc, &argv, "
        "MPI_THREAD_MULTIPLE, &provided) (or let init_rpc() do it) and use an MPI built with "
        "thread support");
  }
}

/// How many ranks of `comm` share this node. Collective over `comm`.
int ranks_on_this_node(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int local_ranks = 1;
  const int rc = MPI_Comm_size(node, &local_ranks);
  MPI_Comm_free(&node);
  check_mpi(rc, "MPI_Comm_size");
  return local_ranks;
}

/// Whether pollers may spin: by default unless this node runs more than two ranks of the
/// communicator per core.
bool spinning_allowed(busy_polling policy, int local_ranks) {
  if (const char* env = std::getenv("MPIRPC_BUSY_POLL")) {
    const std::string value(env);
    if (value == "enabled") policy = busy_polling::enabled;
    if (value == "disabled") policy = busy_polling::disabled;
    if (value == "automatic") policy = busy_polling::automatic;
    if (value != "enabled" && value != "disabled" && value != "automatic") {
      std::fprintf(stderr,
                   "mpirpc: warning: ignoring MPIRPC_BUSY_POLL=%s (use automatic, enabled or "
                   "disabled)\n",
                   env);
    }
  }
  switch (policy) {
  case busy_polling::enabled:
    return true;
  case busy_polling::disabled:
    return false;
  case busy_polling::automatic:
    break;
  }
  // The node's cores, not this process's affinity mask: mpiexec binds each rank to a core of
  // its own when there are enough. Spinning is bounded (it stops soon after traffic does), and
  // measured with 3 and 4 ranks on 2 cores it still beat sleeping polls clearly; beyond two
  // ranks per core it is not tried.
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > 0 && local_ranks <= 2 * cores;
}

/// Whether this node runs more of the communicator's ranks than it has cores: a thread that
/// wakes up then takes a core from another rank's (engine::wait paces its polls for that).
bool node_oversubscribed(int local_ranks) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > 0 && local_ranks > cores;
}

/// Every rank's string, gathered on every rank. Collective over `comm`.
std::vector<std::string> gather_strings(MPI_Comm comm, int size, const std::string& mine) {
  std::vector<int> counts(static_cast<std::size_t>(size));
  const int length = static_cast<int>(mine.size());
  MPI_Request request;
  check_mpi(MPI_Iallgather(&length, 1, MPI_INT, counts.data(), 1, MPI_INT, comm, &request),
            "MPI_Iallgather");
  wait_with_backoff(1, &request);
  std::vector<int> offsets(static_cast<std::size_t>(size));
  int total = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    offsets[r] = total;
    total += counts[r];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  check_mpi(MPI_Iallgatherv(mine.data(), length, MPI_CHAR, all.data(), counts.data(),
                            offsets.data(), MPI_CHAR, comm, &request),
            "MPI_Iallgatherv");
  wait_with_backoff(1, &request);
  std::vector<std::string> out;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    out.push_back(
        all.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(counts[r])));
  }
  return out;
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() >= 128) return false;
  for (unsigned char c : name) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == ':')) return false;
  }
  return true;
}

/// Gathers every rank's name, registry digest and local start-up problems (bad options,
/// conflicting registrations); every rank reaches the same verdict, so that a problem on one
/// rank fails init_rpc on all of them instead of leaving the others waiting.
std::vector<worker_info> agree_on_workers(transport& t, const std::string& name,
                                          std::uint64_t digest, const std::string& problem) {
  const int size = t.size();
  MPI_Comm comm = t.collective_comm();
  std::vector<std::uint64_t> digests(static_cast<std::size_t>(size));
  MPI_Request request;
  check_mpi(
      MPI_Iallgather(&digest, 1, MPI_UINT64_T, digests.data(), 1, MPI_UINT64_T, comm, &request),
      "MPI_Iallgather");
  wait_with_backoff(1, &request);
  const std::vector<std::string> names = gather_strings(comm, size, name);
  const std::vector<std::string> rank_problems = gather_strings(comm, size, problem);

  std::vector<worker_info> workers;
  std::string problems;
  std::map<std::string, int> seen;
  for (int r = 0; r < size; ++r) {
    const auto i = static_cast<std::size_t>(r);
    if (!rank_problems[i].empty())
      problems += "\n  rank " + std::to_string(r) + ": " + rank_problems[i];
    if (!valid_name(names[i])) {
      problems += "\n  rank " + std::to_string(r) + " has the invalid worker name '" + names[i] +
                  "' (1 to 127 letters, digits, '_', '-' or ':')";
    }
    auto [it, inserted] = seen.emplace(names[i], r);
    if (!inserted) {
      problems += "\n  the worker name '" + names[i] + "' is used by ranks " +
                  std::to_string(it->second) + " and " + std::to_string(r);
    }
    workers.push_back(worker_info{names[i], r});
  }
  if (!problems.empty()) throw init_error("mpirpc: init_rpc() failed:" + problems);

  if (t.rank() == 0) {
    std::string differ;
    for (std::size_t r = 1; r < digests.size(); ++r) {
      if (digests[r] != digests[0]) differ += (differ.empty() ? "" : ", ") + workers[r].name;
    }
    if (!differ.empty()) {
      std::fprintf(stderr,
                   "mpirpc: warning: the registered functions of %s differ from those of %s; "
                   "calling a function that the callee lacks fails with "
                   "unknown_function_error\n",
                   differ.c_str(), workers[0].name.c_str());
    }
  }
  return workers;
}

} // namespace

namespace {
rpc_session& running_session() {
  rpc_session* s = g_session.load(std::memory_order_acquire);
  if (!s) {
    throw shutdown_error(g_ever_started
                             ? "mpirpc: the RPC runtime has been shut down; call init_rpc() to "
                               "start a new session"
                             : "mpirpc: the RPC runtime is not running; call "
                               "mpirpc::init_rpc() (or construct an mpirpc::runtime) first");
  }
  return *s;
}
} // namespace

engine& running_engine() {
  return running_session().eng;
}

// ---- the entry points of rref.hpp that need the running session (the rest, which start from
// a record, are in lib/rref/rref_table.cpp)

std::shared_ptr<rref_record> rref_new_record(const destination& owner) {
  rpc_session& s = running_session();
  return s.rrefs.new_record(s.eng.resolve(owner));
}

std::shared_ptr<rref_record> rref_load(reader& in) {
  return running_session().rrefs.load(in);
}

// ---- entry points of the public templates

request_buffers& begin_request() {
  request_buffers& buffers = this_thread().request;
  fork_lending().undo(0); // what a request abandoned by an exception had taken
  buffers.payload.resize(sizeof(wire::header));
  buffers.segments.clear();
  return buffers;
}

void abandon_request() noexcept {
  fork_lending().undo(0);
}

namespace {
/// The engine, destination rank and registry entry of a call; throws at the call site.
struct resolved_call {
  engine& e;
  int dest;
  const function_entry& entry;
};
resolved_call resolve_call(const destination& to, const call_target& target) {
  engine& e = running_engine();
  const int dest = e.resolve(to);
  const function_entry* entry =
      target.member ? registry::instance().by_member(target.member, target.member_size)
                    : registry::instance().by_pointer(target.fn);
  if (!entry) {
    throw unknown_function_error(
        target.member
            ? "mpirpc: the member function called through an rref is not registered on this "
              "rank; register it with MPIRPC_REGISTER_METHOD(Class::method) at namespace scope"
            : "mpirpc: the function passed to rpc_sync/rpc_async/rpc_ff/remote is not registered "
              "on this rank; register it with MPIRPC_REGISTER(function) at namespace scope");
  }
  return {e, dest, *entry};
}
} // namespace

bool send_call(const destination& to, const call_target& target, std::uint16_t flags,
               request_buffers& request, std::shared_ptr<reply_sink> sink, double timeout_s) {
  const trim_on_exit trim{request.payload};
  // Everything the request borrowed while it was built (since begin_request) goes with it, or
  // back if it is not sent (refused, or timed out waiting for room).
  outgoing_transaction lent(fork_lending(), 0);
  const resolved_call call = resolve_call(to, target);
  const bool sent =
      call.e.send_request(call.dest, call.entry, flags, request, std::move(sink), timeout_s);
  if (sent) lent.sent();
  return sent;
}

void send_one_way(const destination& to, const call_target& target, request_buffers& request) {
  const trim_on_exit trim{request.payload};
  outgoing_transaction lent(fork_lending(), 0);
  const resolved_call call = resolve_call(to, target);
  call.e.send_one_way(call.dest, call.entry, request);
  lent.sent();
}

} // namespace detail

// ---- public API

void init_rpc(options opts) {
  using namespace detail;
  if (engine::on_engine_thread() || in_progress_callback()) {
    throw init_error("mpirpc: init_rpc() cannot be called from a handler or from a continuation "
                     "that runs on mpirpc's progress path");
  }
  std::lock_guard<std::mutex> lock(g_lifecycle);
  if (g_session.load()) {
    throw init_error("mpirpc: init_rpc() called while the runtime is already running on this "
                     "process; call shutdown() first");
  }
  ensure_mpi();
  if (opts.comm == MPI_COMM_NULL) throw init_error("mpirpc: options::comm is MPI_COMM_NULL");
  const int local_ranks = ranks_on_this_node(opts.comm);
  const bool spin = spinning_allowed(opts.busy_poll, local_ranks);
  auto t =
      std::make_unique<transport>(opts.comm, spin ? spin_window : std::chrono::microseconds(0));
  // Problems found here are agreed on collectively below, so that every rank fails alike.
  std::string problem;
  if (opts.num_worker_threads < 1) {
    problem += "options::num_worker_threads must be at least 1, not " +
               std::to_string(opts.num_worker_threads) + "; ";
  }
  if (opts.rpc_timeout.count() < 0) problem += "options::rpc_timeout must not be negative; ";
  if (opts.max_outstanding_calls < 0) {
    problem += "options::max_outstanding_calls must not be negative (zero: no limit), not " +
               std::to_string(opts.max_outstanding_calls) + "; ";
  }
  if (opts.idle_poll_interval.count() < 1) {
    problem += "options::idle_poll_interval must be at least 1 microsecond; ";
  }
  registry& reg = registry::instance();
  const std::string conflicts = reg.problems();
  if (!conflicts.empty()) problem += "conflicting function registrations: " + conflicts;
  if (opts.name.empty()) opts.name = "worker" + std::to_string(t->rank());
  std::vector<worker_info> workers = agree_on_workers(*t, opts.name, reg.digest(), problem);
  spare_budget.store(opts.spare_buffer_bytes, std::memory_order_relaxed);
  g_sessions.push_back(std::make_unique<rpc_session>(opts, std::move(t), std::move(workers), spin,
                                                     node_oversubscribed(local_ranks)));
  rpc_session* s = g_sessions.back().get();
  reg.set_frozen(true);
  g_ever_started = true;
  // Published before the threads start: a request may arrive, and its handler may call out,
  // before init_rpc returns.
  g_state_waiter.store(&s->eng, std::memory_order_release);
  g_session.store(s, std::memory_order_release);
  s->eng.start_threads();
}

void init_rpc(std::string name, options opts) {
  opts.name = std::move(name);
  init_rpc(std::move(opts));
}

void shutdown(bool graceful) {
  shutdown(graceful, std::chrono::duration<double>(0));
}

namespace detail {
namespace {

using clock = std::chrono::steady_clock;

/// The deadline of a graceful shutdown or a barrier: none for a zero, negative or huge timeout.
clock::time_point deadline_after(std::chrono::duration<double> timeout) {
  constexpr double max_timeout_s = 1e9; // about 31 years: no limit
  return timeout.count() > 0 && timeout.count() < max_timeout_s
             ? clock::now() + std::chrono::duration_cast<clock::duration>(timeout)
             : clock::time_point::max();
}

/// Stops the running session `s` for `reason`. The caller holds g_lifecycle.
void end_session(rpc_session& s, const std::string& reason) {
  const std::string leftovers = s.rrefs.leftovers();
  if (!leftovers.empty()) s.eng.log(leftovers);
  g_session.store(nullptr, std::memory_order_release);
  g_state_waiter.store(nullptr, std::memory_order_release);
  s.eng.stop(reason);
  s.rrefs.clear();
  // The memory kept for large vectors goes back with the runtime, and none is kept until the
  // next init_rpc (a call that races with this shutdown finds no budget).
  spare_budget.store(0, std::memory_order_relaxed);
  release_spare_buffers();
  registry::instance().set_frozen(false);
}

/// Why a collective wait cannot run on this thread (a handler's or the progress path's, which
/// the wait needs), or an empty string when it can.
std::string refused_here(const char* what, const char* why) {
  if (!engine::on_engine_thread() && !in_progress_callback()) return {};
  return std::string("mpirpc: ") + what +
         " cannot be called from a handler or from a continuation that runs on mpirpc's "
         "progress path (" +
         why + "); call it from an application thread";
}

} // namespace
} // namespace detail

void shutdown(bool graceful, std::chrono::duration<double> timeout) {
  using namespace detail;
  const std::string refused = refused_here(
      "shutdown()",
      "quiescence would wait for this very handler, and stopping would join its thread");
  if (!refused.empty()) throw shutdown_error(refused);
  std::string timed_out;
  {
    std::lock_guard<std::mutex> lock(g_lifecycle);
    rpc_session* s = g_session.load();
    if (!s) return;
    std::string reason = "shutdown(graceful=false) was called";
    if (graceful) {
      try {
        const quiescence::outcome quiet =
            s->eng.quiesce(quiet_purpose::shutdown, deadline_after(timeout));
        switch (quiet.what) {
        case quiescence::outcome::kind::quiet:
          reason = "the runtime shut down";
          break;
        case quiescence::outcome::kind::timed_out:
          timed_out = quiet.unfinished;
          reason = "the graceful shutdown timed out";
          break;
        case quiescence::outcome::kind::mismatched:
          reason = "graceful shutdown failed: " + quiet.unfinished;
          std::fprintf(stderr, "mpirpc: %s\n", reason.c_str());
          break;
        }
      } catch (const std::exception& x) {
        reason = std::string("graceful shutdown failed: ") + x.what();
        std::fprintf(stderr, "mpirpc: %s\n", reason.c_str());
      }
    }
    end_session(*s, reason);
  }
  if (!timed_out.empty()) throw shutdown_error(timed_out);
}

void barrier() {
  barrier(std::chrono::duration<double>(0));
}

void barrier(std::chrono::duration<double> timeout) {
  using namespace detail;
  const std::string refused =
      refused_here("barrier()", "quiet means that no handler runs: it would wait for itself");
  if (!refused.empty()) throw future_error(refused);
  const auto deadline = deadline_after(timeout);
  // Held for the whole barrier: the session stays, and a shutdown on another thread of this
  // rank waits for it (the collectives of one rank are matched in the order they start).
  std::lock_guard<std::mutex> lock(g_lifecycle);
  rpc_session* s = g_session.load();
  if (!s) {
    throw shutdown_error(g_ever_started ? "mpirpc: barrier() called after shutdown()"
                                        : "mpirpc: barrier() called before init_rpc()");
  }
  const quiescence::outcome quiet = s->eng.quiesce(quiet_purpose::barrier, deadline);
  switch (quiet.what) {
  case quiescence::outcome::kind::quiet:
    return;
  case quiescence::outcome::kind::timed_out:
    throw timeout_error(quiet.unfinished);
  case quiescence::outcome::kind::mismatched: {
    // The ranks that called shutdown() stop now; so does this one, so that the session ends
    // alike everywhere instead of waiting for waves nobody joins.
    const std::string reason = "barrier() failed: " + quiet.unfinished;
    end_session(*s, reason);
    throw shutdown_error("mpirpc: " + reason + "; the runtime has shut down");
  }
  }
}

bool is_running() noexcept {
  return detail::g_session.load() != nullptr;
}

worker_info get_worker_info() {
  return detail::running_engine().self();
}

worker_info get_worker_info(std::string_view name) {
  detail::engine& e = detail::running_engine();
  return e.workers()[static_cast<std::size_t>(e.resolve(destination(name)))];
}

std::vector<worker_info> get_worker_infos() {
  return detail::running_engine().workers();
}

runtime_stats stats() {
  detail::rpc_session& s = detail::running_session();
  runtime_stats st = s.eng.stats();
  st.rref_owned_objects = s.rrefs.owned_objects();
  st.rref_references = s.rrefs.references();
  return st;
}

runtime::runtime(options opts) {
  init_rpc(std::move(opts));
  _session = detail::g_session.load();
}

runtime::runtime(std::string name, options opts) {
  init_rpc(std::move(name), std::move(opts));
  _session = detail::g_session.load();
}

runtime::~runtime() {
  try {
    shutdown(true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpirpc: shutdown in ~runtime failed: %s\n", e.what());
  }
}

void runtime::shutdown(bool graceful) {
  shutdown(graceful, std::chrono::duration<double>(0));
}

void runtime::shutdown(bool graceful, std::chrono::duration<double> timeout) {
  // Only the session this object started: after an explicit shutdown the application may have
  // started another one, which is not this object's to stop.
  const void* session = _session;
  _session = nullptr;
  if (session && detail::g_session.load() == session) mpirpc::shutdown(graceful, timeout);
}

} // namespace mpirpc
