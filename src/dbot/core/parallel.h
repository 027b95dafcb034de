// parallel: ATen's intra-op parallel_for for code built without OpenMP. at::parallel_for is a header template
// whose OpenMP form (both LibTorch builds: AT_PARALLEL_OPENMP) compiles to a `#pragma omp parallel` in the
// caller's translation unit; dbot is not built with -fopenmp (clang's OpenMP runtime is libomp, LibTorch's is
// libgomp: two thread pools), so there it silently runs the whole range on the calling thread. This runs f on
// LibTorch's own pool instead, through TensorIterator::for_each (compiled inside LibTorch), the threads and the
// count that at::set_num_threads set.
#pragma once

#include <cstdint>
#include <functional>

namespace dbot::core {

// f(begin, end) over disjoint chunks covering [0, n), on up to at::get_num_threads() threads, chunks of at least
// `grain` (below that, or on one thread, f(0, n) on the caller). Exceptions from f reach the caller.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace dbot::core
