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

// parallel_for over `rows` rows of `row_elements` elements each, in tasks of whole rows holding at least
// `min_task_elements` elements (the row-wise passes: fewer flops per element, larger tasks).
void parallel_for_rows(int64_t rows, int64_t row_elements, int64_t min_task_elements,
                       const std::function<void(int64_t, int64_t)>& f);

// The rows in blocks of `block_rows` (the last one partial), each block whole in one task:
// f(block, first row, rows in it). For passes that sum columns per block into their own partial sums, so that the
// blocks and the order of their sums are the same for any thread count.
void parallel_for_row_blocks(int64_t rows, int64_t block_rows, int64_t row_elements, int64_t min_task_elements,
                             const std::function<void(int64_t, int64_t, int64_t)>& f);

}  // namespace dbot::core
