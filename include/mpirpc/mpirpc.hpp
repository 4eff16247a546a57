// SPDX-License-Identifier: MIT
// mpirpc: torch.distributed.rpc's programming model for MPI programs. The umbrella header.
#pragma once

#include <mpirpc/barrier.hpp>
#include <mpirpc/errors.hpp>
#include <mpirpc/functions.hpp>
#include <mpirpc/future.hpp>
#include <mpirpc/rpc.hpp>
#include <mpirpc/rref.hpp>
#include <mpirpc/runtime.hpp>
#include <mpirpc/serialization.hpp>
#include <mpirpc/worker.hpp>
