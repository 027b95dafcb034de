// A CLIP image tower as the stage-0 teacher (issue: weights in and out; METHOD.md, CLIP-teacher variant):
// open_clip's own tower, saved as open_clip's training checkpoints are (tests/reference/
// make_clip_teacher_golden.py), is read with its OpenAI names, its text tower listed as ignored; its target
// (every token after ln_post and proj) equals open_clip's with QuickGELU and, when asked, with GELU; the
// default loss against it is 1 - cosine on masked patches without CLS (hand-checked), and after the stage
// switch the student teaches with dBOT's own target and loss. A checkpoint keeps the tower's architecture.
#include "dbot/model/layouts.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/pretrained.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {

const std::string kClipFile = DBOT_TEST_DATA "/teachers/openclip_w32_d2_p4.pt";

at::Tensor clip_golden(const std::string& key, at::IntArrayRef shape) {
  return test::json_tensor(DBOT_TEST_DATA "/teachers/openclip_w32_d2_p4.json", key, shape);
}

train::Pretrained read_clip(const std::string& act = "auto") {
  train::PretrainedOptions opts;
  opts.num_heads = 2;
  opts.need_final_norm = false;
  opts.act = act;
  return train::read_pretrained(kClipFile, opts);
}

mkd::Distiller clip_distiller(const std::string& act = "auto", const std::string& loss = "auto",
                              bool reinit_student = true) {
  const auto student = test::tiny_vit(1);  // 8 px, patch 2, 4x4 grid, 16 wide
  auto m = test::tiny_mkd();
  m.loss = loss;
  m.reinit_student = reinit_student;
  mkd::StartWeights start;
  start.teacher = mkd::fit_to_grid(read_clip(act).encoder, student, kClipFile);
  start.teacher_what = kClipFile;
  return mkd::Distiller(student, m, 3, start);
}

}  // namespace

TEST(ClipTeacher, ReadsAnOpenClipCheckpoint) {
  const auto p = read_clip();
  EXPECT_NE(p.source.find("'state_dict' wrapper, 'module.' prefix, OpenAI/open_clip CLIP names (image tower)"),
            std::string::npos)
      << p.source;
  EXPECT_EQ(p.ignored, std::vector<std::string>{"the text tower (6 tensors)"});
  const auto& c = p.encoder.cfg;
  EXPECT_TRUE(c.pre_norm);
  EXPECT_TRUE(c.quick_gelu);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.proj_dim, 24);
  EXPECT_EQ(c.embed_dim, 32);
  EXPECT_EQ(c.depth, 2);
  EXPECT_EQ(c.patch_size, 4);
  EXPECT_EQ(c.img_size, 16);
  EXPECT_EQ(p.encoder.state.count("patch_embed.proj.bias"), 0u);  // CLIP's conv1 has none
  EXPECT_EQ(p.encoder.state.at("cls_token").sizes(), (at::IntArrayRef{1, 1, 32}));
  EXPECT_NE(p.summary().find("CLIP tower (ln_pre, QuickGELU, proj to 24)"), std::string::npos) << p.summary();
  EXPECT_FALSE(read_clip("gelu").encoder.cfg.quick_gelu);
  EXPECT_NE(error_of([] { read_clip("relu"); }).find("activation must be auto, gelu or quick_gelu"), std::string::npos);
  // The architecture survives the JSON of checkpoints and exports; plain ViTs write no CLIP keys.
  const auto back = model::vit_config_from_json(model::vit_config_to_json(c), "json");
  EXPECT_TRUE(back.pre_norm && back.quick_gelu && back.norm_eps == 1e-5 && back.proj_dim == 24);
  EXPECT_EQ(model::vit_config_to_json(test::tiny_vit()).find("pre_norm"), std::string::npos);
}

TEST(ClipTeacher, TargetIsOpenClipsTokensAfterLnPostAndProj) {
  const auto images = clip_golden("images", {2, 1, 8, 8});
  auto d = clip_distiller();
  EXPECT_EQ(d.student->decoder.decoder_predp->weight.sizes(), (at::IntArrayRef{24, 8}));  // predicts proj's width
  EXPECT_TRUE(test::all_close(d.forward_teacher(images), clip_golden("target", {2, 17, 24}), 1e-4, 1e-5));
  auto g = clip_distiller("gelu");  // open_clip's non-quickgelu towers
  EXPECT_TRUE(test::all_close(g.forward_teacher(images), clip_golden("target_gelu", {2, 17, 24}), 1e-4, 1e-5));
  EXPECT_FALSE(test::all_close(d.forward_teacher(images), clip_golden("target_gelu", {2, 17, 24}), 1e-4, 1e-5));
}

TEST(ClipTeacher, CosineLossOnMaskedPatchesWithoutCls) {
  // One image, CLS + 3 patches, 2 features; patches 0 and 1 masked, patch 2 visible.
  const auto target = at::tensor({9.f, 9.f, 1.f, 0.f, 0.f, 2.f, 3.f, 4.f}).reshape({1, 4, 2});
  const auto pred = at::tensor({-1.f, 1.f, 5.f, 0.f, 1.f, 0.f, -3.f, -4.f}).reshape({1, 4, 2});
  const auto mask = at::tensor({1.f, 1.f, 0.f}).reshape({1, 3});
  // cos: CLS 0 (dropped), patch 0 1 (same direction), patch 1 0 (orthogonal), patch 2 -1 (visible).
  const mkd::LossSpec clip{/*cosine=*/true, /*cls=*/false};
  EXPECT_NEAR(mkd::forward_loss(target, pred, mask, clip).item<double>(), (0.0 + 1.0) / 2, 1e-6);
  const mkd::LossSpec with_cls{/*cosine=*/true, /*cls=*/true};  // CLS: 1 - cos = 1
  EXPECT_NEAR(mkd::forward_loss(target, pred, mask, with_cls).item<double>(), (1.0 + 0.0 + 1.0) / 3, 1e-6);

  const auto tower = read_clip().encoder.cfg;
  const auto spec = mkd::loss_spec("auto", tower);
  EXPECT_TRUE(spec.cosine && !spec.cls);
  const auto l1 = mkd::loss_spec("smooth_l1", tower);  // the comparison is chosen, CLS follows the teacher
  EXPECT_TRUE(!l1.cosine && !l1.cls);
  const auto vit = mkd::loss_spec("auto", test::tiny_vit());
  EXPECT_TRUE(!vit.cosine && vit.cls);
  EXPECT_NE(error_of([&] { mkd::loss_spec("l2", tower); }).find("mkd.loss must be auto, smooth_l1 or cosine"),
            std::string::npos);
  // The recipe refuses it when it loads, with the same words, before any file is read.
  EXPECT_NE(error_of([&] { recipe::load_config("", {"mkd.loss=l2"}); }).find("mkd.loss must be auto, smooth_l1"),
            std::string::npos);
}

TEST(ClipTeacher, ContinuedStudentGetsAFreshPredictorOfTheNewWidth) {
  auto d = clip_distiller("auto", "auto", /*reinit_student=*/false);  // predicts 24 features, then the student's 16
  const auto block = d.student->blocks.blocks[0]->attn->qkv->weight.detach().clone();
  d.next_stage();
  EXPECT_TRUE(d.student->blocks.blocks[0]->attn->qkv->weight.equal(block));  // the encoder continues
  // The prediction layer is a fresh xavier_uniform [16, 8] from derive_generator(seed 3, kInit, stage 2).
  auto gen = core::derive_generator(3, core::RngPurpose::kInit, 2);
  const double bound = std::sqrt(6.0 / (8 + 16));
  const auto expected = at::empty({16, 8}).uniform_(-bound, bound, gen);
  const auto& predp = d.student->decoder.decoder_predp;
  EXPECT_TRUE(test::all_close(predp->weight, expected, 0, 0));
  EXPECT_TRUE(predp->bias.equal(at::zeros({16})));
}

TEST(ClipTeacher, TrainsThenHandsOverToTheStudent) {
  const auto images = clip_golden("images", {2, 1, 8, 8});
  auto d = clip_distiller();
  train::AdamW opt(d.named_student_parameters(), {});
  {
    auto gen = core::derive_generator(3, core::RngPurpose::kStep, 0);
    const auto loss = d.forward(images, gen);
    EXPECT_GE(loss.item<double>(), 0.0);
    EXPECT_LE(loss.item<double>(), 2.0);  // 1 - cos is in [0, 2]
    // It is the cosine loss without CLS against this teacher: the same draws, composed by hand.
    auto gen2 = core::derive_generator(3, core::RngPurpose::kStep, 0);
    const auto spec = mkd::loss_spec(d.cfg.loss, d.teacher->cfg);
    ASSERT_TRUE(spec.cosine && !spec.cls);
    const auto expected = test::plain_training_loss(d, images, gen2);
    EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-6);
    // And the same gradients, though Distiller::forward takes only the masked patches past the last attentions.
    std::vector<at::Tensor> params;
    for (const auto& [name, p] : d.named_student_parameters()) params.push_back(p);
    const auto fast = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true);
    const auto plain = torch::autograd::grad({expected}, params);
    for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(test::close_to_scale(fast[i], plain[i], 1e-5)) << i;
    loss.backward();
    opt.step(1e-3);
    opt.zero_grad();
  }
  d.next_stage();  // the 16-wide student teaches: dBOT's target and loss again
  EXPECT_FALSE(d.teacher->cfg.clip());
  EXPECT_EQ(d.student->decoder.decoder_predp->weight.sizes(), (at::IntArrayRef{16, 8}));
  auto gen = core::derive_generator(3, core::RngPurpose::kStep, 1);
  EXPECT_TRUE(std::isfinite(d.forward(images, gen).item<double>()));
}

TEST(ClipTeacher, CheckpointResumesTheTower) {
  test::TempDir dir;
  auto d = clip_distiller();
  const auto path = dir.str() + "/checkpoint-last.pt";
  train::save_checkpoint(path, d, 0, 1, "");
  mkd::Distiller resumed(test::tiny_vit(1), test::tiny_mkd(), 3);  // as a resume builds it: no file read
  train::restore(resumed, nullptr, nullptr, train::load_checkpoint(path), path);
  EXPECT_TRUE(resumed.teacher->cfg.clip());
  const auto images = clip_golden("images", {2, 1, 8, 8});
  EXPECT_TRUE(resumed.forward_teacher(images).equal(d.forward_teacher(images)));
  // A CLIP tower only teaches: it cannot start the student.
  auto m = test::tiny_mkd();
  m.student_init = kClipFile;
  EXPECT_NE(error_of([&] {
              train::read_start_weights(test::tiny_vit(1), m, {0.5}, {0.5});
            }).find("a CLIP tower can only be a teacher"),
            std::string::npos);
}
