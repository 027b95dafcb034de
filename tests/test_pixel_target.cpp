// The pixel target (mkd.target pixels): MAE's patchify and normalized-pixel loss against the official
// models_mae.py code (golden values from tests/reference/make_golden.py, section 8) and by hand, and a
// one-stage MAE run through the same trainer: its files, its decoder width and an exact resume.
#include <ATen/Parallel.h>

#include <filesystem>

#include "dbot/mkd/distiller.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/trainer.h"
#include "run_util.h"
#include "test_util.h"

using namespace dbot;
using test::all_close;
using test::close_to_scale;
using test::golden_tensor;

namespace {
mkd::MkdConfig pixel_mkd() {
  auto m = test::tiny_mkd();
  m.target = "pixels";
  m.stage_epochs = {0, 2};
  return m;
}
}  // namespace

TEST(PixelTarget, PatchifyOrdersRowColumnChannel) {
  // One 2-channel 2x4 image, patch 2: two patches, each [row 0: (c0, c1) (c0, c1), row 1: ...].
  auto imgs = at::arange(16, at::kFloat).reshape({1, 2, 2, 4});  // c0: 0..7, c1: 8..15
  auto x = mkd::patchify(imgs, 2);
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{1, 2, 8}));
  EXPECT_TRUE(x[0][0].equal(at::tensor({0.f, 8.f, 1.f, 9.f, 4.f, 12.f, 5.f, 13.f})));
  EXPECT_TRUE(x[0][1].equal(at::tensor({2.f, 10.f, 3.f, 11.f, 6.f, 14.f, 7.f, 15.f})));
  EXPECT_TRUE(all_close(mkd::patchify(test::given_images(), 2), golden_tensor("pixels.target"), 0, 0));
}

TEST(PixelTarget, LossHandChecked) {
  // L = 2 patches of 2 pixels; the decoder's CLS row (first) is ignored; patch 1 is masked.
  auto target = at::tensor({1.f, 3.f, 0.f, 4.f}).reshape({1, 2, 2});
  auto pred = at::tensor({100.f, 100.f, 0.f, 0.f, 1.f, 2.f}).reshape({1, 3, 2});
  auto mask = at::tensor({0.f, 1.f}).reshape({1, 2});
  // Raw: patch 1 errors (1 - 0, 2 - 4) -> (1 + 4) / 2.
  EXPECT_NEAR(mkd::pixel_loss(target, pred, mask, false).item<double>(), 2.5, 1e-6);
  // Normalized: patch 1 = (0, 4): mean 2, unbiased var 8 -> (-2, 2) / sqrt(8 + 1e-6).
  const double s = std::sqrt(8.0 + 1e-6), a = 1 + 2 / s, b = 2 - 2 / s;
  EXPECT_NEAR(mkd::pixel_loss(target, pred, mask, true).item<double>(), (a * a + b * b) / 2, 1e-5);
}

TEST(PixelTarget, LossAndGradientsMatchMae) {
  mkd::Distiller d(test::tiny_vit(), pixel_mkd(), 0);
  ASSERT_EQ(d.student->decoder.decoder_predp->weight.size(0), 12);  // p * p * C = 2 * 2 * 3
  test::fill_parameters(*d.student, "pixels.");
  const auto imgs = test::given_images();
  auto enc = d.forward_encoder(imgs, test::given_noise(), nullptr);
  auto pred = d.forward_decoder(enc.latent, enc.ids_restore, nullptr);
  EXPECT_TRUE(all_close(pred.slice(1, 1), golden_tensor("pixels.pred"), 1e-5, 1e-6));
  const auto target = d.forward_target(imgs);
  EXPECT_NEAR(mkd::pixel_loss(target, pred, enc.mask, false).item<double>(),
              golden_tensor("pixels.loss_raw", at::kDouble).item<double>(), 1e-6);
  auto loss = mkd::pixel_loss(target, pred, enc.mask, true);
  EXPECT_NEAR(loss.item<double>(), golden_tensor("pixels.loss", at::kDouble).item<double>(), 1e-6);
  loss.backward();
  for (const auto& [name, p] : d.named_student_parameters()) {
    if (name == "decoder_predp.weight" || name == "blocks.0.attn.qkv.weight" || name == "cls_token") {
      EXPECT_TRUE(close_to_scale(p.grad(), golden_tensor("pixels.grad." + name), 1e-4)) << name;
    }
  }
  EXPECT_THROW(d.next_stage(), std::logic_error);
}

TEST(PixelTarget, RecipeRefusesWhatMaeCannotDo) {
  auto error = [](std::vector<std::string> o) { return test::error_of([&] { recipe::load_config("", o); }); };
  EXPECT_NE(error({"mkd.target=pixel"}).find("mkd.target must be teacher or pixels, got 'pixel'"), std::string::npos);
  EXPECT_NE(error({"mkd.target=pixels"}).find("one stage"), std::string::npos);  // default: two stages
  EXPECT_NE(error({"mkd.target=pixels", "mkd.stage_epochs=[0, 4]", "mkd.loss=cosine"}).find("mkd.loss auto"),
            std::string::npos);
  EXPECT_EQ(error({"mkd.target=pixels", "mkd.stage_epochs=[0, 4]"}), "<no error>");
}

TEST(PixelTarget, OneStageMaeRunResumesExactly) {
  at::set_num_threads(1);
  test::TempDir data, full, pieces;
  test::write_fake_fmnist(data.str(), 64, 20, 8);
  const auto cfg = test::tiny_run(data.str(), {"mkd.target=pixels", "mkd.stage_epochs=[0, 2]"});
  const auto rt = core::Runtime{};
  const auto s = train::pretrain(cfg, rt, test::options(full.str(), cfg));
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.stages_done, 1);
  EXPECT_FALSE(std::filesystem::exists(full.str() + "/stage-2.pt"));
  const auto last = train::load_checkpoint(full.str() + "/stage-1.pt");
  EXPECT_EQ(last.model.at("decoder_predp.weight").size(0), 4);  // 2 x 2 pixels, 1 channel
  // The saved teacher is the stage-0 (random) network: the student's initialization, for the evaluation table.
  mkd::Distiller init(cfg.model, cfg.mkd, cfg.train.seed);
  for (const auto& [k, v] : train::state_dict(*init.teacher)) EXPECT_TRUE(v.equal(last.teacher.at(k))) << k;

  auto o = test::options(pieces.str(), cfg);
  o.stop_after = 3;
  train::pretrain(cfg, rt, o);
  o.resume = true;
  o.stop_after = -1;
  train::pretrain(cfg, rt, o);
  const auto resumed = train::load_checkpoint(pieces.str() + "/stage-1.pt");
  for (const auto& [k, v] : last.model) EXPECT_TRUE(v.equal(resumed.model.at(k))) << k;
}
