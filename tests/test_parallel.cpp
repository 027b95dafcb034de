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
