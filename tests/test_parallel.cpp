// core::parallel_for: every index once, in chunks of at least the grain, on more than one of LibTorch's threads
// where there are several (at::parallel_for from code built without OpenMP would run all on the caller), and an
// exception from a chunk reaches the caller.
#include <ATen/Parallel.h>

#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "dbot/core/parallel.h"
#include "test_util.h"

using namespace dbot;

TEST(Parallel, CoversEveryIndexOnceOnLibTorchsThreads) {
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}}) {
    std::vector<int> hits(static_cast<size_t>(n), 0);
    std::mutex mutex;
    std::set<std::thread::id> threads;
    core::parallel_for(n, 10, [&](int64_t begin, int64_t end) {
      ASSERT_LE(0, begin);
      ASSERT_LE(end, n);
      const std::lock_guard<std::mutex> lock(mutex);
      threads.insert(std::this_thread::get_id());
      for (int64_t i = begin; i < end; ++i) ++hits[static_cast<size_t>(i)];
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)], 1) << "index " << i << " of " << n;
    if (n == 1000) EXPECT_EQ(threads.size(), 2u);         // 1000 indices, grain 10, 2 threads: both run a chunk
    if (n > 0 && n <= 10) EXPECT_EQ(threads.size(), 1u);  // at most one grain: on the caller
  }
  EXPECT_THROW(core::parallel_for(100, 1,
                                  [](int64_t begin, int64_t) {
                                    if (begin > 0) throw std::runtime_error("chunk failed");
                                  }),
               std::runtime_error);
  at::set_num_threads(threads_before);
}

// parallel_for_rows: tasks of whole rows holding at least the given elements (1000 rows of 10, at least 100 per task:
// 10 rows or more, so no more than 100 tasks). parallel_for_row_blocks: 130 rows in blocks of 64 are the blocks
// (0, 0, 64), (1, 64, 64), (2, 128, 2), each once.
TEST(Parallel, RowsAndRowBlocks) {
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  std::mutex mutex;
  std::vector<int> hits(1000, 0);
  core::parallel_for_rows(1000, 10, 100, [&](int64_t begin, int64_t end) {
    const std::lock_guard<std::mutex> lock(mutex);
    EXPECT_TRUE(end - begin >= 10 || end == 1000) << begin << "-" << end;
    for (int64_t i = begin; i < end; ++i) ++hits[static_cast<size_t>(i)];
  });
  for (size_t i = 0; i < hits.size(); ++i) EXPECT_EQ(hits[i], 1) << "row " << i;
  std::set<std::vector<int64_t>> blocks;
  core::parallel_for_row_blocks(130, 64, 8, 1, [&](int64_t block, int64_t first, int64_t count) {
    const std::lock_guard<std::mutex> lock(mutex);
    EXPECT_TRUE(blocks.insert({block, first, count}).second) << "block " << block << " twice";
  });
  EXPECT_EQ(blocks, (std::set<std::vector<int64_t>>{{0, 0, 64}, {1, 64, 64}, {2, 128, 2}}));
  at::set_num_threads(threads_before);
}
