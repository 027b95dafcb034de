// The step benchmark's bookkeeping (train/step_bench.h): the list of a step's matrix products behind the GEMM
// floor, checked by hand on a one-block network and against the FLOP formula; the floor's timer on CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "dbot/train/step_bench.h"
#include "tiny_config.h"

namespace dbot::train {
namespace {

// 8x8 images, patch 2 (L = 16), 3 channels, width 16 (2 heads), mask 0.75 (K = 4); decoder 8 wide (2 heads).
PretrainConfig tiny(int64_t depth, int64_t decoder_depth, int64_t batch) {
  PretrainConfig cfg;
  cfg.model = test::tiny_vit();
  cfg.model.depth = depth;
  cfg.mkd = test::tiny_mkd();
  cfg.mkd.decoder.depth = decoder_depth;
  cfg.optim.batch_size = batch;
  return cfg;
}

// Every field of a product, for readable comparisons.
std::string str(const Gemm& g) {
  return std::to_string(g.batch) + " x [" + std::to_string(g.m) + ", " + std::to_string(g.k) + "]" +
         (g.trans_a ? "^T" : "") + " [" + std::to_string(g.k) + ", " + std::to_string(g.n) + "]" +
         (g.trans_b ? "^T" : "");
}

TEST(StepGemms, OneBlockByHand) {
  const auto cfg = tiny(1, 1, 2);
  const auto g = step_gemms(cfg);
  // teacher: patch embedding + (qkv, 2 attention products, proj, fc1, fc2) = 7, forward only;
  // student: patch embedding forward + dW (images need no gradient) = 2, block 4 Linears x 3 + 2 x 3 = 18;
  // decoder: decoder_embed 3 + block 18 + decoder_predp 3 = 24.
  ASSERT_EQ(g.size(), 7u + 20u + 24u);
  // The teacher's qkv on all 1 + L = 17 tokens of 2 images: [34, 16] x [16, 48], the weight read transposed.
  EXPECT_EQ(str(g[1]), str({1, 34, 48, 16, false, true}));
  // Its attention scores: 2 images x 2 heads of [17, 8] x [8, 17] (k read transposed).
  EXPECT_EQ(str(g[2]), str({4, 17, 17, 8, false, true}));
  // After its (last) attention, proj runs on the loss's tokens only: CLS + the L - K = 12 masked patches, 26 rows.
  EXPECT_EQ(str(g[4]), str({1, 26, 16, 16, false, true}));
  // The student's patch-embedding weight gradient: dy^T [16, 32] x patches [32, 12] (2 images x 16 patches).
  EXPECT_EQ(str(g[8]), str({1, 16, 12, 32, true, false}));
  // The student's qkv sees CLS + K = 5 tokens per image: 10 rows.
  EXPECT_EQ(str(g[9]), str({1, 10, 48, 16, false, true}));
  // The last product: decoder_predp's weight gradient [16, 26] x [26, 8], the loss's 13 tokens of 2 images.
  EXPECT_EQ(str(g.back()), str({1, 16, 8, 26, true, false}));
}

// step_flops counts backward as twice the forward everywhere; the list drops the patch embedding's input
// gradient (2 L C p p D per image), which no step computes.
TEST(StepGemms, AgreeWithTheFlopFormula) {
  for (const auto& [depth, dec_depth, teacher_depth, target] :
       {std::tuple<int64_t, int64_t, int64_t, const char*>{2, 1, -1, "teacher"},
        {3, 2, 0, "teacher"},
        {2, 2, 1, "teacher"},
        {2, 1, -1, "pixels"}}) {
    auto cfg = tiny(depth, dec_depth, 3);
    cfg.mkd.teacher_depth = teacher_depth;
    cfg.mkd.target = target;
    const auto& m = cfg.model;
    const double patch_dx = 2.0 * m.num_patches() * m.in_chans * m.patch_size * m.patch_size * m.embed_dim;
    const double expected = static_cast<double>(cfg.optim.batch_size) * (step_flops(cfg).per_image() - patch_dx);
    EXPECT_NEAR(total_flops(step_gemms(cfg)), expected, 1e-9 * expected)
        << "depth " << depth << " decoder " << dec_depth << " teacher_depth " << teacher_depth << " " << target;
  }
}

TEST(StepGemms, FloorRunsEveryProduct) {
  core::Runtime rt;
  const std::vector<Gemm> gemms = {{1, 8, 4, 3, false, true}, {2, 5, 5, 4, true, false}, {1, 8, 4, 3, false, true}};
  const double ms = gemm_floor_ms(gemms, rt, at::kFloat, 2);
  EXPECT_TRUE(std::isfinite(ms));
  EXPECT_GT(ms, 0.0);
}

}  // namespace
}  // namespace dbot::train
