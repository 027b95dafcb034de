// GoogleTest entry point. One intra-op thread: results are bitwise reproducible and tests do not fight
// over the cores when CTest runs them in parallel.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  at::set_num_threads(1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
