// SPDX-License-Identifier: MIT
// mpirpc_bench: the standard workloads W0..W6 of BENCH_SPEC.md, for mpirpc and for raw MPI,
// and W7 (docs/benchmarks.md: random all-to-all calls that forward, ended by barrier()).
//
//     mpiexec -n 2 mpirpc_bench --workload W1 --system mpi|mpirpc [--quick]
//
// Prints one JSON object per line on rank 0's standard output; progress and notes go to
// standard error. `--system mpi` runs the same message pattern with plain MPI point-to-point
// calls (all but W0): the reference the mpirpc figures are compared against. W4's and W6's raw
// lines go beyond BENCH_SPEC.md, whose bars for them are ratios to mpirpc's own W1; they show
// what the pattern costs three processes on this machine's cores.
//
// Oversubscribed machines: Open MPI busy-polls inside blocking calls, so a rank that merely
// waits (for the others to finish, or for a reduction) never sits in a blocking MPI call; it
// tests a non-blocking collective and sleeps between tests. Only the ranks that exchange the
// timed messages of a raw-MPI workload block in MPI_Send/MPI_Recv.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpi.h>

#include <mpirpc/mpirpc.hpp>

namespace {

// ---- the registered functions of the workloads

int noop(int x) {
  return x;
}

std::vector<double> echo(std::vector<double> v) {
  return v;
}

/// W2's fire-and-forget line: one-way calls of ff_noop, then one rpc_sync of ff_count proves
/// (rpc_ff's ordering guarantees it) that all of them ran.
std::atomic<long> g_ff_calls{0};
void ff_noop(int) {
  g_ff_calls.fetch_add(1, std::memory_order_relaxed);
}
long ff_count() {
  return g_ff_calls.load(std::memory_order_relaxed);
}

/// W5: counts the callers that are done, on worker0.
std::atomic<long> g_callers_done{0};
void caller_done() {
  g_callers_done.fetch_add(1);
}

/// Set on every rank by worker0 once the timed work is over (see run_mpirpc).
std::atomic<bool> g_finished{false};
void finish() {
  g_finished.store(true);
}

double add(double x, double y) {
  return x + y;
}

/// W4: async execution; the reply is sent when the nested call's continuation completes.
mpirpc::future<double> chained(int to, double x, double y, double z) {
  return mpirpc::rpc_async(to, add, x, y).then([z](mpirpc::future<double> f) {
    return f.value() + z;
  });
}

int g_rank = -1; ///< this process's rank in MPI_COMM_WORLD

/// W6: one hop of a chain of `left` nested calls that alternates between worker1 and worker2;
/// returns the future of the next hop, and the chain's innermost call returns its depth.
mpirpc::future<int> hop(int left, int depth) {
  if (left <= 1) {
    mpirpc::future<int> last;
    last.set_result(depth);
    return last;
  }
  return mpirpc::rpc_async(g_rank == 1 ? 2 : 1, hop, left - 1, depth + 1);
}

/// W7: a visit counts itself here; one sent with `forward` set sends one more visit, without
/// it, to a rank that `seed` picks among the others.
std::atomic<long> g_visits{0};
int g_ranks = 0; ///< the size of MPI_COMM_WORLD

std::uint64_t next_seed(std::uint64_t seed) {
  return seed * 6364136223846793005ull + 1442695040888963407ull;
}
int other_rank(std::uint64_t seed) {
  return (g_rank + 1 + static_cast<int>((seed >> 33) % static_cast<std::uint64_t>(g_ranks - 1))) %
         g_ranks;
}

void visit(std::uint64_t seed, bool forward) {
  g_visits.fetch_add(1, std::memory_order_relaxed);
  if (forward) {
    const std::uint64_t next = next_seed(seed);
    mpirpc::rpc_ff(other_rank(next), visit, next, false);
  }
}

/// W7 with request/reply: a call that counts itself and returns 0, or, forwarding (an
/// async-execution function), returns 1 + what its own call to another rank returns.
int visit_leaf(std::uint64_t) {
  g_visits.fetch_add(1, std::memory_order_relaxed);
  return 0;
}
mpirpc::future<int> visit_forward(std::uint64_t seed) {
  g_visits.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t next = next_seed(seed);
  return mpirpc::rpc_async(other_rank(next), visit_leaf, next).then([](mpirpc::future<int> f) {
    return f.value() + 1;
  });
}

} // namespace

MPIRPC_REGISTER(visit);
MPIRPC_REGISTER(visit_leaf);
MPIRPC_REGISTER(visit_forward);
MPIRPC_REGISTER(noop);
MPIRPC_REGISTER(echo);
MPIRPC_REGISTER(ff_noop);
MPIRPC_REGISTER(ff_count);
MPIRPC_REGISTER(finish);
MPIRPC_REGISTER(caller_done);
MPIRPC_REGISTER(add);
MPIRPC_REGISTER(chained);
MPIRPC_REGISTER(hop);

namespace {

using clock_type = std::chrono::steady_clock;

constexpr int tag_request = 1;
constexpr int tag_reply = 2;
constexpr int window_size = 256; // W2, W5: outstanding calls per caller
constexpr int chain_depth = 64;  // W6

/// Rank counts of the workloads (BENCH_SPEC.md).
const std::map<std::string, int> k_ranks = {{"W0", 4}, {"W1", 2}, {"W2", 2}, {"W3", 2},
                                            {"W4", 3}, {"W5", 4}, {"W6", 3}, {"W7", 4}};

struct config {
  std::string workload;
  std::string system;
  bool quick = false;
  long scale = 1; ///< --scale K: iteration counts K times as large (for profiling)
  int ranks = 0;

  /// An iteration count, cut about tenfold by --quick, multiplied by --scale.
  long count(long full) const { return (quick ? std::max(1L, full / 10) : full) * scale; }
};

double microseconds_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - start).count();
}

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

/// A progress note on rank 0's standard error.
template <class... Parts> void note(const Parts&... parts) {
  if (g_rank != 0) return;
  std::ostringstream text;
  text << "mpirpc_bench: ";
  (text << ... << parts) << '\n';
  std::fputs(text.str().c_str(), stderr);
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("wrong result: " + what);
}

// ---- statistics and output

struct summary {
  double median = 0;
  double p99 = 0;
  double mean = 0;
};

summary summarize(std::vector<double> samples) {
  summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  s.median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  // Nearest rank: the smallest sample with at least 99% of the samples at or below it.
  const auto rank = static_cast<std::size_t>(std::ceil(0.99 * static_cast<double>(n)));
  s.p99 = samples[std::max<std::size_t>(rank, 1) - 1];
  double total = 0;
  for (double x : samples)
    total += x;
  s.mean = total / static_cast<double>(n);
  return s;
}

/// One JSON Lines record, printed by rank 0.
class json_line {
public:
  explicit json_line(const config& cfg) {
    add("workload", cfg.workload);
    add("system", cfg.system);
    add("ranks", static_cast<long>(cfg.ranks));
  }
  json_line& add(const char* key, const std::string& value) {
    field(key) << '"' << value << '"';
    return *this;
  }
  json_line& add(const char* key, long value) {
    field(key) << value;
    return *this;
  }
  json_line& add(const char* key, double value, int decimals) {
    if (!std::isfinite(value)) {
      field(key) << "null";
      return *this;
    }
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    field(key) << text;
    return *this;
  }
  void print() const {
    if (g_rank != 0) return;
    std::printf("{%s}\n", _fields.str().c_str());
    std::fflush(stdout);
  }

private:
  std::ostringstream& field(const char* key) {
    if (!_first) _fields << ", ";
    _first = false;
    _fields << '"' << key << "\": ";
    return _fields;
  }
  std::ostringstream _fields;
  bool _first = true;
};

// ---- idle waiting

/// Completes a non-blocking MPI operation without busy-polling: tests, then sleeps with an
/// exponential back-off.
void wait_idle(MPI_Request& request) {
  constexpr auto longest = std::chrono::microseconds(1000);
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, longest);
  }
}

void idle_barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  wait_idle(request);
}

/// The largest `value` over all ranks; meaningful on rank 0.
double max_over_ranks(double value) {
  double result = value;
  MPI_Request request;
  MPI_Ireduce(&value, &result, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD, &request);
  wait_idle(request);
  return result;
}

double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void print_latency(const config& cfg, const std::vector<double>& samples, bool with_mean) {
  const summary s = summarize(samples);
  json_line line(cfg);
  line.add("median_us", s.median, 3).add("p99_us", s.p99, 3);
  if (with_mean) line.add("mean_us", s.mean, 3);
  line.print();
}

/// W3's vector lengths (in doubles) and calls per length.
struct payload_step {
  long doubles;
  long calls;
};
std::vector<payload_step> payload_steps(const config& cfg) {
  return {{1, cfg.count(1000)},
          {128, cfg.count(1000)},
          {8192, cfg.count(1000)},
          {131072, cfg.count(1000)},
          {2097152, std::max(5L, cfg.count(50))}};
}
long warmup_calls(long calls) {
  return std::max(2L, calls / 10);
}

void print_payload(const config& cfg, long doubles, const std::vector<double>& samples) {
  const double bytes = static_cast<double>(doubles) * sizeof(double);
  const double median_us = summarize(samples).median;
  json_line(cfg)
      .add("bytes", static_cast<long>(bytes))
      .add("median_us", median_us, 3)
      .add("gbytes_per_s", 2 * bytes / (median_us * 1e-6) / 1e9, 4)
      .print();
}

// ---- raw MPI reference

/// W6's line: the median time of a whole chain, and its depth.
void print_chain(const config& cfg, const std::vector<double>& samples) {
  json_line(cfg)
      .add("median_us", summarize(samples).median, 3)
      .add("depth", static_cast<long>(chain_depth))
      .print();
}

/// Rank 0's side of W1 and W4: `warmup` + `calls` 4-byte round trips to rank 1; returns the
/// timed ones in microseconds.
std::vector<double> raw_round_trips(long warmup, long calls, const char* what) {
  int message = 1;
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(calls));
  for (long i = 0; i < warmup + calls; ++i) {
    const auto start = clock_type::now();
    MPI_Send(&message, 1, MPI_INT, 1, tag_request, MPI_COMM_WORLD);
    MPI_Recv(&message, 1, MPI_INT, 1, tag_reply, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (i >= warmup) samples.push_back(microseconds_since(start));
  }
  check(message == 1, what);
  return samples;
}

/// W1: 4-byte ping-pong between ranks 0 and 1.
void raw_w1(const config& cfg) {
  const long warmup = cfg.count(2000), calls = cfg.count(20000);
  note(cfg.workload, "/mpi: ", warmup, " warm-up + ", calls, " timed round trips");
  int message = 1;
  if (g_rank == 0) {
    print_latency(cfg, raw_round_trips(warmup, calls, "W1 ping-pong payload"), true);
  } else {
    for (long i = 0; i < warmup + calls; ++i) {
      MPI_Recv(&message, 1, MPI_INT, 0, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(&message, 1, MPI_INT, 0, tag_reply, MPI_COMM_WORLD);
    }
  }
}

/// Sends `calls` 4-byte requests to `server` keeping `window_size` outstanding, and checks
/// the replies, which come back in order.
void raw_window_client(int server, long calls) {
  std::vector<int> requests(window_size);
  std::vector<MPI_Request> sends(window_size, MPI_REQUEST_NULL);
  long sent = 0;
  auto send_next = [&] {
    const auto slot = static_cast<std::size_t>(sent % window_size);
    MPI_Wait(&sends[slot], MPI_STATUS_IGNORE);
    requests[slot] = static_cast<int>(sent);
    MPI_Isend(&requests[slot], 1, MPI_INT, server, tag_request, MPI_COMM_WORLD, &sends[slot]);
    ++sent;
  };
  while (sent < std::min<long>(window_size, calls))
    send_next();
  for (long done = 0; done < calls; ++done) {
    int reply = -1;
    MPI_Recv(&reply, 1, MPI_INT, server, tag_reply, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    check(reply == static_cast<int>(done), "windowed reply out of order");
    if (sent < calls) send_next();
  }
  MPI_Waitall(window_size, sends.data(), MPI_STATUSES_IGNORE);
}

/// Answers `calls` 4-byte requests one by one, from any rank.
void raw_window_server(long calls) {
  for (long i = 0; i < calls; ++i) {
    int request = 0;
    MPI_Status status;
    MPI_Recv(&request, 1, MPI_INT, MPI_ANY_SOURCE, tag_request, MPI_COMM_WORLD, &status);
    MPI_Send(&request, 1, MPI_INT, status.MPI_SOURCE, tag_reply, MPI_COMM_WORLD);
  }
}

/// W2: rank 0 keeps a window of requests to rank 1.
void raw_w2(const config& cfg) {
  const long warmup = cfg.count(20000), calls = cfg.count(200000);
  note(cfg.workload, "/mpi: ", warmup, " warm-up + ", calls, " timed requests");
  if (g_rank == 0) {
    raw_window_client(1, warmup);
    const auto start = clock_type::now();
    raw_window_client(1, calls);
    const double elapsed = seconds_since(start);
    json_line(cfg).add("calls_per_s", static_cast<double>(calls) / elapsed, 0).print();
  } else {
    raw_window_server(warmup + calls);
  }
}

/// W3: rank 1 echoes buffers of W3's sizes.
void raw_w3(const config& cfg) {
  for (const payload_step& step : payload_steps(cfg)) {
    const long warmup = warmup_calls(step.calls);
    note(cfg.workload, "/mpi: ", step.doubles, " doubles, ", step.calls, " round trips");
    std::vector<double> buffer(static_cast<std::size_t>(step.doubles));
    const int n = static_cast<int>(step.doubles);
    if (g_rank == 0) {
      for (long k = 0; k < step.doubles; ++k)
        buffer[static_cast<std::size_t>(k)] = static_cast<double>(k);
      std::vector<double> samples;
      for (long i = 0; i < warmup + step.calls; ++i) {
        const auto start = clock_type::now();
        MPI_Send(buffer.data(), n, MPI_DOUBLE, 1, tag_request, MPI_COMM_WORLD);
        MPI_Recv(buffer.data(), n, MPI_DOUBLE, 1, tag_reply, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (i >= warmup) samples.push_back(microseconds_since(start));
      }
      check(buffer.back() == static_cast<double>(n - 1), "W3 echoed buffer");
      print_payload(cfg, step.doubles, samples);
    } else {
      for (long i = 0; i < warmup + step.calls; ++i) {
        MPI_Recv(buffer.data(), n, MPI_DOUBLE, 0, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(buffer.data(), n, MPI_DOUBLE, 0, tag_reply, MPI_COMM_WORLD);
      }
    }
  }
}

/// W5: ranks 1..3 keep windows of requests to rank 0, which answers them one by one.
void raw_w5(const config& cfg) {
  const long warmup = cfg.count(10000), calls = cfg.count(100000);
  const long callers = cfg.ranks - 1;
  note(cfg.workload, "/mpi: ", warmup, " warm-up + ", calls, " timed requests per caller");
  if (g_rank == 0) {
    raw_window_server(callers * warmup);
    idle_barrier();
    raw_window_server(callers * calls);
  } else {
    raw_window_client(0, warmup);
    idle_barrier();
  }
  double elapsed = 0;
  if (g_rank != 0) {
    const auto start = clock_type::now();
    raw_window_client(0, calls);
    elapsed = seconds_since(start);
  }
  const double slowest = max_over_ranks(elapsed);
  json_line(cfg).add("calls_per_s", static_cast<double>(callers * calls) / slowest, 0).print();
}

/// W4: the nested chain in plain MPI: rank 0 asks rank 1, which asks rank 2 and answers
/// rank 0 once rank 2 has answered. Not in BENCH_SPEC.md; it shows what three processes on
/// this machine's cores cost for the pattern, beside the bar of 3 x mpirpc's own W1.
void raw_w4(const config& cfg) {
  const long warmup = cfg.count(500), calls = cfg.count(5000);
  note(cfg.workload, "/mpi: ", warmup, " warm-up + ", calls, " timed nested round trips");
  int message = 1;
  if (g_rank == 0) {
    print_latency(cfg, raw_round_trips(warmup, calls, "W4 nested payload"), false);
  } else if (g_rank == 1) {
    for (long i = 0; i < warmup + calls; ++i) {
      MPI_Recv(&message, 1, MPI_INT, 0, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(&message, 1, MPI_INT, 2, tag_request, MPI_COMM_WORLD);
      MPI_Recv(&message, 1, MPI_INT, 2, tag_reply, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(&message, 1, MPI_INT, 0, tag_reply, MPI_COMM_WORLD);
    }
  } else {
    for (long i = 0; i < warmup + calls; ++i) {
      MPI_Recv(&message, 1, MPI_INT, 1, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(&message, 1, MPI_INT, 1, tag_reply, MPI_COMM_WORLD);
    }
  }
}

/// One hop of the raw W6 chain on rank 1 or 2: passes `left - 1` on to `other`, serving the
/// hops that come back meanwhile, and returns the depth below it plus one.
int raw_hop(int left, int other) {
  if (left <= 1) return 1;
  int next = left - 1;
  MPI_Send(&next, 1, MPI_INT, other, tag_request, MPI_COMM_WORLD);
  for (;;) {
    int value = 0;
    MPI_Status status;
    MPI_Recv(&value, 1, MPI_INT, other, MPI_ANY_TAG, MPI_COMM_WORLD, &status);
    if (status.MPI_TAG == tag_reply) return value + 1;
    const int depth = raw_hop(value, other);
    MPI_Send(&depth, 1, MPI_INT, other, tag_reply, MPI_COMM_WORLD);
  }
}

/// W6 in plain MPI: the chain of chain_depth hops between ranks 1 and 2, started and ended by
/// rank 0. Not in BENCH_SPEC.md (see raw_w4).
void raw_w6(const config& cfg) {
  const long warmup = cfg.count(20), chains = cfg.count(200);
  note(cfg.workload, "/mpi: ", warmup, " warm-up + ", chains, " timed chains");
  if (g_rank == 0) {
    std::vector<double> samples;
    for (long i = 0; i < warmup + chains; ++i) {
      int depth = chain_depth;
      const auto start = clock_type::now();
      MPI_Send(&depth, 1, MPI_INT, 1, tag_request, MPI_COMM_WORLD);
      MPI_Recv(&depth, 1, MPI_INT, 1, tag_reply, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (i >= warmup) samples.push_back(microseconds_since(start));
      check(depth == chain_depth, "depth of the raw hop chain");
    }
    print_chain(cfg, samples);
  } else {
    const int from = g_rank == 1 ? 0 : 1; // where each chain enters this rank
    const int other = g_rank == 1 ? 2 : 1;
    for (long i = 0; i < warmup + chains; ++i) {
      int left = 0;
      MPI_Recv(&left, 1, MPI_INT, from, tag_request, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      const int depth = raw_hop(left, other);
      MPI_Send(&depth, 1, MPI_INT, from, tag_reply, MPI_COMM_WORLD);
    }
  }
}

// ---- mpirpc

const std::string k_worker0 = "worker0";
const std::string k_worker1 = "worker1";
const std::string k_worker2 = "worker2";

/// W0: no calls for 5 s; the largest CPU time any rank spent meanwhile.
void rpc_w0(const config& cfg) {
  constexpr auto idle = std::chrono::seconds(5);
  note(cfg.workload, "/mpirpc: every rank idles for ", static_cast<long>(idle.count()), " s");
  const double before = process_cpu_seconds();
  std::this_thread::sleep_for(idle);
  const double spent = process_cpu_seconds() - before;
  const double largest = max_over_ranks(spent);
  json_line(cfg).add("cpu_s_per_rank", largest, 4).print();
}

/// W1: rpc_sync latency of noop.
void rpc_w1(const config& cfg) {
  const long warmup = cfg.count(2000), calls = cfg.count(20000);
  note(cfg.workload, "/mpirpc: ", warmup, " warm-up + ", calls, " timed calls");
  if (g_rank != 0) return;
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(calls));
  for (long i = 0; i < warmup + calls; ++i) {
    const auto start = clock_type::now();
    const int r = mpirpc::rpc_sync(k_worker1, noop, 1);
    if (i >= warmup) samples.push_back(microseconds_since(start));
    check(r == 1, "noop(1)");
  }
  print_latency(cfg, samples, true);
}

/// Issues `calls` rpc_async(to, noop, i) keeping window_size outstanding; checks every result.
void rpc_window_client(const std::string& to, long calls) {
  std::vector<mpirpc::future<int>> window;
  window.reserve(window_size);
  for (long i = 0; i < calls; ++i) {
    if (i < window_size) {
      window.push_back(mpirpc::rpc_async(to, noop, static_cast<int>(i)));
      continue;
    }
    mpirpc::future<int>& slot = window[static_cast<std::size_t>(i % window_size)];
    check(slot.wait() == static_cast<int>(i - window_size), "windowed noop result");
    slot = mpirpc::rpc_async(to, noop, static_cast<int>(i));
  }
  // The oldest outstanding call sits in slot calls % window_size.
  const long outstanding = std::min<long>(window_size, calls);
  for (long k = 0; k < outstanding; ++k) {
    const long i = calls - outstanding + k;
    check(window[static_cast<std::size_t>(i % window_size)].wait() == static_cast<int>(i),
          "windowed noop result");
  }
}

/// W2: windowed rpc_async throughput from worker0 to worker1.
void rpc_w2(const config& cfg) {
  const long warmup = cfg.count(20000), calls = cfg.count(200000);
  note(cfg.workload, "/mpirpc: ", warmup, " warm-up + ", calls, " timed calls");
  if (g_rank != 0) return;
  rpc_window_client(k_worker1, warmup);
  const auto start = clock_type::now();
  rpc_window_client(k_worker1, calls);
  const double elapsed = seconds_since(start);
  json_line(cfg).add("calls_per_s", static_cast<double>(calls) / elapsed, 0).print();

  note(cfg.workload, "/mpirpc fire_and_forget: ", warmup, " warm-up + ", calls,
       " timed rpc_ff calls, then one rpc_sync");
  for (long i = 0; i < warmup; ++i)
    mpirpc::rpc_ff(k_worker1, ff_noop, static_cast<int>(i));
  check(mpirpc::rpc_sync(k_worker1, ff_count) == warmup, "ff_count after the warm-up");
  const auto ff_start = clock_type::now();
  for (long i = 0; i < calls; ++i)
    mpirpc::rpc_ff(k_worker1, ff_noop, static_cast<int>(i));
  // Runs after every one-way call before it: its result proves they all ran.
  const long ran = mpirpc::rpc_sync(k_worker1, ff_count);
  const double ff_elapsed = seconds_since(ff_start);
  check(ran == warmup + calls, "ff_count after the timed calls");
  json_line(cfg)
      .add("variant", std::string("fire_and_forget"))
      .add("calls_per_s", static_cast<double>(calls) / ff_elapsed, 0)
      .print();
}

/// W3: echo of growing vectors.
void rpc_w3(const config& cfg) {
  for (const payload_step& step : payload_steps(cfg)) {
    const long warmup = warmup_calls(step.calls);
    note(cfg.workload, "/mpirpc: ", step.doubles, " doubles, ", step.calls, " calls");
    if (g_rank != 0) continue;
    std::vector<double> v(static_cast<std::size_t>(step.doubles));
    for (long k = 0; k < step.doubles; ++k)
      v[static_cast<std::size_t>(k)] = static_cast<double>(k);
    const double last = static_cast<double>(step.doubles - 1);
    std::vector<double> samples;
    for (long i = 0; i < warmup + step.calls; ++i) {
      const auto start = clock_type::now();
      // Passed as an rvalue, as raw MPI sends and receives one buffer: once the request has
      // left, mpirpc keeps v's storage and receives the echo into it without zero-filling it
      // (options::spare_buffer_bytes). The echo is the next call's argument.
      std::vector<double> r = mpirpc::rpc_sync(k_worker1, echo, std::move(v));
      if (i >= warmup) samples.push_back(microseconds_since(start));
      check(r.size() == static_cast<std::size_t>(step.doubles) && r.front() == 0.0 &&
                r.back() == last,
            "echo(v)");
      v = std::move(r);
    }
    print_payload(cfg, step.doubles, samples);
  }
}

/// W4: worker0 -> worker1 (async execution) -> worker2.
void rpc_w4(const config& cfg) {
  const long warmup = cfg.count(500), calls = cfg.count(5000);
  note(cfg.workload, "/mpirpc: ", warmup, " warm-up + ", calls, " timed nested calls");
  if (g_rank != 0) return;
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(calls));
  for (long i = 0; i < warmup + calls; ++i) {
    const double z = static_cast<double>(i % 100);
    const auto start = clock_type::now();
    const double r = mpirpc::rpc_sync(k_worker1, chained, 2, 1.0, 2.0, z);
    if (i >= warmup) samples.push_back(microseconds_since(start));
    check(r == 3.0 + z, "chained(2, 1, 2, z)");
  }
  print_latency(cfg, samples, false);
}

/// W5: worker1..3 keep windows of calls to worker0.
void rpc_w5(const config& cfg) {
  const long warmup = cfg.count(10000), calls = cfg.count(100000);
  const long callers = cfg.ranks - 1;
  note(cfg.workload, "/mpirpc: ", warmup, " warm-up + ", calls, " timed calls per caller");
  if (g_rank != 0) rpc_window_client(k_worker0, warmup);
  idle_barrier();
  double elapsed = 0;
  if (g_rank != 0) {
    const auto start = clock_type::now();
    rpc_window_client(k_worker0, calls);
    elapsed = seconds_since(start);
    mpirpc::rpc_sync(k_worker0, caller_done);
  } else {
    // The server waits for the callers without a pending collective (see run_mpirpc).
    while (g_callers_done.load() < callers)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double slowest = max_over_ranks(elapsed);
  json_line(cfg).add("calls_per_s", static_cast<double>(callers * calls) / slowest, 0).print();
}

/// W6: chains of chain_depth nested async-execution calls alternating worker1 and worker2.
void rpc_w6(const config& cfg) {
  const long warmup = cfg.count(20), chains = cfg.count(200);
  note(cfg.workload, "/mpirpc: ", warmup, " warm-up + ", chains, " timed chains");
  if (g_rank != 0) return;
  std::vector<double> samples;
  for (long i = 0; i < warmup + chains; ++i) {
    const auto start = clock_type::now();
    const int depth = mpirpc::rpc_sync(k_worker1, hop, chain_depth, 1);
    if (i >= warmup) samples.push_back(microseconds_since(start));
    check(depth == chain_depth, "depth of the hop chain");
  }
  print_chain(cfg, samples);
}

/// The sum of `value` over all ranks, on every rank.
long sum_over_ranks(long value) {
  long total = 0;
  MPI_Request request;
  MPI_Iallreduce(&value, &total, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD, &request);
  wait_idle(request);
  return total;
}

/// One round of W7 on every rank: `calls` calls from each rank to random other ranks, every
/// other one forwarded once more, then barrier(). Returns the visits handled on all ranks and
/// the slowest rank's time from the common start to the barrier's return.
struct w7_round {
  long visits = 0;
  double seconds = 0;
};
w7_round rpc_w7_round(long calls, bool request_reply, std::uint64_t seed) {
  g_visits.store(0);
  idle_barrier(); // every rank has reset its count before any rank calls
  const auto start = clock_type::now();
  if (request_reply) {
    std::vector<mpirpc::future<int>> results;
    results.reserve(static_cast<std::size_t>(calls));
    for (long i = 0; i < calls; ++i) {
      seed = next_seed(seed);
      results.push_back(i % 2 == 0 ? mpirpc::rpc_async(other_rank(seed), visit_forward, seed)
                                   : mpirpc::rpc_async(other_rank(seed), visit_leaf, seed));
    }
    long forwarded = 0;
    for (auto& r : results)
      forwarded += r.wait();
    check(forwarded == (calls + 1) / 2, "forwarded calls' results");
  } else {
    for (long i = 0; i < calls; ++i) {
      seed = next_seed(seed);
      mpirpc::rpc_ff(other_rank(seed), visit, seed, i % 2 == 0);
    }
  }
  mpirpc::barrier();
  const double elapsed = seconds_since(start);
  w7_round r;
  r.visits = sum_over_ranks(g_visits.load());
  r.seconds = max_over_ranks(elapsed);
  return r;
}

/// W7: every rank sends one-way calls to random other ranks, whose handlers forward every
/// other one once more, then barrier(); then the same with rpc_async and every future
/// collected. Figure: calls handled on all ranks per second of the slowest rank.
void rpc_w7(const config& cfg) {
  const long warmup = cfg.count(10000), calls = cfg.count(100000);
  const std::uint64_t seed = 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(g_rank + 1);
  const long expected = static_cast<long>(cfg.ranks) * (calls + (calls + 1) / 2);
  for (const bool request_reply : {false, true}) {
    const char* variant = request_reply ? "request_reply" : "one_way";
    note(cfg.workload, "/mpirpc ", variant, ": ", warmup, " warm-up + ", calls,
         " timed calls per rank, half of them forwarded once, then barrier()");
    rpc_w7_round(warmup, request_reply, seed);
    const w7_round timed = rpc_w7_round(calls, request_reply, next_seed(seed));
    check(g_rank != 0 || timed.visits == expected, "calls handled before barrier() returned");
    json_line(cfg)
        .add("variant", std::string(variant))
        .add("calls_per_rank", calls)
        .add("messages", timed.visits)
        .add("messages_per_s", static_cast<double>(timed.visits) / timed.seconds, 0)
        .print();
  }
}

void run_mpirpc(const config& cfg) {
  mpirpc::options opts;
  if (cfg.workload == "W6") opts.num_worker_threads = 1;
  mpirpc::runtime rt(opts);
  if (cfg.workload == "W0") rpc_w0(cfg);
  if (cfg.workload == "W1") rpc_w1(cfg);
  if (cfg.workload == "W2") rpc_w2(cfg);
  if (cfg.workload == "W3") rpc_w3(cfg);
  if (cfg.workload == "W4") rpc_w4(cfg);
  if (cfg.workload == "W5") rpc_w5(cfg);
  if (cfg.workload == "W6") rpc_w6(cfg);
  if (cfg.workload == "W7") rpc_w7(cfg);
  // Every rank's timed work is done before the (collective) shutdown starts; the runtime
  // keeps serving requests while a rank waits here. Ranks that only serve wait for worker0's
  // word with plain sleeps: a pending non-blocking barrier would add Open MPI's collective
  // progress to every MPI call of the serving threads, which the raw reference does not pay.
  // (W5's callers and W0 wait in idle_barrier inside their workload; they time nothing then.)
  if (g_rank == 0) {
    for (int r = 1; r < cfg.ranks; ++r)
      mpirpc::rpc_sync(r, finish);
  } else {
    while (!g_finished.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  idle_barrier();
  const mpirpc::runtime_stats st = mpirpc::stats();
  std::fprintf(stderr,
               "mpirpc_bench: rank %d: %llu requests sent, %llu served, %llu batches carried %llu "
               "calls and replies; %llu calls and %llu one-way calls waited for room\n",
               g_rank, static_cast<unsigned long long>(st.requests_sent + st.one_way_sent),
               static_cast<unsigned long long>(st.requests_served),
               static_cast<unsigned long long>(st.batches_sent),
               static_cast<unsigned long long>(st.messages_batched),
               static_cast<unsigned long long>(st.calls_delayed),
               static_cast<unsigned long long>(st.one_way_delayed));
  rt.shutdown();
}

void run_mpi(const config& cfg) {
  if (cfg.workload == "W1") raw_w1(cfg);
  if (cfg.workload == "W2") raw_w2(cfg);
  if (cfg.workload == "W3") raw_w3(cfg);
  if (cfg.workload == "W4") raw_w4(cfg);
  if (cfg.workload == "W5") raw_w5(cfg);
  if (cfg.workload == "W6") raw_w6(cfg);
  idle_barrier();
}

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: mpiexec -n P mpirpc_bench --workload W0..W7 --system mpi|mpirpc [--quick] "
               "[--scale K]\n"
               "  P per workload: W0 4, W1 2, W2 2, W3 2, W4 3, W5 4, W6 3, W7 4.\n"
               "  --system mpi exists for all but W0 and W7. --quick cuts iteration counts "
               "about tenfold; --scale K multiplies them by K (a steady state to profile).\n");
}

/// Parses the command line; returns an empty message on success.
std::string parse(int argc, char** argv, config& cfg) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      cfg.quick = true;
    } else if (arg == "--scale" && i + 1 < argc) {
      cfg.scale = std::atol(argv[++i]);
      if (cfg.scale < 1 || cfg.scale > 1000) return "--scale must be a whole number from 1 to 1000";
    } else if ((arg == "--workload" || arg == "--system") && i + 1 < argc) {
      (arg == "--workload" ? cfg.workload : cfg.system) = argv[++i];
    } else {
      return "unknown or incomplete argument '" + arg + "'";
    }
  }
  if (k_ranks.count(cfg.workload) == 0) return "--workload must be one of W0..W7";
  if (cfg.system != "mpi" && cfg.system != "mpirpc") return "--system must be mpi or mpirpc";
  if (cfg.system == "mpi" && cfg.workload == "W0") {
    return "workload W0 has no raw-MPI mode (it measures the runtime's idle cost)";
  }
  if (cfg.system == "mpi" && cfg.workload == "W7") {
    return "workload W7 has no raw-MPI mode (it needs barrier()'s quiescence detection)";
  }
  return {};
}

} // namespace

int main(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      usage(stdout);
      return 0;
    }
  }
  const std::string problem = parse(argc, argv, cfg);
  if (!problem.empty()) {
    std::fprintf(stderr, "mpirpc_bench: %s\n", problem.c_str());
    usage(stderr);
    return 2;
  }

  // mpirpc needs MPI_THREAD_MULTIPLE; the raw reference runs single-threaded, as MPI
  // benchmarks usually do. MPI is initialised here so that the rank count is checked before
  // the runtime starts; the runtime then leaves finalisation to us.
  const int wanted = cfg.system == "mpirpc" ? MPI_THREAD_MULTIPLE : MPI_THREAD_SINGLE;
  int provided = MPI_THREAD_SINGLE;
  MPI_Init_thread(&argc, &argv, wanted, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &cfg.ranks);
  g_ranks = cfg.ranks;
  const int needed = k_ranks.at(cfg.workload);
  if (cfg.ranks != needed || provided < wanted) {
    if (g_rank == 0) {
      if (cfg.ranks != needed) {
        std::fprintf(stderr,
                     "mpirpc_bench: workload %s needs exactly %d ranks (mpiexec -n %d), but "
                     "runs on %d\n",
                     cfg.workload.c_str(), needed, needed, cfg.ranks);
      } else {
        std::fprintf(stderr, "mpirpc_bench: this MPI does not provide MPI_THREAD_MULTIPLE\n");
      }
    }
    MPI_Finalize();
    return 2;
  }

  try {
    if (cfg.system == "mpirpc") {
      run_mpirpc(cfg);
    } else {
      run_mpi(cfg);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpirpc_bench: rank %d: %s/%s failed: %s\n", g_rank, cfg.workload.c_str(),
                 cfg.system.c_str(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
}
