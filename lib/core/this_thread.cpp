// SPDX-License-Identifier: MIT
// The entry points of detail/library.hpp that read or write only the calling thread's state.
#include "core/this_thread.hpp"

#include <mpirpc/detail/library.hpp>

namespace mpirpc::detail {

bool in_progress_callback() noexcept {
  return this_thread().in_progress_callback;
}

progress_callback_scope::progress_callback_scope() noexcept
    : _previous(this_thread().in_progress_callback) {
  this_thread().in_progress_callback = true;
}

progress_callback_scope::~progress_callback_scope() {
  this_thread().in_progress_callback = _previous;
}

} // namespace mpirpc::detail
