// SPDX-License-Identifier: MIT
// Start-up, shutdown and the process-wide runtime; the entry points the public templates call.
#include <mpirpc/runtime.hpp>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include <mpirpc/errors.hpp>
#include <mpirpc/rpc.hpp>

#include "engine.hpp"
#include "errors_internal.hpp"
#include "registry.hpp"
#include "transport.hpp"

namespace mpirpc {
namespace detail {
namespace {

std::mutex g_lifecycle;                 // serialises init_rpc / shutdown
std::atomic<engine*> g_engine{nullptr}; // the running engine, read on every call
// Every engine of the process, kept (stopped) after its session: a continuation may still hold
// a reply_token pointing at it, and a stopped engine drops such late replies safely.
std::vector<std::unique_ptr<engine>> g_engines;
bool g_ever_started = false;
bool g_mpi_is_ours = false;

engine& running_engine() {
  engine* e = g_engine.load(std::memory_order_acquire);
  if (!e) {
    throw shutdown_error(g_ever_started
                             ? "mpirpc: the RPC runtime has been shut down; call init_rpc() to "
                               "start a new session"
                             : "mpirpc: the RPC runtime is not running; call "
                               "mpirpc::init_rpc() (or construct an mpirpc::runtime) first");
  }
  return *e;
}

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

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() >= 128) return false;
  for (unsigned char c : name) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == ':')) return false;
  }
  return true;
}

/// Gathers every rank's name and registry digest; every rank reaches the same verdict.
std::vector<worker_info> agree_on_workers(transport& t, const std::string& name,
                                          std::uint64_t digest, bool registry_ok) {
  const int size = t.size();
  MPI_Comm comm = t.collective_comm();
  struct fixed {
    std::uint64_t digest;
    std::uint64_t registry_ok;
    std::uint64_t name_length;
  };
  fixed mine{digest, registry_ok ? 1u : 0u, name.size()};
  std::vector<fixed> all(static_cast<std::size_t>(size));
  MPI_Request request;
  check_mpi(MPI_Iallgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, comm,
                           &request),
            "MPI_Iallgather");
  wait_with_backoff(1, &request);
  std::vector<int> counts(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
  int total = 0;
  for (int r = 0; r < size; ++r) {
    counts[static_cast<std::size_t>(r)] =
        static_cast<int>(all[static_cast<std::size_t>(r)].name_length);
    offsets[static_cast<std::size_t>(r)] = total;
    total += counts[static_cast<std::size_t>(r)];
  }
  std::string names(static_cast<std::size_t>(total), '\0');
  check_mpi(MPI_Iallgatherv(name.data(), static_cast<int>(name.size()), MPI_CHAR, names.data(),
                            counts.data(), offsets.data(), MPI_CHAR, comm, &request),
            "MPI_Iallgatherv");
  wait_with_backoff(1, &request);

  std::vector<worker_info> workers;
  std::string problems;
  std::map<std::string, int> seen;
  for (int r = 0; r < size; ++r) {
    worker_info w{names.substr(static_cast<std::size_t>(offsets[static_cast<std::size_t>(r)]),
                               static_cast<std::size_t>(counts[static_cast<std::size_t>(r)])),
                  r};
    if (!valid_name(w.name)) {
      problems += "\n  rank " + std::to_string(r) + " has the invalid worker name '" + w.name +
                  "' (1 to 127 letters, digits, '_', '-' or ':')";
    }
    auto [it, inserted] = seen.emplace(w.name, r);
    if (!inserted) {
      problems += "\n  the worker name '" + w.name + "' is used by ranks " +
                  std::to_string(it->second) + " and " + std::to_string(r);
    }
    if (!all[static_cast<std::size_t>(r)].registry_ok) {
      problems += "\n  rank " + std::to_string(r) + " has conflicting function registrations";
    }
    workers.push_back(std::move(w));
  }
  if (!problems.empty()) throw init_error("mpirpc: init_rpc() failed:" + problems);

  if (t.rank() == 0) {
    std::string differ;
    for (int r = 1; r < size; ++r) {
      if (all[static_cast<std::size_t>(r)].digest != all[0].digest) {
        differ += (differ.empty() ? "" : ", ") + workers[static_cast<std::size_t>(r)].name;
      }
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

// ---- entry points of the public templates

request_buffers& begin_request() {
  thread_local request_buffers buffers;
  buffers.payload.resize(sizeof(wire::header));
  buffers.segments.clear();
  return buffers;
}

void send_request(const destination& to, raw_function fn, request_buffers& request,
                  std::shared_ptr<reply_sink> sink, double timeout_s) {
  running_engine().send_request(to, fn, request, std::move(sink), timeout_s);
}

namespace {
engine* engine_for(const reply_token& token) noexcept {
  return static_cast<engine*>(token.owner);
}
} // namespace

void send_reply_value(reply_token& token, save_fn save, const void* value) noexcept {
  if (engine* e = engine_for(token)) e->send_reply_value(token, save, value);
}

void send_reply_error(reply_token& token, std::exception_ptr error) noexcept {
  if (engine* e = engine_for(token)) e->send_reply_error(token, std::move(error));
}

void hold_reply(reply_token& token) noexcept {
  if (engine* e = engine_for(token)) e->hold_reply(token);
}

void rethrow_argument_error() {
  try {
    throw;
  } catch (const std::exception& e) {
    throw argument_error(e.what());
  } catch (...) {
    throw argument_error("an argument's deserialization raised a non-standard exception");
  }
}

void wait_for_state(future_state_base& state) {
  if (engine* e = g_engine.load(std::memory_order_acquire)) {
    e->wait(state);
  } else {
    state.sleep_until_done();
  }
}

namespace {
thread_local bool t_in_progress_callback = false;
}

bool in_progress_callback() noexcept {
  return t_in_progress_callback;
}

progress_callback_scope::progress_callback_scope() noexcept : _previous(t_in_progress_callback) {
  t_in_progress_callback = true;
}
progress_callback_scope::~progress_callback_scope() {
  t_in_progress_callback = _previous;
}

} // namespace detail

// ---- public API

void init_rpc(options opts) {
  using namespace detail;
  std::lock_guard<std::mutex> lock(g_lifecycle);
  if (g_engine.load()) {
    throw init_error("mpirpc: init_rpc() called while the runtime is already running on this "
                     "process; call shutdown() first");
  }
  ensure_mpi();
  if (opts.num_worker_threads < 1) {
    throw init_error("mpirpc: options::num_worker_threads must be at least 1, not " +
                     std::to_string(opts.num_worker_threads));
  }
  if (opts.rpc_timeout.count() < 0) {
    throw init_error("mpirpc: options::rpc_timeout must not be negative");
  }
  if (opts.idle_poll_interval.count() < 1) {
    opts.idle_poll_interval = std::chrono::microseconds(1);
  }
  if (opts.comm == MPI_COMM_NULL) throw init_error("mpirpc: options::comm is MPI_COMM_NULL");
  auto t = std::make_unique<transport>(opts.comm);
  if (opts.name.empty()) opts.name = "worker" + std::to_string(t->rank());
  registry& reg = registry::instance();
  const std::string problems = reg.problems();
  if (!problems.empty()) {
    std::fprintf(stderr, "mpirpc: conflicting function registrations on rank %d:\n%s", t->rank(),
                 problems.c_str());
  }
  std::vector<worker_info> workers =
      agree_on_workers(*t, opts.name, reg.digest(), problems.empty());
  g_engines.push_back(std::make_unique<engine>(opts, std::move(t), std::move(workers)));
  engine* e = g_engines.back().get();
  reg.set_frozen(true);
  g_ever_started = true;
  // Published before the threads start: a request may arrive, and its handler may call out,
  // before init_rpc returns.
  g_engine.store(e, std::memory_order_release);
  e->start_threads();
}

void init_rpc(std::string name, options opts) {
  opts.name = std::move(name);
  init_rpc(std::move(opts));
}

void shutdown(bool graceful) {
  using namespace detail;
  std::lock_guard<std::mutex> lock(g_lifecycle);
  engine* e = g_engine.load();
  if (!e) return;
  std::string reason = "shutdown(graceful=false) was called";
  if (graceful) {
    try {
      e->quiesce();
      reason = "the runtime shut down";
    } catch (const std::exception& x) {
      reason = std::string("graceful shutdown failed: ") + x.what();
      std::fprintf(stderr, "mpirpc: %s\n", reason.c_str());
    }
  }
  g_engine.store(nullptr, std::memory_order_release);
  e->stop(reason);
  registry::instance().set_frozen(false);
}

bool is_running() noexcept {
  return detail::g_engine.load() != nullptr;
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
  return detail::running_engine().stats();
}

runtime::runtime(options opts) {
  init_rpc(std::move(opts));
}

runtime::runtime(std::string name, options opts) {
  init_rpc(std::move(name), std::move(opts));
}

runtime::~runtime() {
  try {
    mpirpc::shutdown(true);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpirpc: shutdown in ~runtime failed: %s\n", e.what());
  }
}

void runtime::shutdown(bool graceful) {
  mpirpc::shutdown(graceful);
}

} // namespace mpirpc
