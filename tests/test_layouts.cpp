// model/layouts: timm <-> Hugging Face ViTModel names (a lossless round trip; qkv rows split in query, key,
// value order), the architecture as JSON, and one-line errors for tensors no layout names. That a Hugging
// Face ViTModel loads the result with no missing keys and the same output is checked against transformers
// itself by tests/reference/check_export.py (tests/e2e.sh).
#include "dbot/model/layouts.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {

model::TensorMap random_encoder(const model::VitConfig& cfg) {
  model::VisionTransformer vit(cfg);
  auto state = model::state_dict(*vit);
  auto gen = core::derive_generator(3, core::RngPurpose::kInit, 0);
  for (auto& [name, t] : state) t = at::randn(t.sizes(), gen);  // every tensor distinct
  return state;
}

}  // namespace

TEST(Layouts, TimmToHuggingFaceAndBackIsLossless) {
  const auto cfg = test::tiny_vit(3);  // 16 wide, 2 blocks
  const auto timm = random_encoder(cfg);
  const auto hf = model::timm_to_hf(timm, cfg);
  EXPECT_EQ(hf.size(), timm.size() + 4 * static_cast<size_t>(cfg.depth));  // qkv weight+bias -> 3 pairs
  const auto& qkv = timm.at("blocks.1.attn.qkv.weight");                   // [3D, D]
  const int64_t D = cfg.embed_dim;
  EXPECT_TRUE(hf.at("encoder.layer.1.attention.attention.query.weight").equal(qkv.slice(0, 0, D)));
  EXPECT_TRUE(hf.at("encoder.layer.1.attention.attention.key.weight").equal(qkv.slice(0, D, 2 * D)));
  EXPECT_TRUE(hf.at("encoder.layer.1.attention.attention.value.bias")
                  .equal(timm.at("blocks.1.attn.qkv.bias").slice(0, 2 * D, 3 * D)));
  EXPECT_TRUE(hf.at("encoder.layer.0.intermediate.dense.weight").equal(timm.at("blocks.0.mlp.fc1.weight")));
  EXPECT_TRUE(hf.at("embeddings.position_embeddings").equal(timm.at("pos_embed")));
  EXPECT_TRUE(hf.at("layernorm.bias").equal(timm.at("norm.bias")));

  auto with_pooler = hf;
  with_pooler["pooler.dense.weight"] = at::zeros({D, D});  // a Hugging Face pooler is dropped, not an error
  const auto back = model::hf_to_timm(with_pooler, "f");
  ASSERT_EQ(back.size(), timm.size());
  for (const auto& [name, t] : timm) EXPECT_TRUE(back.at(name).equal(t)) << name;
}

TEST(Layouts, UnknownAndIncompleteTensorsAreErrors) {
  const auto cfg = test::tiny_vit(3);
  auto hf = model::timm_to_hf(random_encoder(cfg), cfg);
  auto extra = hf;
  extra["encoder.layer.0.attention.attention.rotary"] = at::zeros({1});
  EXPECT_NE(error_of([&] {
              model::hf_to_timm(extra, "w.safetensors");
            }).find("w.safetensors: block blocks.0. has 7 query/key/value tensors, expected 6"),
            std::string::npos);
  extra = hf;
  extra["classifier.weight"] = at::zeros({1});
  EXPECT_NE(error_of([&] {
              model::hf_to_timm(extra, "w.safetensors");
            }).find("w.safetensors: tensor 'classifier.weight' is not part of a Hugging Face ViTModel"),
            std::string::npos);
  auto missing = hf;
  missing.erase("encoder.layer.1.attention.attention.key.bias");
  EXPECT_NE(error_of([&] {
              model::hf_to_timm(missing, "w.safetensors");
            }).find("block blocks.1. has 5 query/key/value tensors"),
            std::string::npos);
  auto timm = random_encoder(cfg);
  timm.erase("blocks.0.norm1.weight");
  EXPECT_NE(error_of([&] { model::timm_to_hf(timm, cfg); }).find("missing tensor 'blocks.0.norm1.weight'"),
            std::string::npos);
}

TEST(Layouts, ArchitectureJsonRoundTripsAndIsChecked) {
  auto cfg = test::tiny_vit(1);
  cfg.mlp_ratio = 2.5;
  const auto back = model::vit_config_from_json(model::vit_config_to_json(cfg), "f");
  EXPECT_EQ(back.img_size, cfg.img_size);
  EXPECT_EQ(back.patch_size, cfg.patch_size);
  EXPECT_EQ(back.in_chans, 1);
  EXPECT_EQ(back.embed_dim, cfg.embed_dim);
  EXPECT_EQ(back.depth, cfg.depth);
  EXPECT_EQ(back.num_heads, cfg.num_heads);
  EXPECT_EQ(back.mlp_ratio, 2.5);
  EXPECT_NE(error_of([] {
              model::vit_config_from_json(R"({"img_size": 8})", "f.safetensors");
            }).find("f.safetensors: the architecture"),
            std::string::npos);
  const std::string bad =
      R"({"img_size":9,"patch_size":2,"in_chans":3,"embed_dim":16,"depth":1,"num_heads":2,"mlp_ratio":4})";
  EXPECT_NE(error_of([&] { model::vit_config_from_json(bad, "f.safetensors"); }).find("not divisible by patch size"),
            std::string::npos);
}

TEST(Layouts, HuggingFaceConfigMatchesTheModel) {
  const auto cfg = test::tiny_vit(3);
  const auto j = nlohmann::json::parse(model::hf_vit_config_json(cfg));
  EXPECT_EQ(j.at("model_type"), "vit");
  EXPECT_EQ(j.at("architectures"), nlohmann::json::array({"ViTModel"}));
  EXPECT_EQ(j.at("hidden_size"), cfg.embed_dim);
  EXPECT_EQ(j.at("num_hidden_layers"), cfg.depth);
  EXPECT_EQ(j.at("num_attention_heads"), cfg.num_heads);
  EXPECT_EQ(j.at("intermediate_size"), 4 * cfg.embed_dim);
  EXPECT_EQ(j.at("image_size"), cfg.img_size);
  EXPECT_EQ(j.at("patch_size"), cfg.patch_size);
  EXPECT_EQ(j.at("num_channels"), 3);
  EXPECT_EQ(j.at("hidden_act"), "gelu");    // exact GELU, as timm
  EXPECT_EQ(j.at("layer_norm_eps"), 1e-6);  // Hugging Face's default is 1e-12
  EXPECT_EQ(j.at("qkv_bias"), true);
}
