// train/pretrained + io/torch_pickle + the foreign-teacher path of mkd/: a timm ViT of another width, depth
// and patch size, saved by Python's torch.save with a "model" wrapper and "module." prefixes
// (tests/reference/make_teacher_golden.py), becomes a dbot teacher whose target equals timm's; the
// decoder predicts its width, then the student's after a stage switch; a checkpoint resumes it; position
// tables resample as timm's resample_abs_pos_embed. Wrappers, prefixes and refusals on files dbot writes.
#include <algorithm>

#include "dbot/io/torch_pickle.h"
#include "dbot/model/layouts.h"
#include "dbot/model/pos_embed.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/pretrained.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {

const std::string kTeacherFile = DBOT_TEST_DATA "/teachers/timm_w24_d3_p4.pth";

at::Tensor teacher_golden(const std::string& key, at::IntArrayRef shape) {
  return test::json_tensor(DBOT_TEST_DATA "/teachers/timm_w24_d3_p4.json", key, shape);
}

train::Pretrained read_timm_teacher() {
  train::PretrainedOptions opts;
  opts.num_heads = 2;
  opts.need_final_norm = false;
  return train::read_pretrained(kTeacherFile, opts);
}

mkd::StartWeights timm_start(const model::VitConfig& student) {
  mkd::StartWeights start;
  start.teacher = mkd::fit_to_grid(read_timm_teacher().encoder, student, kTeacherFile);
  start.teacher_what = kTeacherFile;
  return start;
}

// Writes a plain dict of dicts of tensors as torch.save would (dbot's own writer).
void save_dict(const std::string& path, const std::map<std::string, model::TensorMap>& wrappers) {
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [wrapper, tensors] : wrappers) {
    c10::Dict<std::string, at::Tensor> d;
    for (const auto& [k, v] : tensors) d.insert(k, v);
    root.insert(wrapper, d);
  }
  const auto bytes = train::pickle_plain(c10::IValue(root));
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

model::TensorMap prefixed(const model::TensorMap& m, const std::string& prefix) {
  model::TensorMap out;
  for (const auto& [k, v] : m) out[prefix + k] = v;
  return out;
}

}  // namespace

TEST(Pretrained, ReadsATimmStateDictSavedByPython) {
  const auto p = read_timm_teacher();
  EXPECT_NE(p.source.find("torch.save dict, 'model' wrapper, 'module.' prefix"), std::string::npos) << p.source;
  EXPECT_EQ(p.ignored, (std::vector<std::string>{"head.bias", "head.weight"}));
  const auto& c = p.encoder.cfg;
  EXPECT_EQ(c.embed_dim, 24);
  EXPECT_EQ(c.depth, 3);
  EXPECT_EQ(c.num_heads, 2);
  EXPECT_EQ(c.patch_size, 4);
  EXPECT_EQ(c.img_size, 24);
  EXPECT_EQ(c.in_chans, 1);
  EXPECT_EQ(c.mlp_ratio, 4.0);
  EXPECT_TRUE(p.arch_from_shapes);
  // The file's values (make_teacher_golden.py's fill): cls_token = 0.2 sin(0.37 j + crc32 % 101 * 0.1).
  const auto cls = p.encoder.state.at("cls_token").flatten();
  const double off = static_cast<double>(crc32(0L, reinterpret_cast<const Bytef*>("cls_token"), 9) % 101) * 0.1;
  for (int64_t j = 0; j < 24; ++j) EXPECT_NEAR(cls[j].item<double>(), 0.2 * std::sin(0.37 * j + off), 1e-6);
  // Without the width-24 heads the file cannot say how many heads it has.
  EXPECT_NE(
      error_of([] { train::read_pretrained(kTeacherFile); }).find("heads of a 24-wide encoder cannot be inferred"),
      std::string::npos);
}

TEST(Pretrained, PositionTablesResampleAsTimm) {
  const auto pos = read_timm_teacher().encoder.state.at("pos_embed");  // [1, 37, 24], grid 6
  EXPECT_TRUE(
      test::all_close(model::resample_abs_pos_embed(pos, 4), teacher_golden("pos_embed", {1, 17, 24}), 1e-5, 1e-6));
  EXPECT_TRUE(
      test::all_close(model::resample_abs_pos_embed(pos, 7), teacher_golden("pos_embed_7", {1, 50, 24}), 1e-5, 1e-6));
  EXPECT_TRUE(model::resample_abs_pos_embed(pos, 6).equal(pos));
}

TEST(Pretrained, TimmTeacherOfAnotherShapeGivesTimmsTarget) {
  const auto student = test::tiny_vit(1);  // 8 px, patch 2, 4x4 grid, 16 wide
  mkd::Distiller d(student, test::tiny_mkd(), 3, timm_start(student));
  EXPECT_EQ(d.teacher->cfg.img_size, 16);  // 4 x 4 patches of 4 px
  EXPECT_EQ(d.student->decoder.decoder_predp->weight.sizes(), (at::IntArrayRef{24, 8}));
  const auto images = teacher_golden("images", {2, 1, 8, 8});
  EXPECT_TRUE(test::all_close(d.forward_teacher(images), teacher_golden("target", {2, 17, 24}), 1e-4, 1e-5));
  train::AdamW opt(d.named_student_parameters(), {});
  {
    auto gen = core::derive_generator(3, core::RngPurpose::kStep, 0);
    const auto loss = d.forward(images, gen);  // the graph dies with it, before the switch (as in train_step)
    EXPECT_TRUE(std::isfinite(loss.item<double>()));
    loss.backward();
    opt.step(1e-3);
    opt.zero_grad();  // keeps gradient buffers of the 24-wide shape
  }

  // Stage 2: the stage-1 student (16 wide) teaches; the decoder now predicts 16 features.
  d.next_stage();
  EXPECT_EQ(d.teacher->cfg.embed_dim, 16);
  EXPECT_EQ(d.student->decoder.decoder_predp->weight.sizes(), (at::IntArrayRef{16, 8}));
  EXPECT_EQ(opt.fit_state_to_params(), (std::vector<std::string>{"decoder_predp.weight", "decoder_predp.bias"}));
  auto gen2 = core::derive_generator(3, core::RngPurpose::kStep, 1);
  d.forward(images, gen2).backward();
  opt.step(1e-3);
  EXPECT_TRUE(d.student->decoder.decoder_predp->weight.isfinite().all().item<bool>());
}

TEST(Pretrained, CheckpointOfAForeignTeacherResumes) {
  test::TempDir dir;
  const auto student = test::tiny_vit(1);
  mkd::Distiller d(student, test::tiny_mkd(), 3, timm_start(student));
  const auto path = dir.str() + "/checkpoint-last.pt";
  train::AdamW opt(d.named_student_parameters(), {});
  train::save_checkpoint(path, d, 0, 1, "", {&opt});
  const auto ckpt = train::load_checkpoint(path);
  EXPECT_EQ(model::vit_config_from_json(ckpt.teacher_arch, path).embed_dim, 24);

  mkd::Distiller resumed(student, test::tiny_mkd(), 3);  // as a resume builds it: no file read
  train::AdamW resumed_opt(resumed.named_student_parameters(), {});
  train::restore(resumed, &resumed_opt, nullptr, ckpt, path);
  EXPECT_EQ(resumed.teacher->cfg.img_size, 16);
  EXPECT_EQ(resumed.student->decoder.decoder_predp->weight.sizes(), (at::IntArrayRef{24, 8}));
  const auto images = teacher_golden("images", {2, 1, 8, 8});
  EXPECT_TRUE(resumed.forward_teacher(images).equal(d.forward_teacher(images)));
  // The exported teacher part keeps its own architecture too.
  EXPECT_EQ(train::read_pretrained(path, {"teacher"}).encoder.cfg.embed_dim, 24);
}

TEST(Pretrained, WrappersPrefixesAndRefusals) {
  test::TempDir dir;
  const auto cfg = test::tiny_vit(3);
  const auto state = model::state_dict(*model::VisionTransformer(cfg));
  const auto f = dir.str() + "/dino.pth";
  save_dict(f, {{"teacher", prefixed(state, "backbone.")}, {"student", prefixed(state, "module.backbone.")}});
  train::PretrainedOptions opts;
  opts.num_heads = 2;
  const auto p = train::read_pretrained(f, opts);
  EXPECT_NE(p.source.find("'teacher' wrapper, 'backbone.' prefix"), std::string::npos) << p.source;
  for (const auto& [name, t] : state) EXPECT_TRUE(p.encoder.state.at(name).equal(t)) << name;

  auto classifier = state;  // Hugging Face's image-classification head; a non-tensor entry is listed too
  classifier["classifier.weight"] = at::zeros({5, 16});
  save_dict(f, {{"model", classifier}});
  EXPECT_EQ(train::read_pretrained(f, opts).ignored, std::vector<std::string>{"classifier.weight"});

  // An MAE or dBOT checkpoint: its decoder is dropped and listed as one item, beside the head's tensors.
  auto pretraining = model::state_dict(*mkd::Distiller(cfg, test::tiny_mkd(), 3).student);
  const auto decoder_tensors = std::count_if(pretraining.begin(), pretraining.end(), [](const auto& kv) {
    return kv.first == "mask_token" || kv.first.rfind("decoder_", 0) == 0;
  });
  ASSERT_GT(decoder_tensors, 5);
  pretraining["head.weight"] = at::zeros({5, 16});
  save_dict(f, {{"model", pretraining}});
  const auto mae = train::read_pretrained(f, opts);
  EXPECT_EQ(mae.ignored, (std::vector<std::string>{
                             "head.weight", "the MAE/dBOT decoder (" + std::to_string(decoder_tensors) + " tensors)"}));
  for (const auto& [name, t] : state) EXPECT_TRUE(mae.encoder.state.at(name).equal(pretraining.at(name))) << name;

  auto clip = state;  // timm names beside CLIP's class_embedding: neither layout
  clip["class_embedding"] = at::zeros({16});
  save_dict(f, {{"state_dict", clip}});
  EXPECT_NE(error_of([&] { train::read_pretrained(f, opts); }).find("is not part of a CLIP image tower"),
            std::string::npos);
  auto deit = state;
  deit["dist_token"] = at::zeros({1, 1, 16});
  save_dict(f, {{"model", deit}});
  EXPECT_NE(error_of([&] { train::read_pretrained(f, opts); }).find("distilled DeiT"), std::string::npos);
  auto partial = state;
  partial.erase("blocks.1.mlp.fc2.weight");
  save_dict(f, {{"model", partial}});
  EXPECT_NE(error_of([&] { train::read_pretrained(f, opts); }).find("blocks.1.mlp.fc2.weight"), std::string::npos);
  auto no_norm = state;  // MAE's global-pool models: no final norm; fine for a teacher only
  no_norm.erase("norm.weight");
  no_norm.erase("norm.bias");
  save_dict(f, {{"model", no_norm}});
  EXPECT_NE(error_of([&] { train::read_pretrained(f, opts); }).find("norm.weight"), std::string::npos);
  opts.need_final_norm = false;
  EXPECT_TRUE(train::read_pretrained(f, opts).encoder.state.at("norm.weight").eq(1).all().item<bool>());
}

TEST(Pretrained, StudentStartsFromAFile) {
  const auto cfg = test::tiny_vit(3);
  mkd::Distiller source(cfg, test::tiny_mkd(), 11);
  mkd::StartWeights start;
  start.student = model::state_dict(*source.student);  // encoder + decoder
  start.student_what = "source";
  mkd::Distiller d(cfg, test::tiny_mkd(), 5, start);
  for (const auto& [name, t] : model::state_dict(*d.student)) EXPECT_TRUE(t.equal(start.student.at(name))) << name;
  // The stage-0 teacher is a copy of the student's start.
  EXPECT_TRUE(d.teacher->blocks.blocks[0]->attn->qkv->weight.equal(start.student.at("blocks.0.attn.qkv.weight")));

  auto encoder_only = start.student;  // without a decoder: the decoder keeps its own initialization
  for (auto it = encoder_only.begin(); it != encoder_only.end();) {
    it = it->first.rfind("decoder_", 0) == 0 || it->first == "mask_token" ? encoder_only.erase(it) : std::next(it);
  }
  start.student = encoder_only;
  mkd::Distiller e(cfg, test::tiny_mkd(), 5, start);
  mkd::Distiller plain(cfg, test::tiny_mkd(), 5);
  EXPECT_TRUE(model::state_dict(*e.student)
                  .at("decoder_embed.weight")
                  .equal(model::state_dict(*plain.student).at("decoder_embed.weight")));
  start.student.erase("norm.bias");
  EXPECT_NE(error_of([&] { mkd::Distiller(cfg, test::tiny_mkd(), 5, start); }).find("missing tensor 'norm.bias'"),
            std::string::npos);
}

TEST(Pretrained, TeacherWithItsOwnInputNormalization) {
  const auto student = test::tiny_vit(1);
  mkd::MkdConfig m = test::tiny_mkd();
  m.teacher_init = kTeacherFile;
  m.teacher_num_heads = 2;
  m.teacher_mean = {0.5};
  m.teacher_std = {0.25};
  const auto start = train::read_start_weights(student, m, {0.2860}, {0.3530});  // the data's (Fashion-MNIST)
  ASSERT_EQ(start.teacher_input.scale.size(), 1u);
  EXPECT_NEAR(start.teacher_input.scale[0], 0.3530 / 0.25, 1e-12);
  EXPECT_NEAR(start.teacher_input.shift[0], (0.2860 - 0.5) / 0.25, 1e-12);

  mkd::Distiller d(student, m, 3, start);
  mkd::Distiller plain(student, test::tiny_mkd(), 3, timm_start(student));
  const auto images = teacher_golden("images", {2, 1, 8, 8});
  const auto renormalized = images * start.teacher_input.scale[0] + start.teacher_input.shift[0];
  EXPECT_TRUE(test::all_close(d.forward_teacher(images), plain.forward_teacher(renormalized), 1e-5, 1e-6));

  test::TempDir dir;  // a checkpoint keeps it
  const auto path = dir.str() + "/stage-1.pt";
  train::save_checkpoint(path, d, 0, 0, "");
  mkd::Distiller resumed(student, test::tiny_mkd(), 3);
  train::restore(resumed, nullptr, nullptr, train::load_checkpoint(path), path);
  EXPECT_TRUE(resumed.forward_teacher(images).equal(d.forward_teacher(images)));

  d.next_stage();  // the stage-1 student teaches next, on the data's normalization
  EXPECT_TRUE(d.teacher->input_affine().scale.empty());
}
