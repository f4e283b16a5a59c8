// A process-wide pool of worker threads for the numeric kernels, so a query
// split over head blocks does not pay for creating threads on every call.
#pragma once
#include <cstddef>
#include <functional>

namespace ldaproj::detail {

// Cores this process may use (at least 1).
int available_cores();

// Caps the threads OpenBLAS uses inside one call (a process-wide setting;
// only changed when it differs, since changing it is not free).
void use_blas_threads(int threads);

// Runs task(0) ... task(count - 1) on up to `max_threads` threads (the caller
// included) and returns when all have finished. Safe to call from several
// threads at once; the first exception thrown by a task is rethrown here.
void parallel_for(std::size_t count, int max_threads, const std::function<void(std::size_t)>& task);

}  // namespace ldaproj::detail
