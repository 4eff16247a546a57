// SPDX-License-Identifier: MIT
// mpirpc/functions.hpp: static and run-time registration, registered names, misuse.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <mpirpc/mpirpc.hpp>

namespace ns {

int twice(int x) {
  return 2 * x;
}

struct calc {
  static int triple(int x) { return 3 * x; }
  static std::string greet(const std::string& who) { return "hello " + who; }
};

double overloaded(double x) {
  return x + 0.5;
}
int overloaded(int x) {
  return x + 1;
}

int quiet(int x) noexcept {
  return -x;
}

void nothing() {}

mpirpc::future<int> later(int x) {
  mpirpc::future<int> f;
  f.set_result(x * 10);
  return f;
}

int late(int x) {
  return x + 1000;
}
int late_noexcept(int x) noexcept {
  return x + 2000;
}
int never_registered(int x) {
  return x;
}

int clash_a(int x) {
  return x;
}
int clash_b(int x) {
  return -x;
}

} // namespace ns

MPIRPC_REGISTER(ns::twice);
MPIRPC_REGISTER(ns::calc::triple);
MPIRPC_REGISTER(&ns::calc::greet);
MPIRPC_REGISTER_AS("overloaded_double", static_cast<double (*)(double)>(ns::overloaded));
MPIRPC_REGISTER_AS("overloaded_int", static_cast<int (*)(int)>(&ns::overloaded));
MPIRPC_REGISTER(ns::quiet);
MPIRPC_REGISTER(ns::nothing);
MPIRPC_REGISTER(ns::later);

TEST_CASE("MPIRPC_REGISTER names a free function as spelled", "[functions]") {
  CHECK(mpirpc::registered_name(ns::twice) == "ns::twice");
  CHECK(mpirpc::registered_name(&ns::twice) == "ns::twice");
  CHECK(mpirpc::registered_name(ns::nothing) == "ns::nothing");
  CHECK(mpirpc::registered_name(ns::later) == "ns::later");
}

TEST_CASE("MPIRPC_REGISTER names a static member function with its class", "[functions]") {
  CHECK(mpirpc::registered_name(ns::calc::triple) == "ns::calc::triple");
}

TEST_CASE("a leading & in MPIRPC_REGISTER is not part of the name", "[functions]") {
  CHECK(mpirpc::registered_name(ns::calc::greet) == "ns::calc::greet");
}

TEST_CASE("MPIRPC_REGISTER_AS gives each overload its own name", "[functions]") {
  CHECK(mpirpc::registered_name(static_cast<double (*)(double)>(ns::overloaded)) ==
        "overloaded_double");
  CHECK(mpirpc::registered_name(static_cast<int (*)(int)>(ns::overloaded)) == "overloaded_int");
}

TEST_CASE("a noexcept function registers like any other", "[functions]") {
  CHECK(mpirpc::registered_name(ns::quiet) == "ns::quiet");
}

TEST_CASE("an unregistered function has an empty name", "[functions]") {
  CHECK(mpirpc::registered_name(ns::never_registered).empty());
  CHECK(mpirpc::registered_name(ns::clash_b).empty());
}

TEST_CASE("register_function registers at run time, and calls reach it", "[functions]") {
  REQUIRE_FALSE(mpirpc::is_running());
  CHECK(mpirpc::registered_name(ns::late).empty());
  mpirpc::register_function("late_name", ns::late);
  CHECK(mpirpc::registered_name(ns::late) == "late_name");
  mpirpc::register_function("late_noexcept", &ns::late_noexcept);
  CHECK(mpirpc::registered_name(ns::late_noexcept) == "late_noexcept");

  // The same function again under the same name is harmless: start-up still succeeds.
  mpirpc::register_function("late_name", ns::late);
  mpirpc::register_function("ns::twice", ns::twice);
  CHECK(mpirpc::registered_name(ns::late) == "late_name");

  mpirpc::runtime rt;
  REQUIRE(mpirpc::is_running());
  CHECK(mpirpc::rpc_sync(0, ns::late, 1) == 1001);
  CHECK(mpirpc::rpc_sync(0, ns::late_noexcept, 1) == 2001);
  CHECK(mpirpc::rpc_sync(0, ns::twice, 21) == 42);
  CHECK(mpirpc::rpc_sync(0, ns::calc::triple, 5) == 15);
  CHECK(mpirpc::rpc_sync(0, ns::calc::greet, std::string("you")) == "hello you");
  CHECK(mpirpc::rpc_sync(0, static_cast<double (*)(double)>(ns::overloaded), 1.0) == 1.5);
  CHECK(mpirpc::rpc_sync(0, static_cast<int (*)(int)>(ns::overloaded), 1) == 2);
  CHECK(mpirpc::rpc_sync(0, ns::quiet, 4) == -4);
  CHECK(mpirpc::rpc_sync(0, ns::later, 4) == 40);
  CHECK_NOTHROW(mpirpc::rpc_sync(0, ns::nothing));

  // Calling an unregistered function fails at the call site.
  CHECK_THROWS_AS(mpirpc::rpc_sync(0, ns::never_registered, 1), mpirpc::unknown_function_error);
  CHECK_THROWS_WITH(mpirpc::rpc_async(0, ns::never_registered, 1),
                    Catch::Contains("not registered") && Catch::Contains("MPIRPC_REGISTER"));

  // Registering while the runtime runs is refused.
  CHECK_THROWS_AS(mpirpc::register_function("too_late", ns::never_registered), mpirpc::init_error);
  CHECK_THROWS_WITH(mpirpc::register_function("too_late", ns::never_registered),
                    Catch::Contains("too_late") && Catch::Contains("init_rpc"));
  CHECK(mpirpc::registered_name(ns::never_registered).empty());
  rt.shutdown();

  // After shutdown registration is allowed again.
  mpirpc::register_function("after_shutdown", ns::never_registered);
  CHECK(mpirpc::registered_name(ns::never_registered) == "after_shutdown");
}

// The case below leaves conflicting registrations behind, which make every later init_rpc()
// of this process fail: keep it last (Catch runs cases in declaration order).

TEST_CASE("two different functions under one name make init_rpc fail, naming it", "[functions]") {
  REQUIRE_FALSE(mpirpc::is_running());
  mpirpc::register_function("clash", ns::clash_a);
  mpirpc::register_function("clash", ns::clash_b);
  CHECK(mpirpc::registered_name(ns::clash_a) == "clash");
  CHECK_THROWS_AS(mpirpc::init_rpc(), mpirpc::init_error);
  CHECK_THROWS_WITH(mpirpc::init_rpc(), Catch::Contains("conflicting function registrations") &&
                                            Catch::Contains("'clash'"));
  CHECK_FALSE(mpirpc::is_running());
  mpirpc::shutdown(); // in case init_rpc wrongly succeeded
}
