// SPDX-License-Identifier: MIT
// mpirpc/detail/spare_buffers.hpp: which vectors are kept, the size window, the budget, the
// replacement of the older slot, release, and a decode that receives into a kept vector.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <mpirpc/detail/spare_buffers.hpp>
#include <mpirpc/serialization.hpp>

using mpirpc::detail::release_spare_buffers;
using mpirpc::detail::spare_budget;
using mpirpc::detail::spare_held;
using mpirpc::detail::spare_min_bytes;
using mpirpc::detail::spare_vectors;

namespace {

using doubles = std::vector<double>;
constexpr std::size_t min_doubles = spare_min_bytes / sizeof(double);

/// Marks V as received in this process (a decode asked for one), without which none is kept.
template <class V> void want() {
  V v;
  spare_vectors<V>::take(v, spare_min_bytes / sizeof(typename V::value_type));
}

/// Starts each case with nothing kept and the default budget; puts the budget back after.
struct clean_pools {
  clean_pools() {
    release_spare_buffers();
    spare_budget.store(std::size_t(32) << 20);
    want<doubles>();
  }
  ~clean_pools() {
    release_spare_buffers();
    spare_budget.store(std::size_t(32) << 20);
  }
};

doubles filled(std::size_t n, double first) {
  doubles v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = first + static_cast<double>(i);
  return v;
}

} // namespace

static_assert(mpirpc::detail::is_spare_vector_v<std::vector<double>>);
static_assert(mpirpc::detail::is_spare_vector_v<std::vector<std::uint8_t>>);
static_assert(!mpirpc::detail::is_spare_vector_v<std::vector<bool>>);
static_assert(!mpirpc::detail::is_spare_vector_v<std::vector<std::string>>);
static_assert(!mpirpc::detail::is_spare_vector_v<std::string>);

TEST_CASE("a large vector offered is moved from, and taken back for a close size",
          "[spare_buffers]") {
  const clean_pools clean;
  doubles v = filled(min_doubles * 4, 1.0);
  const double* storage = v.data();
  REQUIRE(spare_vectors<doubles>::offer(v));
  CHECK(v.empty());
  CHECK(spare_held.load() == min_doubles * 4 * sizeof(double));

  doubles out;
  REQUIRE(spare_vectors<doubles>::take(out, min_doubles * 3)); // within [n, 2n]
  CHECK(out.data() == storage);
  CHECK(out.size() == min_doubles * 3);
  CHECK(out[0] == 1.0); // not written: the receive overwrites it
  CHECK(spare_held.load() == 0);

  doubles again;
  CHECK_FALSE(spare_vectors<doubles>::take(again, min_doubles * 3)); // nothing left
}

TEST_CASE("small vectors, empty ones and far smaller requests are left alone",
          "[spare_buffers]") {
  const clean_pools clean;
  doubles small = filled(min_doubles - 1, 0.0);
  CHECK_FALSE(spare_vectors<doubles>::offer(small));
  CHECK(small.size() == min_doubles - 1);

  doubles empty;
  empty.reserve(min_doubles * 2);
  CHECK_FALSE(spare_vectors<doubles>::offer(empty));

  doubles big = filled(min_doubles * 8, 0.0);
  REQUIRE(spare_vectors<doubles>::offer(big));
  doubles out;
  CHECK_FALSE(spare_vectors<doubles>::take(out, min_doubles * 2)); // 8 > 2 * 2: too wasteful
  CHECK_FALSE(spare_vectors<doubles>::take(out, min_doubles * 9)); // too small
  CHECK_FALSE(spare_vectors<doubles>::take(out, min_doubles - 1)); // not a large vector
  doubles not_empty{1.0};
  CHECK_FALSE(spare_vectors<doubles>::take(not_empty, min_doubles * 8));
  CHECK(spare_vectors<doubles>::take(out, min_doubles * 8));
}

TEST_CASE("a type never received here, or a vector far larger than its size, is not kept",
          "[spare_buffers]") {
  const clean_pools clean;
  std::vector<std::int64_t> never(min_doubles * 2, 1); // no decode has asked for this type
  CHECK_FALSE(spare_vectors<std::vector<std::int64_t>>::offer(never));
  CHECK(never.size() == min_doubles * 2);

  doubles sparse = filled(min_doubles, 0.0);
  sparse.reserve(min_doubles * 3); // capacity over twice the size: memory no match accounts for
  CHECK_FALSE(spare_vectors<doubles>::offer(sparse));
  CHECK(sparse.size() == min_doubles);
}

TEST_CASE("the budget bounds what is kept, across types", "[spare_buffers]") {
  const clean_pools clean;
  spare_budget.store(min_doubles * 3 * sizeof(double));
  doubles a = filled(min_doubles * 2, 0.0);
  REQUIRE(spare_vectors<doubles>::offer(a));
  want<std::vector<float>>();
  std::vector<float> b(min_doubles * 2 * 2, 1.0f); // the same bytes as a
  CHECK_FALSE(spare_vectors<std::vector<float>>::offer(b)); // over the budget
  CHECK(b.size() == min_doubles * 4);                       // untouched

  spare_budget.store(0);
  doubles c = filled(min_doubles, 0.0);
  CHECK_FALSE(spare_vectors<doubles>::offer(c));
  CHECK(c.size() == min_doubles);
}

TEST_CASE("two vectors are kept per type; a third replaces the older", "[spare_buffers]") {
  const clean_pools clean;
  doubles first = filled(min_doubles * 2, 0.0);
  doubles second = filled(min_doubles * 4, 0.0);
  doubles third = filled(min_doubles * 16, 0.0);
  const double* second_storage = second.data();
  const double* third_storage = third.data();
  REQUIRE(spare_vectors<doubles>::offer(first));
  REQUIRE(spare_vectors<doubles>::offer(second));
  REQUIRE(spare_vectors<doubles>::offer(third)); // `first` is freed
  CHECK(spare_held.load() == (min_doubles * 20) * sizeof(double));

  doubles out;
  CHECK_FALSE(spare_vectors<doubles>::take(out, min_doubles)); // `first`'s size: gone
  REQUIRE(spare_vectors<doubles>::take(out, min_doubles * 4));
  CHECK(out.data() == second_storage);
  doubles out2;
  REQUIRE(spare_vectors<doubles>::take(out2, min_doubles * 16));
  CHECK(out2.data() == third_storage);
}

TEST_CASE("release_spare_buffers frees what every pool keeps", "[spare_buffers]") {
  const clean_pools clean;
  doubles a = filled(min_doubles, 0.0);
  want<std::vector<std::int32_t>>();
  std::vector<std::int32_t> b(min_doubles * 2, 7);
  REQUIRE(spare_vectors<doubles>::offer(a));
  REQUIRE(spare_vectors<std::vector<std::int32_t>>::offer(b));
  CHECK(spare_held.load() > 0);
  release_spare_buffers();
  CHECK(spare_held.load() == 0);
  doubles out;
  CHECK_FALSE(spare_vectors<doubles>::take(out, min_doubles));
}

TEST_CASE("a decoded large vector is received into kept storage, with the data sent",
          "[spare_buffers]") {
  const clean_pools clean;
  doubles kept = filled(min_doubles * 2, -5.0);
  const double* storage = kept.data();
  REQUIRE(spare_vectors<doubles>::offer(kept));

  const doubles sent = filled(min_doubles * 2, 100.0);
  std::vector<char> bytes;
  mpirpc::detail::writer w(bytes); // no segment list: the buffer travels inline
  mpirpc::detail::save(w, sent);
  mpirpc::detail::reader r(bytes.data(), bytes.size());
  doubles received;
  const std::uint64_t takes = mpirpc::detail::spare_takes.load();
  mpirpc::detail::load(r, received);
  CHECK(mpirpc::detail::spare_takes.load() == takes + 1);
  CHECK(received.data() == storage);
  CHECK(received == sent);
  CHECK(spare_held.load() == 0);
}
