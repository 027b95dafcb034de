// AdamW with dBOT's weight-decay groups and the per-stage warmup + cosine schedule, against
// torch.optim.AdamW and MAE's adjust_learning_rate (tests/reference/make_golden.py).
#include "dbot/mkd/distiller.h"
#include "dbot/train/optim.h"
#include "dbot/train/schedule.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;
using dbot::test::golden_tensor;

TEST(AdamW, WeightDecayGroups) {
  EXPECT_TRUE(train::no_weight_decay("blocks.0.norm1.weight", at::zeros({4})));
  EXPECT_TRUE(train::no_weight_decay("blocks.0.attn.qkv.bias", at::zeros({12})));
  EXPECT_TRUE(train::no_weight_decay("patch_embed.proj.bias", at::zeros({4})));
  EXPECT_FALSE(train::no_weight_decay("blocks.0.attn.qkv.weight", at::zeros({12, 4})));
  EXPECT_FALSE(train::no_weight_decay("cls_token", at::zeros({1, 1, 4})));   // decayed, as official
  EXPECT_FALSE(train::no_weight_decay("mask_token", at::zeros({1, 1, 4})));  // decayed, as official
}

TEST(AdamW, HandCheckedFirstStep) {
  // Step 1: m = 0.1 g, v = 0.05 g^2, bias-corrected m/sqrt(v) = sign(g); p <- p (1 - lr wd) - lr sign(g).
  for (const bool fused : {false, true}) {
    auto w = at::full({2, 2}, 1.0).requires_grad_(true);
    auto b = at::full({2}, 1.0).requires_grad_(true);
    train::AdamW opt({{"w", w}, {"b.bias", b}}, train::AdamWConfig{0.5, 0.9, 0.95, 0.0, fused});
    (w.sum() * 3 - b.sum()).backward();
    opt.step(0.1);
    EXPECT_NEAR(w[0][0].item<double>(), 1.0 * (1 - 0.1 * 0.5) - 0.1, 1e-6) << "fused " << fused;
    EXPECT_NEAR(b[0].item<double>(), 1.0 + 0.1, 1e-6) << "fused " << fused;  // no decay on biases
    EXPECT_EQ(opt.step_count(), 1);
  }
}

TEST(AdamW, ThreeStepsMatchTorchOptimAdamW) {
  mkd::Distiller d(test::tiny_vit(), test::tiny_mkd(), 0);
  test::fill_golden(d);
  train::AdamW opt(d.named_student_parameters(), train::AdamWConfig{0.05, 0.9, 0.95, 1e-8});
  const auto imgs = test::given_images();
  const auto noise = test::given_noise();
  const auto losses = golden_tensor("adamw.loss", at::kDouble);
  auto param = [&](const std::string& name) {
    for (const auto& [n, p] : d.named_student_parameters())
      if (n == name) return p;
    throw std::runtime_error(name);
  };
  for (int step = 1; step <= 3; ++step) {
    opt.zero_grad();
    auto enc = d.forward_encoder(imgs, noise, nullptr);
    auto loss =
        mkd::forward_loss(d.forward_teacher(imgs), d.forward_decoder(enc.latent, enc.ids_restore, nullptr), enc.mask);
    EXPECT_NEAR(loss.item<double>(), losses[step - 1].item<double>(), 2e-6) << "step " << step;
    loss.backward();
    opt.step(1e-3);
    if (step == 1 || step == 3) {
      for (const std::string name : {"blocks.0.attn.qkv.weight", "norm.bias", "cls_token", "decoder_predp.bias"}) {
        // One AdamW step moves each weight by ~lr; its direction depends on sign(g) where g is tiny, so the
        // tolerance is a small fraction of lr (1e-3).
        EXPECT_TRUE(all_close(param(name), golden_tensor("adamw.step" + std::to_string(step) + "." + name), 1e-5, 2e-6))
            << name << " after step " << step;
      }
    }
  }
}

TEST(Schedule, MatchesMaeAdjustLearningRateWithStageRestart) {
  train::ScheduleConfig c;
  c.peak_lr = 1e-3;
  c.min_lr = 0.0;
  c.warmup_epochs = 1;
  c.stage_epochs = {0, 3, 6};
  c.iters_per_epoch = 4;
  auto lr = train::lr_schedule(c);
  EXPECT_TRUE(all_close(at::tensor(lr, at::kDouble), golden_tensor("schedule.lr", at::kDouble), 1e-12, 1e-15));
  c.accum_iter = 2;
  auto lr2 = train::lr_schedule(c);
  EXPECT_TRUE(all_close(at::tensor(lr2, at::kDouble), golden_tensor("schedule.lr_accum2", at::kDouble), 1e-12, 1e-15));
  // Around the stage boundary (iteration 12 = epoch 3): cosine near 0, then back to 0 and warming up.
  EXPECT_LT(lr[11], 0.05e-3);
  EXPECT_EQ(lr[12], 0.0);
  EXPECT_DOUBLE_EQ(lr[13], 0.25e-3);
  EXPECT_DOUBLE_EQ(lr[16], 1e-3);  // end of warmup: the peak
}

TEST(Schedule, StagesAndValidation) {
  EXPECT_EQ(train::stage_of_epoch({0, 800, 1600}, 0), 1);
  EXPECT_EQ(train::stage_of_epoch({0, 800, 1600}, 799), 1);
  EXPECT_EQ(train::stage_of_epoch({0, 800, 1600}, 800), 2);
  EXPECT_THROW(train::stage_of_epoch({0, 800, 1600}, 1600), std::out_of_range);
  EXPECT_THROW(train::validate_stage_epochs({0}), std::invalid_argument);
  EXPECT_THROW(train::validate_stage_epochs({1, 2}), std::invalid_argument);
  EXPECT_THROW(train::validate_stage_epochs({0, 5, 5}), std::invalid_argument);
}

TEST(AdamW, StateRoundTripAndShapeErrors) {
  auto w = at::ones({2, 2}).requires_grad_(true);
  train::AdamW a({{"w", w}}, {});
  (w * w).sum().backward();
  a.step(0.1);
  const auto s = a.state();
  EXPECT_EQ(s.step, 1);
  auto w2 = at::ones({2, 2}).requires_grad_(true);
  train::AdamW b({{"w", w2}}, {});
  b.load_state(s, "ckpt.pt");
  EXPECT_EQ(b.step_count(), 1);
  EXPECT_TRUE(b.state().exp_avg.at("w").equal(s.exp_avg.at("w")));
  auto v = at::ones({3}).requires_grad_(true);
  train::AdamW c({{"w", v}}, {});
  const auto e = test::error_of([&] { c.load_state(s, "ckpt.pt"); });
  EXPECT_NE(e.find("ckpt.pt: optimizer state of 'w' has shape"), std::string::npos) << e;
  train::AdamW other({{"x", v}}, {});
  EXPECT_NE(test::error_of([&] { other.load_state(s, "ckpt.pt"); }).find("lacks 'x'"), std::string::npos);
}

TEST(AdamW, FusedKernelMatchesForeach) {
  // The fused form (the Trainer's: dbot's adamw_cpu on the CPU) against the _foreach form.
  mkd::Distiller d1(test::tiny_vit(), test::tiny_mkd(), 0), d2(test::tiny_vit(), test::tiny_mkd(), 0);
  train::AdamWConfig cfg;
  train::AdamW foreach_opt(d1.named_student_parameters(), cfg);
  cfg.fused = true;
  train::AdamW fused_opt(d2.named_student_parameters(), cfg);
  const auto imgs = test::given_images();
  const auto a = d1.named_student_parameters(), b = d2.named_student_parameters();
  for (int step = 0; step < 3; ++step) {
    // The same gradients for both (computed on d1): near-zero gradients would otherwise flip sign between
    // the two after one step's rounding differences, and Adam turns a sign into a step of size lr.
    auto gen = core::derive_generator(0, core::RngPurpose::kStep, static_cast<uint64_t>(step));
    d1.forward(imgs, gen).backward();
    for (size_t i = 0; i < a.size(); ++i) b[i].second.mutable_grad() = a[i].second.grad().clone();
    if (step == 1) {  // a parameter without a gradient for one step: skipped, and its next step's bias
      a[0].second.mutable_grad() = at::Tensor();  // correction still counts every step (the fused kernel
      b[0].second.mutable_grad() = at::Tensor();  // reads the optimizer's one count)
    }
    foreach_opt.step(1e-3);
    fused_opt.step(1e-3);
    foreach_opt.zero_grad();
    {
      at::NoGradGuard no_grad;  // continue both from the same weights
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_TRUE(all_close(b[i].second, a[i].second, 1e-6, 1e-7)) << a[i].first << " step " << step;
        b[i].second.copy_(a[i].second);
      }
    }
  }
  EXPECT_EQ(fused_opt.state().step, 3);
}

// The optimizer training builds: the fused form wherever it applies (fp32 CPU parameters: dbot's kernel on every
// LibTorch), the recipe's hyper-parameters otherwise unchanged, and the _foreach form where the fused one cannot take
// the parameters (a non-contiguous one).
TEST(AdamW, TrainingBuildsTheFusedFormWhereItApplies) {
  mkd::Distiller d(test::tiny_vit(), test::tiny_mkd(), 0);
  train::AdamWConfig cfg;
  cfg.weight_decay = 0.1;
  const auto params = d.named_student_parameters();
  const auto opt = train::make_training_adamw(params, cfg);
  EXPECT_EQ(opt->config().fused, train::fused_adamw_available(params));
  EXPECT_TRUE(opt->config().fused);  // fp32, contiguous, on the CPU
  EXPECT_EQ(opt->config().weight_decay, 0.1);
  const auto strided = at::zeros({4, 3}).t();
  EXPECT_FALSE(train::make_training_adamw({{"w", strided}}, cfg)->config().fused);
}
