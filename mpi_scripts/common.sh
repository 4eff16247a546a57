# SPDX-License-Identifier: MIT
# Shared settings of the mpi_scripts: sourced, not run.
MPIRPC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MPIRPC_BUILD_DIR="${MPIRPC_BUILD_DIR:-$MPIRPC_ROOT/build}"
# Open MPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# More ranks than cores is the normal case on small machines.
MPIRPC_MPIEXEC=(mpiexec --oversubscribe)

mpirpc_build() {
  "$MPIRPC_ROOT/mpi_scripts/install_deps"
  cmake -S "$MPIRPC_ROOT" -B "$MPIRPC_BUILD_DIR" -DCMAKE_BUILD_TYPE="${MPIRPC_BUILD_TYPE:-RelWithDebInfo}" "$@" >&2
  cmake --build "$MPIRPC_BUILD_DIR" -j "$(nproc)" >&2
}
