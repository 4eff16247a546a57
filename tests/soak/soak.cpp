// SPDX-License-Identifier: MIT
// Soak test: every rank runs several threads that, for a given time, issue a random mix of
// rpc_sync, rpc_async (some chained with then()), large payloads, remote() + to_here(),
// calls through rrefs (proxies, to_here, rrefs passed to a third worker) and nested calls
// (a handler that blocks on another worker, and an async-execution handler that returns the
// future of a nested call) to every worker. Handlers throw or sleep as the caller tells them,
// and the caller draws that from a seeded generator, so it knows the outcome every call must
// have: its value, a remote_error (of the handler's own type, or a nested call's
// timeout_error) from a given worker, or a timeout_error (a short timeout against a handler
// that sleeps far longer). Timeouts are otherwise generous, none or the default.
//
// Checks, any failure of which makes the program exit non-zero:
//  - every call completes with the outcome planned for it; every async call's done-callback
//    runs exactly once;
//  - every handler ran exactly once per call sent to it: each caller counts (and sums hashed
//    call ids of) the calls it sent to each worker by handler kind, each worker counts those it
//    ran by calling worker; after the graceful shutdown (which waits for handlers whose caller
//    timed out) the tables are exchanged and must agree;
//  - this rank's runtime counted exactly the timeouts planned, and dropped exactly as many late
//    replies; no remote object or reference is left once every thread has dropped its rrefs;
//  - the heap in use (mallinfo2: uordblks + hblkhd) stays flat after a warm-up: the mean of the
//    last third of the samples exceeds the mean of the first third by less than a tolerance
//    (4 MiB by default). Resident memory (/proc/self/statm) is reported, not judged: it keeps
//    freed pages and fragments.
//
// Usage: mpiexec -n 4 mpirpc_soak [--minutes M | --seconds S] [--seed N] [--threads T]
//        [--heap-tolerance-mib X] [--warmup-seconds W] [--sample-ms MS] [--memory-log PATH]
// The standard way to start it is mpi_scripts/soak [minutes].
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpi.h>

#include <mpirpc/mpirpc.hpp>

namespace {

using clock_type = std::chrono::steady_clock;
using seconds_d = std::chrono::duration<double>;

constexpr int max_ranks = 64;

// ---------------------------------------------------------------------------------------------
// Configuration

struct config {
  double seconds = 120;
  std::uint64_t seed = 1;
  int threads = 3;
  double heap_tolerance_mib = 4;
  double warmup_seconds = -1; // default: a quarter of the run, at most 30 s
  int sample_ms = 1000;
  std::string memory_log; ///< if set, each rank writes its samples to <memory_log>.<rank>
};
config g_config;

/// A handler sleeps this long when its caller must time out, with a timeout of at most
/// short_timeout_max: the margin is far beyond any scheduling delay.
constexpr int sleepy_ms = 100;
constexpr int short_timeout_min_ms = 5;
constexpr int short_timeout_max_ms = 20;

// ---------------------------------------------------------------------------------------------
// Call ids and the tables of calls sent and handlers run

std::uint64_t splitmix(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// What `work` computes from its input; the caller checks the reply against it.
std::uint64_t mix(std::uint64_t x) noexcept {
  return splitmix(x ^ 0x5EEDull);
}

int g_rank = 0;
int g_size = 1;

/// id = caller rank (16 bits) | thread slot (8 bits) | sequence (40 bits). Handlers that call
/// on use slot 255 and a shared counter.
int caller_of(std::uint64_t id) noexcept {
  return static_cast<int>(id >> 48);
}
std::atomic<std::uint64_t> g_handler_seq{0};
std::uint64_t next_handler_id() noexcept {
  return (static_cast<std::uint64_t>(g_rank) << 48) | (std::uint64_t(255) << 40) |
         g_handler_seq.fetch_add(1, std::memory_order_relaxed);
}

/// The handler kinds, counted apart.
enum category : int {
  c_work,
  c_relay,
  c_relay_async,
  c_echo,
  c_construct,
  c_factory,
  c_method,
  c_via,
  n_categories
};
const char* const category_names[n_categories] = {"work", "relay",   "relay_async", "echo",
                                                  "ctor", "factory", "method",      "via_rref"};

struct tally {
  std::atomic<std::uint64_t> count{0};
  std::atomic<std::uint64_t> hash_sum{0};
  void add(std::uint64_t id) noexcept {
    count.fetch_add(1, std::memory_order_relaxed);
    hash_sum.fetch_add(splitmix(id), std::memory_order_relaxed);
  }
};
/// On a callee: the handlers it ran, by calling rank.
tally g_executed[max_ranks][n_categories];
/// On a caller: the calls it sent, by destination rank.
tally g_sent[max_ranks][n_categories];
/// Calls sent from this rank that must time out (direct, or nested calls sent by handlers).
std::atomic<std::uint64_t> g_planned_timeouts{0};

void note_sent(int dest, category c, std::uint64_t id) noexcept {
  g_sent[dest][c].add(id);
}

// ---------------------------------------------------------------------------------------------
// Violations

std::atomic<std::uint64_t> g_violations{0};

template <class... A> void violation(const char* format, A... args) {
  const auto n = g_violations.fetch_add(1);
  if (n >= 30) return;
  char text[1024];
  std::snprintf(text, sizeof text, format, args...);
  std::fprintf(stderr, "soak[worker%d]: VIOLATION: %s\n", g_rank, text);
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// How a handler behaves: (sleep in ms) * 2 + (1 if it throws after sleeping).
int behaviour(bool fail, int sleep_ms) noexcept {
  return sleep_ms * 2 + (fail ? 1 : 0);
}
int sleep_of(int how) noexcept {
  return how >> 1;
}
bool fails(int how) noexcept {
  return (how & 1) != 0;
}

struct soak_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string hex(std::uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof text, "%016" PRIx64, v);
  return text;
}
std::string failure_text(std::uint64_t id) {
  return "soak: call " + hex(id) + " fails as told";
}

/// Counts the execution, then sleeps and throws as told.
void act(std::uint64_t id, int how, category c) {
  const int from = caller_of(id);
  if (from < 0 || from >= g_size) {
    violation("a %s handler got call id %s of no rank", category_names[c], hex(id).c_str());
  } else {
    g_executed[from][c].add(id);
  }
  if (sleep_of(how) > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_of(how)));
  if (fails(how)) throw soak_error(failure_text(id));
}

std::uint64_t work(std::uint64_t id, int how, std::uint64_t x) {
  act(id, how, c_work);
  return mix(x);
}

mpirpc::timeout timeout_of(double seconds) {
  return mpirpc::timeout(seconds_d(seconds));
}
bool must_time_out(int how, double timeout_s) noexcept {
  return sleep_of(how) >= sleepy_ms && timeout_s > 0 && timeout_s * 1000 <= short_timeout_max_ms;
}

/// Nested, blocking: calls `work` on `hop` and waits (holding this server thread).
std::uint64_t relay(std::uint64_t id, int how, int hop, int inner_how, double inner_timeout_s,
                    std::uint64_t x) {
  act(id, how, c_relay);
  const std::uint64_t inner = next_handler_id();
  auto f = mpirpc::rpc_async(hop, work, inner, inner_how, x, timeout_of(inner_timeout_s));
  note_sent(hop, c_work, inner);
  if (must_time_out(inner_how, inner_timeout_s)) g_planned_timeouts.fetch_add(1);
  return f.wait() + 1;
}

/// Nested, async execution: returns the future of a call to `work` on `hop`, continued.
mpirpc::future<std::uint64_t> relay_async(std::uint64_t id, int how, int hop, int inner_how,
                                          double inner_timeout_s, std::uint64_t x) {
  act(id, how, c_relay_async);
  const std::uint64_t inner = next_handler_id();
  auto f = mpirpc::rpc_async(hop, work, inner, inner_how, x, timeout_of(inner_timeout_s));
  note_sent(hop, c_work, inner);
  if (must_time_out(inner_how, inner_timeout_s)) g_planned_timeouts.fetch_add(1);
  return f.then([](mpirpc::future<std::uint64_t> done) { return done.value() + 2; });
}

std::vector<char> echo(std::uint64_t id, int how, std::vector<char> data) {
  act(id, how, c_echo);
  return data;
}

/// A remote object: an accumulator that several server threads may update at once.
struct accum {
  std::atomic<std::uint64_t> total{0};

  accum() = default;
  /// The constructor remote(construct<accum, ...>) runs: counted as a handler.
  accum(std::uint64_t id, std::uint64_t start) : total(start) {
    g_executed[caller_of(id)][c_construct].add(id);
  }
  accum(const accum& o) : total(o.total.load()) {}
  accum(accum&& o) noexcept : total(o.total.load()) {}
  accum& operator=(const accum& o) {
    total.store(o.total.load());
    return *this;
  }

  std::uint64_t add(std::uint64_t id, int how, std::uint64_t k) {
    act(id, how, c_method); // throws before changing anything
    return total.fetch_add(k) + k;
  }

  template <class Archive> void serialize(Archive& a, unsigned) {
    std::uint64_t v = total.load();
    a& v;
    total.store(v);
  }
};

/// A factory remote() runs; fails as told.
accum make_accum(std::uint64_t id, int how, std::uint64_t start) {
  act(id, how, c_factory);
  accum a;
  a.total = start;
  return a;
}

/// Receives a fork of an rref and calls through it (adds 0): returns the object's total.
std::uint64_t read_via(std::uint64_t id, mpirpc::rref<accum> r) {
  act(id, 0, c_via);
  const std::uint64_t inner = next_handler_id();
  auto f = r.rpc_async(&accum::add, inner, 0, std::uint64_t(0));
  note_sent(r.owner().id, c_method, inner);
  return f.wait();
}

} // namespace

MPIRPC_REGISTER(work);
MPIRPC_REGISTER(relay);
MPIRPC_REGISTER_ASYNC(relay_async);
MPIRPC_REGISTER(echo);
MPIRPC_REGISTER(make_accum);
MPIRPC_REGISTER(read_via);
MPIRPC_REGISTER_CONSTRUCTOR(accum, std::uint64_t, std::uint64_t);
MPIRPC_REGISTER_METHOD(accum::add);

namespace {

// ---------------------------------------------------------------------------------------------
// Callers

/// What a caller did, by kind of call.
enum kind : int {
  k_sync,
  k_async,
  k_echo,
  k_remote,
  k_rref_create,
  k_proxy_sync,
  k_proxy_async,
  k_proxy_remote,
  k_to_here,
  k_via_rref,
  k_nested_sync,
  k_nested_async,
  n_kinds
};
const char* const kind_names[n_kinds] = {
    "rpc_sync",     "rpc_async",          "payload echo",   "remote+to_here",
    "rref create",  "rref.rpc_sync",      "rref.rpc_async", "rref.remote+to_here",
    "rref.to_here", "rref to 3rd worker", "nested sync",    "nested async-exec"};

/// The outcome a call must have.
enum class expect_kind { value, any_value, remote_soak, remote_timeout, timeout };

struct expectation {
  kind k = k_sync;
  expect_kind what = expect_kind::value;
  std::uint64_t value = 0;
  int origin = 0;            ///< the worker a remote_error must name, the callee of a timeout
  std::uint64_t fail_id = 0; ///< the id in the handler's error text; 0: not known to the caller
  const char* function = ""; ///< the function a timeout_error must name
};

struct outcome_counts {
  std::uint64_t ok = 0;
  std::uint64_t remote_soak = 0;
  std::uint64_t remote_timeout = 0;
  std::uint64_t timeout = 0;
  std::uint64_t bad = 0;
};

struct pending_async {
  mpirpc::future<std::uint64_t> f;
  expectation e;
};

struct thread_context {
  int slot = 0;
  std::mt19937_64 rng;
  std::uint64_t seq = 0;
  outcome_counts counts[n_kinds];
  std::uint64_t issued_async = 0; ///< calls with a done-callback
  std::atomic<std::uint64_t> callbacks{0};
  std::deque<pending_async> window;
  std::size_t window_limit = 8;
  clock_type::time_point sleepy_free_at{};
  std::atomic<std::uint64_t> ops{0};
  struct held_rref {
    mpirpc::rref<accum> r;
    std::uint64_t total = 0;
    bool failed = false; ///< its creation must fail
    int owner = 0;
    std::uint64_t creation_id = 0;
  };
  std::vector<held_rref> ring;
};

std::uint64_t new_id(thread_context& t) {
  return (static_cast<std::uint64_t>(g_rank) << 48) | (static_cast<std::uint64_t>(t.slot) << 40) |
         (t.seq++ & ((std::uint64_t(1) << 40) - 1));
}
int uniform(thread_context& t, int lo, int hi) { // inclusive
  return std::uniform_int_distribution<int>(lo, hi)(t.rng);
}
bool chance(thread_context& t, int percent) {
  return uniform(t, 0, 99) < percent;
}
int any_rank(thread_context& t) {
  return uniform(t, 0, g_size - 1);
}

/// A call's behaviour and timeout. A "sleepy" call must time out; at most one is planned per
/// thread every 2 x sleepy_ms, so sleeping handlers never pile up on the callees.
struct plan {
  int how = 0;
  double timeout_s = -1; ///< negative: the default (60 s); zero: none
  bool times_out = false;
  bool fails = false;
};
plan choose(thread_context& t, bool allow_fail, bool allow_sleepy) {
  plan p;
  const auto now = clock_type::now();
  if (allow_sleepy && now >= t.sleepy_free_at && chance(t, 6)) {
    t.sleepy_free_at = now + std::chrono::milliseconds(2 * sleepy_ms);
    p.times_out = true;
    p.how = behaviour(allow_fail && chance(t, 50), sleepy_ms);
    p.timeout_s = uniform(t, short_timeout_min_ms, short_timeout_max_ms) / 1000.0;
    return p;
  }
  p.fails = allow_fail && chance(t, 10);
  p.how = behaviour(p.fails, chance(t, 4) ? uniform(t, 1, 3) : 0);
  switch (uniform(t, 0, 3)) {
  case 0:
    p.timeout_s = -1;
    break;
  case 1:
    p.timeout_s = 0;
    break;
  case 2:
    p.timeout_s = 30;
    break;
  default:
    p.timeout_s = 60;
    break;
  }
  return p;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}
std::string worker_name(int rank) {
  return "worker" + std::to_string(rank);
}
const char* expect_name(expect_kind k) {
  switch (k) {
  case expect_kind::value:
    return "a value";
  case expect_kind::any_value:
    return "a value";
  case expect_kind::remote_soak:
    return "remote_error(soak_error)";
  case expect_kind::remote_timeout:
    return "remote_error(mpirpc::timeout_error)";
  case expect_kind::timeout:
    return "timeout_error";
  }
  return "?";
}

/// Runs `get` (which returns the call's value or throws its error) and checks the outcome.
template <class Get> void verify(thread_context& t, const expectation& e, Get&& get) {
  outcome_counts& c = t.counts[e.k];
  const char* kn = kind_names[e.k];
  try {
    const std::uint64_t v = get();
    if (e.what == expect_kind::any_value) {
      ++c.ok;
    } else if (e.what != expect_kind::value) {
      ++c.bad;
      violation("%s: expected %s, got the value %" PRIu64, kn, expect_name(e.what), v);
    } else if (v != e.value) {
      ++c.bad;
      violation("%s: wrong value %" PRIu64 ", expected %" PRIu64, kn, v, e.value);
    } else {
      ++c.ok;
    }
  } catch (const mpirpc::remote_error& r) {
    const bool soak = e.what == expect_kind::remote_soak &&
                      ends_with(r.remote_type(), "soak_error") &&
                      r.origin_worker() == worker_name(e.origin) &&
                      (e.fail_id == 0 ? contains(r.remote_message(), "soak: call ") &&
                                            ends_with(r.remote_message(), " fails as told")
                                      : r.remote_message() == failure_text(e.fail_id));
    const bool tmo = e.what == expect_kind::remote_timeout &&
                     r.remote_type() == "mpirpc::timeout_error" &&
                     r.origin_worker() == worker_name(e.origin) &&
                     contains(r.remote_message(), "timed out after");
    if (soak) {
      ++c.remote_soak;
    } else if (tmo) {
      ++c.remote_timeout;
    } else {
      ++c.bad;
      violation("%s: expected %s (origin worker%d), got remote_error from %s of type %s: %s", kn,
                expect_name(e.what), e.origin, r.origin_worker().c_str(), r.remote_type().c_str(),
                r.remote_message().c_str());
    }
  } catch (const mpirpc::timeout_error& x) {
    const std::string what = x.what();
    if (e.what == expect_kind::timeout &&
        contains(what, std::string("'") + e.function + "' on " + worker_name(e.origin)) &&
        contains(what, "timed out after")) {
      ++c.timeout;
    } else {
      ++c.bad;
      violation("%s: expected %s, got timeout_error: %s", kn, expect_name(e.what), what.c_str());
    }
  } catch (const std::exception& x) {
    ++c.bad;
    violation("%s: expected %s, got an exception: %s", kn, expect_name(e.what), x.what());
  }
}

expectation expect_for(kind k, const plan& p, std::uint64_t value, int callee, std::uint64_t id,
                       const char* function) {
  expectation e;
  e.k = k;
  e.origin = callee;
  e.function = function;
  if (p.times_out) {
    e.what = expect_kind::timeout;
  } else if (p.fails) {
    e.what = expect_kind::remote_soak;
    e.fail_id = id;
  } else {
    e.what = expect_kind::value;
    e.value = value;
  }
  return e;
}

void check_oldest(thread_context& t) {
  pending_async p = std::move(t.window.front());
  t.window.pop_front();
  verify(t, p.e, [&] { return p.f.wait(); });
}

/// Tracks an async call's completion (its done-callback must run exactly once) and queues it
/// for checking.
void track(thread_context& t, mpirpc::future<std::uint64_t> f, const expectation& e) {
  ++t.issued_async;
  f.add_done_callback([&t](const mpirpc::future<std::uint64_t>&) { t.callbacks.fetch_add(1); });
  t.window.push_back(pending_async{std::move(f), e});
  while (t.window.size() > t.window_limit)
    check_oldest(t);
}

void op_sync(thread_context& t) {
  const int dest = any_rank(t);
  const plan p = choose(t, true, true);
  const std::uint64_t id = new_id(t);
  const std::uint64_t x = t.rng();
  const expectation e = expect_for(k_sync, p, mix(x), dest, id, "work");
  if (p.times_out) g_planned_timeouts.fetch_add(1);
  // Counted as sent first: a call that fails at the call site is a violation anyway.
  note_sent(dest, c_work, id);
  if (p.timeout_s < 0 && chance(t, 50)) {
    // No timeout argument at all; an argument converted to the parameter's type.
    const std::uint64_t x2 = x >> 33;
    expectation e2 = e;
    if (e2.what == expect_kind::value) e2.value = mix(x2);
    verify(t, e2,
           [&] { return mpirpc::rpc_sync(dest, work, id, p.how, static_cast<unsigned>(x2)); });
  } else {
    verify(t, e,
           [&] { return mpirpc::rpc_sync(dest, work, id, p.how, x, timeout_of(p.timeout_s)); });
  }
}

void op_async(thread_context& t) {
  const int dest = any_rank(t);
  const plan p = choose(t, true, true);
  const std::uint64_t id = new_id(t);
  const std::uint64_t x = t.rng();
  expectation e = expect_for(k_async, p, mix(x), dest, id, "work");
  if (p.times_out) g_planned_timeouts.fetch_add(1);
  auto f = mpirpc::rpc_async(dest, work, id, p.how, x, timeout_of(p.timeout_s));
  note_sent(dest, c_work, id);
  if (chance(t, 30)) {
    // then(): errors pass through the continuation unchanged.
    auto g = f.then([](mpirpc::future<std::uint64_t> done) {
      return static_cast<std::uint64_t>(done.value() ^ 0xABCDu);
    });
    e.value ^= 0xABCDu;
    f.add_done_callback([&t](const mpirpc::future<std::uint64_t>&) { t.callbacks.fetch_add(1); });
    ++t.issued_async;
    t.window.push_back(pending_async{std::move(g), e});
    while (t.window.size() > t.window_limit)
      check_oldest(t);
  } else {
    track(t, std::move(f), e);
  }
}

std::uint64_t fnv(const std::vector<char>& v) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : v)
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h ^ v.size();
}

void op_echo(thread_context& t) {
  const int dest = any_rank(t);
  const plan p = choose(t, true, false);
  std::size_t n = 0;
  switch (uniform(t, 0, 3)) {
  case 0:
    n = static_cast<std::size_t>(uniform(t, 0, 200));
    break;
  case 1:
    n = static_cast<std::size_t>(uniform(t, 1000, 30000));
    break;
  default:
    n = static_cast<std::size_t>(uniform(t, 32 * 1024, 128 * 1024));
    break; // out of line
  }
  std::vector<char> data(n);
  std::uint64_t s = t.rng();
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) s = splitmix(s);
    data[i] = static_cast<char>(s >> (8 * (i % 8)));
  }
  const std::uint64_t id = new_id(t);
  const expectation e = expect_for(k_echo, p, fnv(data), dest, id, "echo");
  if (chance(t, 50)) {
    verify(t, e, [&] {
      auto f = mpirpc::rpc_async(dest, echo, id, p.how, data, timeout_of(p.timeout_s));
      note_sent(dest, c_echo, id);
      return fnv(f.wait());
    });
  } else {
    auto f = mpirpc::rpc_async(dest, echo, id, p.how, data, timeout_of(p.timeout_s));
    note_sent(dest, c_echo, id);
    // Large buffers have left the caller's storage when rpc_async returns: drop them now.
    std::vector<char>().swap(data);
    auto g = f.then([](mpirpc::future<std::vector<char>> done) { return fnv(done.value()); });
    f.add_done_callback(
        [&t](const mpirpc::future<std::vector<char>>&) { t.callbacks.fetch_add(1); });
    ++t.issued_async;
    t.window.push_back(pending_async{std::move(g), e});
    while (t.window.size() > t.window_limit)
      check_oldest(t);
  }
}

void op_remote(thread_context& t) {
  // remote() of a plain function; a failing one only on another worker (on the owner itself,
  // to_here() may rethrow the original exception instead of a remote_error: rref.hpp).
  const int dest = any_rank(t);
  plan p = choose(t, dest != g_rank, false);
  const std::uint64_t id = new_id(t);
  const std::uint64_t x = t.rng();
  const expectation e = expect_for(k_remote, p, mix(x), dest, id, "work");
  mpirpc::rref<std::uint64_t> r = mpirpc::remote(dest, work, id, p.how, x);
  note_sent(dest, c_work, id);
  verify(t, e, [&] { return chance(t, 50) ? r.to_here() : r.to_here(std::chrono::seconds(30)); });
}

void op_rref(thread_context& t) {
  using held = thread_context::held_rref;
  if (t.ring.empty() || chance(t, 25)) {
    held h;
    h.owner = any_rank(t);
    h.creation_id = new_id(t);
    h.total = t.rng() >> 8;
    if (chance(t, 70)) {
      h.r = mpirpc::remote(h.owner, mpirpc::construct<accum, std::uint64_t, std::uint64_t>,
                           h.creation_id, h.total);
      note_sent(h.owner, c_construct, h.creation_id);
    } else {
      h.failed = h.owner != g_rank && chance(t, 30);
      h.r = mpirpc::remote(h.owner, make_accum, h.creation_id, behaviour(h.failed, 0), h.total);
      note_sent(h.owner, c_factory, h.creation_id);
    }
    ++t.counts[k_rref_create].ok;
    t.ring.push_back(std::move(h));
    if (t.ring.size() > 4) t.ring.erase(t.ring.begin());
  }
  const std::size_t at = static_cast<std::size_t>(uniform(t, 0, int(t.ring.size()) - 1));
  held& h = t.ring[at];
  if (h.failed) {
    // Every use reports the creation's error, from the owner; no method runs.
    expectation e;
    e.what = expect_kind::remote_soak;
    e.origin = h.owner;
    e.fail_id = h.creation_id;
    if (chance(t, 50)) {
      e.k = k_to_here;
      verify(t, e, [&] { return h.r.to_here().total.load(); });
    } else {
      e.k = k_proxy_sync;
      verify(t, e, [&] { return h.r.rpc_sync(&accum::add, new_id(t), 0, std::uint64_t(1)); });
    }
    t.ring.erase(t.ring.begin() + static_cast<std::ptrdiff_t>(at));
    return;
  }
  switch (uniform(t, 0, 5)) {
  case 0: { // rref.rpc_sync(&accum::add), may fail or time out (adding 0 then)
    const plan p = choose(t, true, true);
    const std::uint64_t id = new_id(t);
    const std::uint64_t k = p.times_out ? 0 : t.rng() >> 40;
    const expectation e = expect_for(k_proxy_sync, p, h.total + k, h.owner, id, "accum::add");
    if (p.times_out) g_planned_timeouts.fetch_add(1);
    verify(t, e, [&] {
      auto f = h.r.rpc_async(&accum::add, id, p.how, k, timeout_of(p.timeout_s));
      note_sent(h.owner, c_method, id);
      return f.wait();
    });
    if (!p.fails && !p.times_out) h.total += k;
    break;
  }
  case 1: { // several rref.rpc_async at once: any order, so only the final total is exact
    const int n = uniform(t, 1, 6);
    std::vector<std::pair<mpirpc::future<std::uint64_t>, expectation>> calls;
    std::uint64_t added = 0;
    for (int i = 0; i < n; ++i) {
      const plan p = choose(t, true, false);
      const std::uint64_t id = new_id(t);
      const std::uint64_t k = t.rng() >> 40;
      expectation e = expect_for(k_proxy_async, p, 0, h.owner, id, "accum::add");
      if (e.what == expect_kind::value) e.what = expect_kind::any_value;
      calls.emplace_back(h.r.rpc_async(&accum::add, id, p.how, k, timeout_of(p.timeout_s)), e);
      note_sent(h.owner, c_method, id);
      if (!p.fails) added += k;
    }
    for (auto& [f, e] : calls)
      verify(t, e, [&] { return f.wait(); });
    h.total += added;
    expectation e;
    e.k = k_to_here;
    e.value = h.total;
    verify(t, e, [&] { return h.r.to_here().total.load(); });
    break;
  }
  case 2: { // to_here
    expectation e;
    e.k = k_to_here;
    e.value = h.total;
    verify(t, e, [&] { return h.r.to_here(std::chrono::seconds(30)).total.load(); });
    break;
  }
  case 3: { // pass the rref to a third worker, which calls through it
    const int third = any_rank(t);
    const std::uint64_t id = new_id(t);
    expectation e;
    e.k = k_via_rref;
    e.value = h.total;
    verify(t, e, [&] {
      auto f = mpirpc::rpc_async(third, read_via, id, h.r);
      note_sent(third, c_via, id);
      return f.wait();
    });
    break;
  }
  case 4: { // rref.remote(&accum::add): the result stays on the owner, fetched with to_here
    const std::uint64_t id = new_id(t);
    const std::uint64_t k = t.rng() >> 40;
    mpirpc::rref<std::uint64_t> g = h.r.remote(&accum::add, id, 0, k);
    note_sent(h.owner, c_method, id);
    h.total += k;
    expectation e;
    e.k = k_proxy_remote;
    e.value = h.total;
    verify(t, e, [&] { return g.to_here(); });
    break;
  }
  default: // drop it
    t.ring.erase(t.ring.begin() + static_cast<std::ptrdiff_t>(at));
    break;
  }
}

/// Expected outcome of a relay: the relay's own failure, else the nested call's.
expectation relay_expectation(kind k, const plan& outer, const plan& inner, std::uint64_t id,
                              int dest, int hop, std::uint64_t value) {
  expectation e;
  e.k = k;
  if (outer.fails) {
    e.what = expect_kind::remote_soak;
    e.origin = dest;
    e.fail_id = id;
  } else if (inner.times_out) {
    e.what = expect_kind::remote_timeout; // raised on the relay's worker, forwarded
    e.origin = dest;
  } else if (inner.fails) {
    e.what = expect_kind::remote_soak; // the nested remote_error is forwarded unchanged
    e.origin = hop;
  } else {
    e.value = value;
  }
  return e;
}

void op_nested(thread_context& t, bool async_exec) {
  const int dest = any_rank(t);
  const int hop = any_rank(t);
  plan outer = choose(t, true, false);
  outer.how = behaviour(outer.fails, 0);
  const plan inner = choose(t, true, true);
  const std::uint64_t id = new_id(t);
  const std::uint64_t x = t.rng();
  const kind k = async_exec ? k_nested_async : k_nested_sync;
  const expectation e =
      relay_expectation(k, outer, inner, id, dest, hop, mix(x) + (async_exec ? 2 : 1));
  if (async_exec) {
    auto f = mpirpc::rpc_async(dest, relay_async, id, outer.how, hop, inner.how, inner.timeout_s, x,
                               timeout_of(outer.timeout_s));
    note_sent(dest, c_relay_async, id);
    track(t, std::move(f), e);
  } else {
    // Blocking relays are only ever called synchronously, one per caller thread: they hold a
    // server thread each, and more of them than server threads could block each other.
    verify(t, e, [&] {
      auto f = mpirpc::rpc_async(dest, relay, id, outer.how, hop, inner.how, inner.timeout_s, x,
                                 timeout_of(outer.timeout_s));
      note_sent(dest, c_relay, id);
      return f.wait();
    });
  }
}

std::atomic<bool> g_workload_done{false};

void caller_thread(thread_context& t, clock_type::time_point deadline) {
  try {
    while (clock_type::now() < deadline) {
      const int r = uniform(t, 0, 99);
      if (r < 18) {
        op_sync(t);
      } else if (r < 43) {
        op_async(t);
      } else if (r < 50) {
        op_echo(t);
      } else if (r < 57) {
        op_remote(t);
      } else if (r < 75) {
        op_rref(t);
      } else if (r < 85) {
        op_nested(t, false);
      } else {
        op_nested(t, true);
      }
      t.ops.fetch_add(1, std::memory_order_relaxed);
      if (chance(t, 1)) t.window_limit = static_cast<std::size_t>(uniform(t, 1, 32));
    }
    while (!t.window.empty())
      check_oldest(t);
  } catch (const std::exception& e) {
    violation("caller thread %d stopped on an exception: %s", t.slot, e.what());
    t.window.clear();
  }
  t.ring.clear(); // drops every rref: the owners must end up with nothing
}

// ---------------------------------------------------------------------------------------------
// Memory samples

struct sample {
  double t;
  double rss_mib;
  double heap_mib;
};

double rss_mib() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1048576.0;
}
double heap_mib() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd) / 1048576.0;
}

struct third_means {
  double first_rss = 0, last_rss = 0, first_heap = 0, last_heap = 0, max_rss = 0, max_heap = 0;
  double heap_slope_kib_min = 0; ///< least-squares trend of the heap after the warm-up
  std::size_t used = 0;
};
third_means judge(const std::vector<sample>& all, double warmup) {
  std::vector<sample> s;
  for (const sample& x : all)
    if (x.t >= warmup) s.push_back(x);
  third_means m;
  m.used = s.size();
  if (s.size() < 3) return m;
  const std::size_t third = s.size() / 3;
  for (std::size_t i = 0; i < third; ++i) {
    m.first_rss += s[i].rss_mib / double(third);
    m.first_heap += s[i].heap_mib / double(third);
    m.last_rss += s[s.size() - 1 - i].rss_mib / double(third);
    m.last_heap += s[s.size() - 1 - i].heap_mib / double(third);
  }
  double mt = 0, mh = 0;
  for (const sample& x : s) {
    m.max_rss = std::max(m.max_rss, x.rss_mib);
    m.max_heap = std::max(m.max_heap, x.heap_mib);
    mt += x.t / double(s.size());
    mh += x.heap_mib / double(s.size());
  }
  double sth = 0, stt = 0;
  for (const sample& x : s) {
    sth += (x.t - mt) * (x.heap_mib - mh);
    stt += (x.t - mt) * (x.t - mt);
  }
  if (stt > 0) m.heap_slope_kib_min = sth / stt * 1024 * 60;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Helpers on MPI_COMM_WORLD (the application's own communicator, usable while mpirpc runs)

void wait_request(MPI_Request& r) {
  for (;;) {
    int done = 0;
    MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}
void barrier() {
  MPI_Request r;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  wait_request(r);
}

template <class Condition> bool eventually(Condition c, std::chrono::seconds limit) {
  const auto end = clock_type::now() + limit;
  while (!c()) {
    if (clock_type::now() > end) return c();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

bool parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--minutes" && (v = next())) {
      g_config.seconds = std::atof(v) * 60;
    } else if (a == "--seconds" && (v = next())) {
      g_config.seconds = std::atof(v);
    } else if (a == "--seed" && (v = next())) {
      g_config.seed = std::strtoull(v, nullptr, 10);
    } else if (a == "--threads" && (v = next())) {
      g_config.threads = std::max(1, std::atoi(v));
    } else if (a == "--heap-tolerance-mib" && (v = next())) {
      g_config.heap_tolerance_mib = std::atof(v);
    } else if (a == "--warmup-seconds" && (v = next())) {
      g_config.warmup_seconds = std::atof(v);
    } else if (a == "--sample-ms" && (v = next())) {
      g_config.sample_ms = std::max(10, std::atoi(v));
    } else if (a == "--memory-log" && (v = next())) {
      g_config.memory_log = v;
    } else {
      return false;
    }
  }
  g_config.threads = std::min(g_config.threads, 254);
  return g_config.seconds > 0;
}

} // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  if (!parse(argc, argv) || g_size > max_ranks || provided < MPI_THREAD_MULTIPLE) {
    if (g_rank == 0) {
      std::fprintf(
          stderr,
          "usage: mpiexec -n N %s [--minutes M | --seconds S] [--seed N] [--threads T] "
          "[--heap-tolerance-mib X] [--warmup-seconds W] [--sample-ms MS] [--memory-log PATH] "
          "(N <= %d; "
          "needs MPI_THREAD_MULTIPLE)\n",
          argv[0], max_ranks);
    }
    MPI_Finalize();
    return 2;
  }
  const double warmup =
      g_config.warmup_seconds >= 0 ? g_config.warmup_seconds : std::min(30.0, g_config.seconds / 4);
  if (g_rank == 0) {
    std::printf("soak: %d ranks x %d caller threads, %.1f min, seed %" PRIu64
                ", warm-up %.0f s, heap tolerance %.1f MiB\n",
                g_size, g_config.threads, g_config.seconds / 60, g_config.seed, warmup,
                g_config.heap_tolerance_mib);
    std::fflush(stdout);
  }

  // Memory samples from the start of the workload to its end.
  std::vector<sample> samples;
  std::atomic<bool> sampling{true};
  const auto start = clock_type::now();
  std::thread sampler([&] {
    while (sampling.load()) {
      samples.push_back(
          sample{seconds_d(clock_type::now() - start).count(), rss_mib(), heap_mib()});
      for (int waited = 0; waited < g_config.sample_ms && sampling.load(); waited += 10)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });

  std::vector<std::unique_ptr<thread_context>> contexts;
  mpirpc::runtime_stats before_shutdown{};
  double workload_s = 0;
  {
    mpirpc::init_rpc();
    const auto deadline = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                                  seconds_d(g_config.seconds));
    // A stuck call must not hang the run silently: report progress and abort.
    std::thread watchdog([&] {
      const auto limit = deadline + std::chrono::seconds(180);
      while (!g_workload_done.load()) {
        if (clock_type::now() > limit) {
          std::fprintf(stderr,
                       "soak[worker%d]: the workload is stuck 180 s past its end; ops:", g_rank);
          for (auto& c : contexts)
            std::fprintf(stderr, " %" PRIu64 " (%zu in window)", c->ops.load(), c->window.size());
          std::fprintf(stderr, "\n");
          MPI_Abort(MPI_COMM_WORLD, 3);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
    for (int i = 0; i < g_config.threads; ++i) {
      auto c = std::make_unique<thread_context>();
      c->slot = i;
      c->rng.seed(splitmix(g_config.seed * 1000003ull + static_cast<std::uint64_t>(g_rank) * 257 +
                           static_cast<std::uint64_t>(i)));
      c->window_limit = static_cast<std::size_t>(4 + 4 * i);
      contexts.push_back(std::move(c));
    }
    std::vector<std::thread> threads;
    for (auto& c : contexts)
      threads.emplace_back([&c, deadline] { caller_thread(*c, deadline); });
    for (auto& th : threads)
      th.join();
    workload_s = seconds_d(clock_type::now() - start).count();
    sampling = false;
    sampler.join();
    g_workload_done = true;
    watchdog.join();

    // Every rank has dropped its rrefs; releases and late replies are still on their way.
    barrier();
    if (!eventually(
            [] {
              const auto s = mpirpc::stats();
              return s.rref_owned_objects == 0 && s.rref_references == 0;
            },
            std::chrono::seconds(30))) {
      const auto s = mpirpc::stats();
      violation("%" PRIu64 " owned objects and %" PRIu64
                " references still alive 30 s after every rank dropped its rrefs",
                s.rref_owned_objects, s.rref_references);
    }
    if (!eventually(
            [] {
              const auto s = mpirpc::stats();
              return s.late_replies_dropped >= s.timeouts;
            },
            std::chrono::seconds(30))) {
      // reported below from the counters
    }
    barrier();
    before_shutdown = mpirpc::stats();
    try {
      mpirpc::shutdown(true, std::chrono::seconds(120));
    } catch (const std::exception& e) {
      violation("graceful shutdown failed: %s", e.what());
    }
  }

  // ---- cross-check: calls sent to each worker == handlers it ran, by caller and kind
  std::vector<std::uint64_t> sent_flat(static_cast<std::size_t>(g_size) * n_categories * 2);
  for (int d = 0; d < g_size; ++d)
    for (int c = 0; c < n_categories; ++c) {
      sent_flat[(static_cast<std::size_t>(d) * n_categories + c) * 2] = g_sent[d][c].count.load();
      sent_flat[(static_cast<std::size_t>(d) * n_categories + c) * 2 + 1] =
          g_sent[d][c].hash_sum.load();
    }
  std::vector<std::uint64_t> all_sent(sent_flat.size() * static_cast<std::size_t>(g_size));
  {
    MPI_Request r;
    MPI_Iallgather(sent_flat.data(), static_cast<int>(sent_flat.size()), MPI_UINT64_T,
                   all_sent.data(), static_cast<int>(sent_flat.size()), MPI_UINT64_T,
                   MPI_COMM_WORLD, &r);
    wait_request(r);
  }
  std::uint64_t handlers_run = 0;
  std::uint64_t cross_mismatches = 0;
  for (int src = 0; src < g_size; ++src)
    for (int c = 0; c < n_categories; ++c) {
      const std::size_t at =
          static_cast<std::size_t>(src) * sent_flat.size() +
          (static_cast<std::size_t>(g_rank) * n_categories + static_cast<std::size_t>(c)) * 2;
      const std::uint64_t want = all_sent[at];
      const std::uint64_t want_hash = all_sent[at + 1];
      const std::uint64_t got = g_executed[src][c].count.load();
      const std::uint64_t got_hash = g_executed[src][c].hash_sum.load();
      handlers_run += got;
      if (want != got || want_hash != got_hash) {
        ++cross_mismatches;
        violation("worker%d sent %" PRIu64 " '%s' calls here, %" PRIu64
                  " ran (id hash sums %s vs %s)",
                  src, want, category_names[c], got, hex(want_hash).c_str(), hex(got_hash).c_str());
      }
    }

  // ---- per-thread checks and totals
  outcome_counts totals[n_kinds] = {};
  std::uint64_t issued_async = 0, callbacks = 0, ops = 0;
  for (auto& c : contexts) {
    for (int k = 0; k < n_kinds; ++k) {
      totals[k].ok += c->counts[k].ok;
      totals[k].remote_soak += c->counts[k].remote_soak;
      totals[k].remote_timeout += c->counts[k].remote_timeout;
      totals[k].timeout += c->counts[k].timeout;
      totals[k].bad += c->counts[k].bad;
    }
    issued_async += c->issued_async;
    callbacks += c->callbacks.load();
    ops += c->ops.load();
  }
  if (issued_async != callbacks) {
    violation("%" PRIu64 " async calls made, %" PRIu64 " done-callbacks ran", issued_async,
              callbacks);
  }
  const std::uint64_t planned_timeouts = g_planned_timeouts.load();
  if (before_shutdown.timeouts != planned_timeouts) {
    violation("the runtime counted %" PRIu64 " timeouts, %" PRIu64 " were planned",
              before_shutdown.timeouts, planned_timeouts);
  }
  if (before_shutdown.late_replies_dropped != before_shutdown.timeouts) {
    violation("%" PRIu64 " late replies dropped for %" PRIu64 " timed-out calls",
              before_shutdown.late_replies_dropped, before_shutdown.timeouts);
  }
  if (before_shutdown.malformed_messages != 0) {
    violation("%" PRIu64 " malformed messages", before_shutdown.malformed_messages);
  }

  // ---- memory
  if (!g_config.memory_log.empty()) {
    const std::string path = g_config.memory_log + "." + std::to_string(g_rank);
    if (FILE* f = std::fopen(path.c_str(), "w")) {
      std::fprintf(f, "# seconds rss_mib heap_in_use_mib\n");
      for (const sample& x : samples)
        std::fprintf(f, "%.1f %.3f %.3f\n", x.t, x.rss_mib, x.heap_mib);
      std::fclose(f);
    }
  }
  const third_means m = judge(samples, warmup);
  const double growth = m.last_heap - m.first_heap;
  if (m.used < 6) {
    violation("only %zu memory samples after the warm-up: run longer", m.used);
  } else if (growth >= g_config.heap_tolerance_mib) {
    violation("heap in use grew by %.2f MiB (first third %.2f MiB, last third %.2f MiB; "
              "limit %.1f MiB)",
              growth, m.first_heap, m.last_heap, g_config.heap_tolerance_mib);
  }

  // ---- summary, one block per rank, printed by rank 0 in order
  std::string text;
  char line[512];
  std::uint64_t calls = 0;
  outcome_counts all{};
  for (int k = 0; k < n_kinds; ++k) {
    const auto& t = totals[k];
    calls += t.ok + t.remote_soak + t.remote_timeout + t.timeout + t.bad;
    all.ok += t.ok;
    all.remote_soak += t.remote_soak;
    all.remote_timeout += t.remote_timeout;
    all.timeout += t.timeout;
    all.bad += t.bad;
  }
  std::snprintf(line, sizeof line,
                "worker%d: %" PRIu64 " calls checked in %.1f s (%.0f/s), %" PRIu64
                " handlers run here, violations %" PRIu64 "\n",
                g_rank, calls, workload_s, double(calls) / workload_s, handlers_run,
                g_violations.load());
  text += line;
  std::snprintf(line, sizeof line, "  %-20s %9s %9s %9s %9s %9s %6s\n", "kind", "calls", "value",
                "remote", "rem.tmo", "timeout", "wrong");
  text += line;
  for (int k = 0; k < n_kinds; ++k) {
    const auto& t = totals[k];
    std::snprintf(line, sizeof line,
                  "  %-20s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64
                  " %6" PRIu64 "\n",
                  kind_names[k], t.ok + t.remote_soak + t.remote_timeout + t.timeout + t.bad, t.ok,
                  t.remote_soak, t.remote_timeout, t.timeout, t.bad);
    text += line;
  }
  std::snprintf(line, sizeof line,
                "  %-20s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %6" PRIu64
                "\n",
                "total", calls, all.ok, all.remote_soak, all.remote_timeout, all.timeout, all.bad);
  text += line;
  std::snprintf(line, sizeof line,
                "  runtime: %" PRIu64 " requests sent, %" PRIu64 " served, %" PRIu64
                " timeouts (planned %" PRIu64 "), %" PRIu64
                " late replies dropped; done-callbacks %" PRIu64 "/%" PRIu64 "; cross-check %s\n",
                before_shutdown.requests_sent, before_shutdown.requests_served,
                before_shutdown.timeouts, planned_timeouts, before_shutdown.late_replies_dropped,
                callbacks, issued_async, cross_mismatches == 0 ? "ok" : "FAILED");
  text += line;
  std::snprintf(line, sizeof line,
                "  memory (%zu samples after %.0f s warm-up; means of the first and last thirds): "
                "heap in use %.2f -> %.2f MiB (%+.2f, limit %.1f; max %.2f; trend %+.1f "
                "KiB/min), RSS %.1f -> %.1f MiB (max %.1f)\n",
                m.used, warmup, m.first_heap, m.last_heap, growth, g_config.heap_tolerance_mib,
                m.max_heap, m.heap_slope_kib_min, m.first_rss, m.last_rss, m.max_rss);
  text += line;

  int len = static_cast<int>(text.size());
  std::vector<int> lens(static_cast<std::size_t>(g_size));
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::vector<int> offsets(static_cast<std::size_t>(g_size));
  std::string joined;
  if (g_rank == 0) {
    int total = 0;
    for (int r = 0; r < g_size; ++r) {
      offsets[static_cast<std::size_t>(r)] = total;
      total += lens[static_cast<std::size_t>(r)];
    }
    joined.resize(static_cast<std::size_t>(total));
  }
  MPI_Gatherv(text.data(), len, MPI_CHAR, joined.data(), lens.data(), offsets.data(), MPI_CHAR, 0,
              MPI_COMM_WORLD);
  std::uint64_t mine = g_violations.load(), worst = 0;
  MPI_Allreduce(&mine, &worst, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) {
    std::fputs(joined.c_str(), stdout);
    std::printf("soak: %s (%" PRIu64 " violations on all ranks)\n",
                worst == 0 ? "PASSED" : "FAILED", worst);
    std::fflush(stdout);
  }
  MPI_Finalize();
  return worst == 0 ? 0 : 1;
}
