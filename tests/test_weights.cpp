// train/weights: `dbot export` of each part in each layout reads back (train/pretrained.h) to exactly the
// checkpoint's tensors with the architecture in the metadata; files without dbot metadata get it from
// their shapes; parts that a layout cannot hold are refused.
#include "dbot/io/safetensors.h"
#include "dbot/train/pretrained.h"
#include "dbot/train/weights.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {

struct Saved {
  test::TempDir dir;
  std::string path;
  train::Checkpoint ckpt;
  Saved() {
    mkd::Distiller d(test::tiny_vit(3), test::tiny_mkd(), 4);
    d.next_stage();  // stage 2: the teacher is the stage-1 student
    path = dir.str() + "/stage-2.pt";
    train::save_checkpoint(path, d, 1, 0, "model:\n  in_chans: 3\n");
    ckpt = train::load_checkpoint(path);
  }
};

void expect_encoder_equal(const model::TensorMap& got, const model::TensorMap& from) {
  EXPECT_EQ(got.size(), 2u + 2u + 2u + 12u * 2u);  // cls + pos, patch w/b, norm w/b, 12 per block x 2 blocks
  for (const auto& [name, t] : got) EXPECT_TRUE(t.equal(from.at(name))) << name;
}

}  // namespace

TEST(Weights, EncoderExportsReadBackInBothLayouts) {
  Saved s;
  const auto cfg = test::tiny_vit(3);
  const auto timm_file = s.dir.str() + "/out/encoder.safetensors";  // the folder is created
  const auto r = train::export_weights(s.ckpt, s.path, cfg, test::tiny_mkd().decoder, {}, timm_file);
  EXPECT_EQ(r.files, std::vector<std::string>{timm_file});
  EXPECT_EQ(r.cfg.depth, 2);
  const auto meta = io::read_safetensors_metadata(timm_file);
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("dbot.part"), "encoder");
  EXPECT_EQ(meta.at("dbot.stage"), "2");
  EXPECT_EQ(meta.at("dbot.recipe"), "model:\n  in_chans: 3\n");
  auto w = train::read_pretrained(timm_file).encoder;
  EXPECT_EQ(w.cfg.embed_dim, 16);
  EXPECT_EQ(w.cfg.num_heads, cfg.num_heads);
  expect_encoder_equal(w.state, s.ckpt.model);

  const auto hf_dir = s.dir.str() + "/hf";
  train::ExportOptions hf;
  hf.layout = "hf";
  const auto rh = train::export_weights(s.ckpt, s.path, cfg, test::tiny_mkd().decoder, hf, hf_dir);
  EXPECT_EQ(rh.files, (std::vector<std::string>{hf_dir + "/model.safetensors", hf_dir + "/config.json"}));
  EXPECT_TRUE(io::read_safetensors(hf_dir + "/model.safetensors").tensors.count("embeddings.cls_token"));
  expect_encoder_equal(train::read_pretrained(hf_dir + "/model.safetensors").encoder.state, s.ckpt.model);
}

TEST(Weights, TeacherAndStudentParts) {
  Saved s;
  const auto cfg = test::tiny_vit(3);
  train::ExportOptions o;
  o.part = "teacher";
  const auto tf = s.dir.str() + "/teacher.safetensors";
  train::export_weights(s.ckpt, s.path, cfg, test::tiny_mkd().decoder, o, tf);
  expect_encoder_equal(train::read_pretrained(tf).encoder.state, s.ckpt.teacher);

  o.part = "student";
  const auto sf = s.dir.str() + "/student.safetensors";
  train::export_weights(s.ckpt, s.path, cfg, test::tiny_mkd().decoder, o, sf);
  const auto st = io::read_safetensors(sf);
  EXPECT_EQ(st.tensors.size(), s.ckpt.model.size());
  for (const auto& [name, t] : s.ckpt.model) EXPECT_TRUE(st.tensors.at(name).equal(t)) << name;
  const auto dec = nlohmann::json::parse(st.metadata.at("dbot.decoder"));
  EXPECT_EQ(dec.at("embed_dim"), 8);
  EXPECT_EQ(dec.at("target_dim"), 16);
  expect_encoder_equal(train::read_pretrained(sf).encoder.state, s.ckpt.model);  // the decoder is left out

  o.layout = "hf";
  EXPECT_NE(error_of([&] {
              train::export_weights(s.ckpt, s.path, cfg, test::tiny_mkd().decoder, o, "x");
            }).find("the Hugging Face layout holds an encoder only"),
            std::string::npos);
}

TEST(Weights, ArchitectureFromShapesWhenThereIsNoMetadata) {
  Saved s;
  auto cfg = test::tiny_vit(3);
  cfg.embed_dim = 64;  // heads = 64 / 64 = 1 when inferred
  cfg.num_heads = 1;
  cfg.depth = 1;
  model::VisionTransformer vit(cfg);
  const auto state = model::state_dict(*vit);
  const auto f = s.dir.str() + "/plain.safetensors";
  io::write_safetensors(f, state, {});
  const auto w = train::read_pretrained(f).encoder;
  EXPECT_EQ(w.cfg.embed_dim, 64);
  EXPECT_EQ(w.cfg.depth, 1);
  EXPECT_EQ(w.cfg.num_heads, 1);
  EXPECT_EQ(w.cfg.patch_size, 2);
  EXPECT_EQ(w.cfg.img_size, 8);
  EXPECT_EQ(w.cfg.mlp_ratio, 4.0);

  const auto narrow = s.dir.str() + "/narrow.safetensors";
  io::write_safetensors(narrow, model::state_dict(*model::VisionTransformer(test::tiny_vit(3))), {});
  EXPECT_NE(
      error_of([&] { train::read_pretrained(narrow); }).find("number of heads of a 16-wide encoder cannot be inferred"),
      std::string::npos);
  auto extra = state;  // a classification head is dropped and listed; an unknown tensor is an error
  extra["head.weight"] = at::zeros({10, 64});
  const auto ef = s.dir.str() + "/extra.safetensors";
  io::write_safetensors(ef, extra, {});
  EXPECT_EQ(train::read_pretrained(ef).ignored, std::vector<std::string>{"head.weight"});
  extra["blocks.0.attn.rel_pos_bias"] = at::zeros({3});
  io::write_safetensors(ef, extra, {});
  EXPECT_NE(error_of([&] {
              train::read_pretrained(ef);
            }).find("tensor 'blocks.0.attn.rel_pos_bias' is not part of a ViT encoder"),
            std::string::npos);
}
