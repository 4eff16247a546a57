// SPDX-License-Identifier: MIT
// mpirpc::barrier(): a collective that waits until every call anywhere has run to completion.
//
// The quiescence detection of YGM's comm::barrier() and of Charm++: a rank that calls barrier()
// returns once every call, one-way call (rpc_ff) and remote() issued on any rank before that
// rank entered the barrier, and everything they issued in turn (nested calls, one-way calls
// that handlers forward, replies and their continuations, reference releases), has run to
// completion. Afterwards every future of those calls is done and every handler has returned,
// so counts that handlers keep can be read and compared on every rank. Usable as often as
// needed between init_rpc() and shutdown().
//
// How: repeated non-blocking all-reductions of each rank's counts of messages sent and
// handled and of its busy work (calls awaiting replies, handlers running or queued), until two
// waves in a row see everything handled, nothing busy and the same totals. An idle runtime
// passes a barrier in two all-reductions; a busy one waves every 50 us to 1 ms and serves
// meanwhile (the background threads keep serving; the calling thread only waits).
#pragma once

#include <chrono>

namespace mpirpc {

/// Collective over the session's workers: every rank calls it, from one application thread
/// (like an MPI collective, the barriers and shutdown() of a rank are matched across ranks in
/// the order that rank calls them). Blocks until quiet as above. Calls that other threads of
/// a rank keep issuing during the barrier delay it (it waits for them too); a call whose
/// reply never comes (an async-execution function whose future is never completed) holds it
/// until that call's timeout.
///
/// Throws
/// - shutdown_error: not running (before init_rpc, after shutdown), or another rank called
///   shutdown() while this one called barrier(): then the session ends on every rank, the
///   ranks in barrier() throw this and those in shutdown() log the mismatch and stop without
///   waiting for quiet;
/// - future_error: called from a handler or a continuation on the progress path (it would
///   wait for itself).
void barrier();

/// As barrier(), but gives up once `timeout` has passed on any rank (zero or negative: no
/// limit): then every rank alike throws timeout_error naming the workers that were still busy
/// and with what (calls awaiting replies, handlers running, requests queued, messages in
/// flight). The runtime keeps running; the work goes on.
void barrier(std::chrono::duration<double> timeout);

} // namespace mpirpc
