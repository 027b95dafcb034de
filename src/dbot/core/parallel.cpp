// parallel: chunks of [0, n) on LibTorch's intra-op pool, through TensorIterator. Contract: parallel.h.
#include "dbot/core/parallel.h"

#include <ATen/ATen.h>
#include <ATen/TensorIterator.h>

#include <algorithm>

namespace dbot::core {

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  if (n <= 0) return;
  // One byte per index (never read or written): the offset of a chunk's data pointer from the base is its first
  // index. for_each splits [0, n) as at::parallel_for does, inside LibTorch.
  const auto index = at::empty({n}, at::kByte);
  auto iter = at::TensorIteratorConfig().add_output(index).resize_outputs(false).check_all_same_dtype(false).build();
  const char* base = static_cast<const char*>(index.data_ptr());
  iter.for_each(
      [&](char** data, const int64_t* strides, int64_t size0, int64_t size1) {
        for (int64_t j = 0; j < size1; ++j) {  // 1-D: size1 is 1
          const int64_t begin = data[0] + j * strides[1] - base;
          f(begin, begin + size0);
        }
      },
      grain);
}

void parallel_for_rows(int64_t rows, int64_t row_elements, int64_t min_task_elements,
                       const std::function<void(int64_t, int64_t)>& f) {
  parallel_for(rows, std::max<int64_t>(1, min_task_elements / std::max<int64_t>(1, row_elements)), f);
}

void parallel_for_row_blocks(int64_t rows, int64_t block_rows, int64_t row_elements, int64_t min_task_elements,
                             const std::function<void(int64_t, int64_t, int64_t)>& f) {
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  parallel_for_rows(blocks, block_rows * row_elements, min_task_elements, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) f(b, b * block_rows, std::min(rows, (b + 1) * block_rows) - b * block_rows);
  });
}

}  // namespace dbot::core
