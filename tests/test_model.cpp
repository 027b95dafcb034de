// ViT components against the independent PyTorch/timm reference (tests/reference/make_golden.py).
#include "dbot/compat.h"
#include "dbot/model/pos_embed.h"
#include "dbot/model/registry.h"
#include "dbot/model/vit.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;
using dbot::test::golden_tensor;

TEST(PosEmbed, MatchesReferenceTables) {
  // Computed in float64 on both sides and cast to fp32: equal up to fp32 rounding.
  EXPECT_TRUE(all_close(model::get_2d_sincos_pos_embed(16, 4, true), golden_tensor("sincos_16_4"), 1e-6, 1e-7));
  EXPECT_TRUE(all_close(model::get_2d_sincos_pos_embed(8, 4, true), golden_tensor("sincos_8_4"), 1e-6, 1e-7));
}

TEST(PosEmbed, HandCheckedEntries) {
  auto t = model::get_2d_sincos_pos_embed(8, 3, true);  // quarter = 2, omega = {1, 1/100}
  EXPECT_EQ(t.sizes(), at::IntArrayRef({10, 8}));
  EXPECT_EQ(t[0].abs().sum().item<float>(), 0.0f);  // CLS row
  // token 1 + (row 1, col 2) = index 6: column half uses col = 2, row half uses row = 1.
  EXPECT_NEAR(t[6][0].item<float>(), std::sin(2.0), 1e-6);
  EXPECT_NEAR(t[6][1].item<float>(), std::sin(0.02), 1e-6);
  EXPECT_NEAR(t[6][2].item<float>(), std::cos(2.0), 1e-6);
  EXPECT_NEAR(t[6][4].item<float>(), std::sin(1.0), 1e-6);
  EXPECT_NEAR(t[6][7].item<float>(), std::cos(0.01), 1e-6);
  EXPECT_THROW(model::get_2d_sincos_pos_embed(6, 2, true), std::invalid_argument);
}

TEST(VisionTransformer, ForwardMatchesTimm) {
  model::VisionTransformer vit(test::tiny_vit());
  test::fill_parameters(*vit);
  at::NoGradGuard no_grad;
  const auto imgs = test::given_images();
  // fp32, same op order except attention/matmul reductions: rtol 1e-5, atol 1e-6 (the bound);
  // after the final LayerNorm values are O(1), so 1e-5 relative is the meaningful figure.
  EXPECT_TRUE(all_close(vit->forward_features(imgs, false), golden_tensor("vit_prenorm"), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(vit->forward_features(imgs, true), golden_tensor("vit_forward"), 1e-5, 1e-5));
}

TEST(VisionTransformer, ParameterNamesAreTimms) {
  model::VisionTransformer vit(test::tiny_vit());
  std::vector<std::string> names;
  for (const auto& p : vit->named_parameters(true)) names.push_back(p.key());
  const std::vector<std::string> block = {"norm1.weight",     "norm1.bias",     "attn.qkv.weight", "attn.qkv.bias",
                                          "attn.proj.weight", "attn.proj.bias", "norm2.weight",    "norm2.bias",
                                          "mlp.fc1.weight",   "mlp.fc1.bias",   "mlp.fc2.weight",  "mlp.fc2.bias"};
  std::vector<std::string> expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token"};
  for (int i = 0; i < 2; ++i)
    for (const auto& b : block) expected.push_back("blocks." + std::to_string(i) + "." + b);
  expected.push_back("norm.weight");
  expected.push_back("norm.bias");
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
  ASSERT_NE(vit->named_buffers().find("pos_embed"), nullptr);
  EXPECT_EQ(vit->pos_embed.sizes(), at::IntArrayRef({1, 17, 16}));
}

TEST(VisionTransformer, InitializationFollowsOfficialCode) {
  auto cfg = test::tiny_vit();
  cfg.embed_dim = 64;
  cfg.num_heads = 4;
  model::VisionTransformer vit(cfg);
  auto gen = compat::make_cpu_generator(3);
  vit->initialize_weights(gen, true);
  const auto& qkv = vit->blocks.blocks[0]->attn->qkv->weight;  // fused [3D, D]: bound sqrt(6 / (D + 3D))
  const double bound = std::sqrt(6.0 / (64 + 192));
  EXPECT_LE(qkv.abs().max().item<double>(), bound);
  EXPECT_GT(qkv.abs().max().item<double>(), 0.95 * bound);
  EXPECT_EQ(vit->blocks.blocks[0]->attn->qkv->bias.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(vit->norm->weight.sub(1).abs().sum().item<double>(), 0.0);
  const auto& w = vit->patch_embed->proj->weight;  // xavier on the [D, C*p*p] view: bound sqrt(6 / (12 + 64))
  EXPECT_LE(w.abs().max().item<double>(), std::sqrt(6.0 / (12 + 64)));
  EXPECT_NEAR(vit->cls_token.std().item<double>(), 0.02, 0.01);
  // Same generator state, same weights.
  model::VisionTransformer again(cfg);
  auto gen2 = compat::make_cpu_generator(3);
  again->initialize_weights(gen2, true);
  EXPECT_TRUE(vit->blocks.blocks[1]->mlp->fc2->weight.equal(again->blocks.blocks[1]->mlp->fc2->weight));
}

TEST(VisionTransformer, DropPathIsPerSampleAndScaled) {
  auto x = at::ones({1000, 2, 3});
  auto gen = compat::make_cpu_generator(0);
  auto y = model::drop_path(x, 0.25, &gen);
  auto per_sample = y.select(2, 0).select(1, 0);
  // Every sample is either dropped (0) or kept and scaled by 1/0.75, identically over its tokens.
  EXPECT_TRUE(((per_sample == 0) | ((per_sample - 1.0 / 0.75).abs() < 1e-6)).all().item<bool>());
  EXPECT_TRUE(y.select(2, 2).equal(y.select(2, 0)));
  EXPECT_NEAR((per_sample == 0).to(at::kFloat).mean().item<float>(), 0.25, 0.05);
  EXPECT_TRUE(model::drop_path(x, 0.25, nullptr).equal(x));  // eval mode
}

TEST(VisionTransformer, BadShapesAreClearErrors) {
  auto cfg = test::tiny_vit();
  cfg.img_size = 9;
  try {
    cfg.validate();
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by patch size"), std::string::npos) << e.what();
  }
  model::VisionTransformer vit(test::tiny_vit());
  EXPECT_THROW(vit->forward_features(at::zeros({1, 1, 8, 8})), c10::Error);
}

TEST(Registry, TimmNames) {
  auto b = model::vit_config("vit_base_patch16_224");
  EXPECT_EQ(b.embed_dim, 768);
  EXPECT_EQ(b.depth, 12);
  EXPECT_EQ(b.num_heads, 12);
  EXPECT_EQ(b.num_patches(), 196);
  auto h = model::vit_config("vit_huge_patch14_224");
  EXPECT_EQ(h.embed_dim, 1280);
  EXPECT_EQ(h.depth, 32);
  EXPECT_EQ(h.num_patches(), 256);
  auto t = model::vit_config("vit_tiny_patch4_28");
  EXPECT_EQ(t.num_patches(), 49);
  EXPECT_THROW(model::vit_config("vit_gigantic_patch16_224"), std::invalid_argument);
  EXPECT_THROW(model::vit_config("resnet50"), std::invalid_argument);
}

TEST(DropPath, ScalesKeptSamplesInFp32UnderBf16) {
  // keep = 0.9: 1/keep = 1.1111111 is not a bf16 number (bf16 would give 1.109375, 0.16% off). The kept
  // samples of a bf16 branch are scaled in fp32, and the result is fp32 (the residual stream's dtype).
  auto x = at::ones({64, 2, 3}, at::kBFloat16);
  auto gen = core::derive_generator(0, core::RngPurpose::kStep, 0);
  auto y = model::drop_path(x, 0.1, &gen);
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  auto per_sample = y.select(2, 0).select(1, 0);  // [64]
  int kept = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const float v = per_sample[i].item<float>();
    if (v == 0.0f) continue;
    ++kept;
    EXPECT_FLOAT_EQ(v, static_cast<float>(1.0 / 0.9));
  }
  EXPECT_GT(kept, 40);
  EXPECT_LT(kept, 64);
  // Eval mode (no generator) is the identity.
  EXPECT_TRUE(model::drop_path(x, 0.1, nullptr).is_same(x));
}
