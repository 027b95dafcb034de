// The MAE linear-probe protocol: LARS against timm's Lars set up as MAE's rule (weight decay 0) and by hand
// (weight decay, zero norms), the BatchNorm + Linear head against torch (tests/reference/make_linprobe_golden.py),
// and the whole protocol on a learnable fake Fashion-MNIST.
#include <ATen/Parallel.h>

#include "dbot/core/rng.h"
#include "dbot/eval/evaluate.h"
#include "dbot/eval/linprobe_mae.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/lars.h"
#include "test_util.h"

using namespace dbot;
using test::all_close;

namespace {
const std::string kLinprobeJson = DBOT_LINPROBE_JSON;
at::Tensor probe_golden(const std::string& key, at::IntArrayRef shape) {
  return test::json_tensor(kLinprobeJson, key, shape);
}
// The reference's closed-form inputs: sin(a j + b), j = 0..n-1.
at::Tensor wave(int64_t n, double a, double b) {
  return at::sin(a * at::arange(n, at::TensorOptions().dtype(at::kDouble)) + b).to(at::kFloat);
}
void set_grad(at::Tensor& p, const at::Tensor& g) { p.mutable_grad() = g.clone(); }
}  // namespace

TEST(Lars, MatchesTimmLarsInMaesSetting) {
  auto weight = wave(12, 0.9, 0.3).reshape({3, 4}).clone().requires_grad_(true);
  auto bias = wave(3, 1.3, 0.2).requires_grad_(true);
  train::Lars opt({{"head.weight", weight}, {"head.bias", bias}}, {});
  const double lrs[] = {0.5, 2.0, 1.0};
  for (int step = 0; step < 3; ++step) {
    set_grad(weight, wave(12, 0.37, step + 0.1).reshape({3, 4}) * 0.01);
    set_grad(bias, wave(3, 0.71, step + 0.4) * 0.1);
    opt.step(lrs[step]);
    const auto s = std::to_string(step);
    EXPECT_TRUE(all_close(weight, probe_golden("lars_weight_" + s, {3, 4}), 1e-5, 1e-6)) << "step " << step;
    EXPECT_TRUE(all_close(bias, probe_golden("lars_bias_" + s, {3}), 1e-5, 1e-6)) << "step " << step;
  }
}

TEST(Lars, WeightDecayAndZeroNormsByHand) {
  auto w = at::tensor({3.0f, 4.0f}).reshape({1, 2}).clone().requires_grad_(true);  // |w| = 5
  auto zero = at::zeros({1, 2}).requires_grad_(true);
  auto b = at::tensor({1.0f}).requires_grad_(true);
  train::Lars opt({{"w", w}, {"zero", zero}, {"b", b}}, {/*weight_decay=*/0.1, 0.9, 0.001});
  set_grad(w, at::zeros({1, 2}));  // u = 0.1 w = (0.3, 0.4), |u| = 0.5, q = 0.001 * 5 / 0.5 = 0.01
  set_grad(zero, at::tensor({1.0f, 0.0f}).reshape({1, 2}));  // |p| = 0: q = 1
  set_grad(b, at::tensor({2.0f}));                           // 1-D: no decay, no scaling
  opt.step(1.0);
  EXPECT_TRUE(all_close(w, at::tensor({2.997f, 3.996f}).reshape({1, 2}), 0, 1e-6));
  EXPECT_TRUE(all_close(zero, at::tensor({-1.0f, 0.0f}).reshape({1, 2}), 0, 1e-7));
  EXPECT_TRUE(all_close(b, at::tensor({-1.0f}), 0, 1e-7));
  set_grad(b, at::tensor({0.0f}));  // momentum alone: mu = 0.9 * 2, b = -1 - 0.5 * 1.8
  opt.step(0.5);
  EXPECT_TRUE(all_close(b, at::tensor({-1.9f}), 0, 1e-6));
  EXPECT_TRUE(all_close(opt.momentum_buffer(2), at::tensor({1.8f}), 0, 1e-6));
}

TEST(MaeLinprobe, HeadMatchesTorchBatchNormLinearAndLars) {
  auto gen = core::derive_generator(0, core::RngPurpose::kEval, 0);
  eval::ProbeHead head(6, 4, 0.0, gen);
  const auto w0 = wave(24, 0.5, 0.7).reshape({4, 6});
  {
    at::NoGradGuard no_grad;
    head.weight.copy_(w0);
  }
  const double lrs[] = {0.1, 0.4, 0.3, 0.2};
  const auto losses = test::json_file(kLinprobeJson).at("probe_losses").get<std::vector<double>>();
  for (int step = 0; step < 4; ++step) {
    const auto features = wave(48, 0.23, step).reshape({8, 6}) * 3.0 + wave(6, 0.9, step);
    const auto labels = at::tensor({0, 0, 0, 1, 1, 2, 3, 0}, at::kLong).roll(step);
    EXPECT_NEAR(head.train_step(features, labels, lrs[step]), losses[step], 1e-5) << "step " << step;
  }
  // The weight moves ~1e-3 under LARS's 0.001 trust ratio: compare the move itself.
  EXPECT_TRUE(all_close(head.weight - w0, probe_golden("probe_weight", {4, 6}) - w0, 1e-3, 1e-6));
  EXPECT_TRUE(all_close(head.bias, probe_golden("probe_bias", {4}), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(head.running_mean, probe_golden("probe_running_mean", {6}), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(head.running_var, probe_golden("probe_running_var", {6}), 1e-5, 1e-6));
  at::NoGradGuard no_grad;
  const auto test_f = wave(30, 0.41, 2.5).reshape({5, 6}) * 2.0;
  EXPECT_TRUE(all_close(head.forward(test_f, false), probe_golden("probe_test_logits", {5, 4}), 1e-4, 1e-5));
}

TEST(MaeLinprobe, LearnsALearnableSet) {
  at::set_num_threads(1);
  test::TempDir dir;
  test::write_fake_fmnist(dir.str(), 320, 100, 28);
  // Column bands carry the class: no flip, and crops that keep every column (scale 1: only the aspect varies).
  auto r = recipe::load_config(
      "", {"data.path=" + dir.str(), "data.hflip=false", "data.crop_pct=1.0", "data.workers=2",
           "model.name=vit_tiny_patch7_28", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
           "eval.linprobe_protocol=mae", "eval.mae_epochs=8", "eval.mae_warmup_epochs=1", "eval.mae_batch_size=32",
           "eval.mae_crop_scale=[1.0, 1.0]", "eval.batch_size=64",
           "eval.mae_lr=20"});                // LARS moves a weight by about lr x 0.001 of its norm per step
  model::VisionTransformer encoder(r.model);  // a stage-0 random teacher: dBOT's initialization
  auto gen = core::derive_generator(0, core::RngPurpose::kInit, 0);
  encoder->initialize_weights(gen, false);
  const auto d = eval::open_eval_data(r.data);
  ASSERT_TRUE(d.has_value());
  const auto s = eval::evaluate_encoder(encoder, *d, r.data, r.eval, core::Runtime{}, false, true);
  EXPECT_LT(s.knn, 0);         // not asked for
  EXPECT_GT(s.linprobe, 0.3);  // chance 0.1; torch, same data, protocol and init, 4 seeds: 0.6-0.8
  EXPECT_LE(s.linprobe, 1.0);
}

TEST(MaeLinprobe, RecipeRefusesBadKeys) {
  EXPECT_NE(test::error_of([] {
              recipe::load_config("", {"eval.linprobe_protocol=lars"});
            }).find("eval.linprobe_protocol must be features or mae"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { recipe::load_config("", {"eval.mae_batch_size=1"}); }).find("eval.mae_batch_size"),
            std::string::npos);
  EXPECT_NE(
      test::error_of([] { recipe::load_config("", {"eval.mae_crop_scale=[0.5, 0.2]"}); }).find("eval.mae_crop_scale"),
      std::string::npos);
  EXPECT_NE(
      test::error_of([] { recipe::load_config("", {"eval.mae_warmup_epochs=90"}); }).find("eval.mae_warmup_epochs"),
      std::string::npos);
}
