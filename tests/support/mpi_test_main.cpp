// SPDX-License-Identifier: MIT
// Catch2 main of the multi-rank tests: every rank runs the same test cases in the same order
// (SPMD); rank 0 reports in full, the others only their failures; all ranks exit with the
// worst result of any rank.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include <mpi.h>
#include <unistd.h>

#include "mpi_test_support.hpp"

namespace mpirpc_test {
void wait_for(MPI_Request& request) {
  auto pause = std::chrono::microseconds(10);
  for (;;) {
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

void barrier(MPI_Comm comm) {
  MPI_Request request;
  MPI_Ibarrier(comm, &request);
  wait_for(request);
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}
std::string capture_stderr(const std::function<void()>& body) {
  char path[] = "/tmp/mpirpc_test_stderr_XXXXXX";
  const int file = mkstemp(path);
  REQUIRE(file >= 0);
  std::fflush(stderr);
  const int saved = dup(2);
  dup2(file, 2);
  try {
    body();
  } catch (...) {
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(file);
    unlink(path);
    throw;
  }
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(file);
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  unlink(path);
  std::fputs(text.c_str(), stderr);
  return text;
}

} // namespace mpirpc_test

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  Catch::Session session;
  int result = session.applyCommandLine(argc, argv);
  if (result == 0) {
    if (mpirpc_test::world_rank() != 0) session.configData().reporterName = "compact";
    result = session.run();
  }
  int worst = 0;
  MPI_Request request;
  MPI_Iallreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &request);
  mpirpc_test::wait_for(request);
  MPI_Finalize();
  return worst;
}
