// ViT components against the independent PyTorch/timm reference (tests/reference/make_golden.py).
#include <cmath>

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

// take_rows(x, rows)[n, r] is x[n, rows[n, r]], checked element by element, on a transposed (non-contiguous) x and
// in bf16; a row taken twice gets both gradients and a row not taken gets 0.
TEST(VisionTransformer, TakeRowsIsXAtThoseRows) {
  const auto x = at::arange(2 * 4 * 3, at::kFloat).view({2, 3, 4}).transpose(1, 2);  // [2, 4, 3], x[n,t,d] = 12n+4d+t
  ASSERT_FALSE(x.is_contiguous());
  const auto rows = at::tensor({3, 0, 3, 1, 2, 1}, at::kLong).view({2, 3});
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto out = model::take_rows(x.to(dtype), rows).to(at::kFloat);
    ASSERT_EQ(out.sizes(), (at::IntArrayRef{2, 3, 3}));
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t d = 0; d < 3; ++d)
          EXPECT_EQ(out[n][r][d].item<float>(), 12 * n + 4 * d + rows[n][r].item<int64_t>()) << n << r << d;
  }
  const auto leaf = at::zeros({2, 4, 3}).requires_grad_();
  model::take_rows(leaf, rows).sum().backward();
  const auto times_taken = at::tensor({1.f, 0.f, 0.f, 2.f, 0.f, 2.f, 1.f, 0.f}).view({2, 4, 1});
  const auto expected = times_taken.expand({2, 4, 3});
  EXPECT_TRUE(leaf.grad().equal(expected));
}

// BlockImpl::forward_rows is forward at those tokens: the same values with the same drop-path draws, and the same
// gradients for the input and every parameter. Rows may repeat (a token taken twice gets both gradients).
TEST(VisionTransformer, BlockAtSomeRowsIsTheBlockAtThoseRows) {
  auto init = compat::make_cpu_generator(1);
  model::Block block(16, 2, 4.0, 0.3);
  {
    at::NoGradGuard no_grad;
    model::init_block(block, init);
    for (auto& p : block->parameters()) p.add_(at::randn(p.sizes(), init), 0.1);  // nonzero biases, LN affine
  }
  const auto x = at::randn({3, 9, 16}, init).requires_grad_();
  const auto rows = at::tensor({0, 4, 7, 2, 0, 8, 1, 1, 5}, at::kLong).view({3, 3});
  const auto weights = at::randn({3, 3, 16}, init);
  // With drop path (the composition x + dp(l(h))) and without it (eval: BlockImpl::residual's one addmm_ in fp32).
  auto run = [&](bool full, bool drop) {
    x.mutable_grad().reset();
    for (auto& p : block->parameters()) p.mutable_grad().reset();
    auto gen = compat::make_cpu_generator(5);
    at::Generator* g = drop ? &gen : nullptr;
    const auto out = full ? model::take_rows(block->forward(x, g), rows) : block->forward_rows(x, rows, g);
    (out * weights).sum().backward();
    std::vector<at::Tensor> r{out.detach(), x.grad().clone()};
    for (auto& p : block->parameters()) r.push_back(p.grad().clone());
    return r;
  };
  for (const bool drop : {true, false}) {
    const auto full = run(true, drop), part = run(false, drop);
    ASSERT_EQ(part[0].sizes(), (at::IntArrayRef{3, 3, 16}));
    for (size_t i = 0; i < full.size(); ++i)
      EXPECT_TRUE(test::close_to_scale(part[i], full[i], 1e-5)) << "tensor " << i << ", drop path " << drop;
  }
  // Drop path drew: some sample's branches were dropped in both runs alike (rate 0.3, seed 5: checked nonzero).
  auto gen = compat::make_cpu_generator(5);
  EXPECT_FALSE(block->forward(x, &gen).equal(block->forward(x, nullptr)));
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

namespace {
// The ViT written as the plain composition of LibTorch ops, as the official code and timm 0.4.12 compose them:
// the stride-p convolution, F.linear (at::linear: under autocast the bias is rounded to bf16 as well), three
// selects of qkv, (q k^T) * scale -> softmax -> @ v. model/vit.cpp computes the same with its faster forms
// (patch GEMM, unbind, the attention kernel chosen by length); this is what they must agree with.
at::Tensor plain_forward_features(model::VisionTransformerImpl& m, const at::Tensor& imgs) {
  auto lin = [](const torch::nn::Linear& l, const at::Tensor& t) { return at::linear(t, l->weight, l->bias); };
  auto ln = [](const torch::nn::LayerNorm& n, const at::Tensor& t) {
    return at::layer_norm(t, {t.size(-1)}, n->weight, n->bias, n->options.eps());
  };
  const auto& pe = m.patch_embed->proj;
  auto x = at::conv2d(imgs, pe->weight, pe->bias, m.cfg.patch_size).flatten(2).transpose(1, 2);
  x = x + m.pos_embed.slice(1, 1);
  x = at::cat({(m.cls_token + m.pos_embed.slice(1, 0, 1)).expand({x.size(0), -1, -1}), x}, 1);
  const int64_t N = x.size(0), T = x.size(1), D = x.size(2), H = m.cfg.num_heads;
  for (auto& b : m.blocks.blocks) {
    auto qkv = lin(b->attn->qkv, ln(b->norm1, x)).reshape({N, T, 3, H, D / H}).permute({2, 0, 3, 1, 4});
    auto attn = at::softmax(at::matmul(qkv[0], qkv[1].transpose(-2, -1)) * std::pow(D / H, -0.5), -1);
    x = x + lin(b->attn->proj, at::matmul(attn, qkv[2]).transpose(1, 2).reshape({N, T, D}));
    x = x + lin(b->mlp->fc2, at::gelu(lin(b->mlp->fc1, ln(b->norm2, x))));
  }
  return ln(m.norm, x);
}

// A scalar of the output with fixed weights, its value and every parameter's gradient.
std::pair<at::Tensor, std::map<std::string, at::Tensor>> loss_and_grads(
    model::VisionTransformerImpl& m, const std::function<at::Tensor(const at::Tensor&)>& forward,
    const at::Tensor& imgs, at::ScalarType autocast_dtype) {
  for (auto& p : m.parameters()) p.mutable_grad().reset();
  at::Tensor loss;
  {
    compat::AutocastGuard autocast(at::kCPU, autocast_dtype);
    const auto out = forward(imgs).to(at::kFloat);
    loss = (out * at::linspace(-1.0, 1.0, out.numel()).view(out.sizes())).sum();
  }
  loss.backward();
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : m.named_parameters(true)) grads[p.key()] = p.value().grad().clone();
  return {loss.detach(), grads};
}
}  // namespace

// The fast forms compute the same loss and gradients as the plain composition. In fp32 both are held to the plain
// composition in fp64 (the model converted): the fast form's error, the largest |difference| over the tensor's
// largest |value|, within twice the plain fp32 composition's + 5e-6. Each sums in its own order (dbot's softmax and
// exp, LibTorch 2.x's fused kernel with its blocked online softmax), and comparing the two fp32 forms with each other
// charged the plain one's error to the fast one: measured on Zen 3 (PyPI 2.15), blocks.1.norm1.bias at 17 tokens
// is 8.75e-6 of scale from fp64 in the plain form and 1.9e-6 in the fast one; the worst tensors at 145 tokens are
// 2.1e-5 in both.
// Under bf16 autocast both differ from the fp32 values by bf16's rounding (8 mantissa bits), by a few % in the
// 2-norm with LibTorch 2.x and by up to ~40% for some gradients of this 16-wide network with 1.13, whose CPU
// autocast rounds more: the fast forms' error must stay within 2x the plain composition's + 0.1 (a wrong formula,
// such as a patch order or a lost bias, is off by O(1) in fp32 already). Two sequence lengths: 17 tokens (the
// explicit attention on the CPU) and 145 (the fused kernel where LibTorch has it, except for bf16 with autograd).
TEST(VisionTransformer, FastFormsMatchThePlainComposition) {
  const auto error = test::relative_error;
  for (const int64_t img : {8, 24}) {
    auto cfg = test::tiny_vit();
    cfg.img_size = img;  // patch 2: 16 or 144 patches
    model::VisionTransformer vit(cfg);
    test::fill_parameters(*vit);
    const auto imgs = at::sin(at::arange(2 * 3 * img * img, at::kFloat).view({2, 3, img, img}) * 0.37);
    auto fast = [&](const at::Tensor& x) { return vit->forward_features(x, true); };
    auto plain = [&](const at::Tensor& x) { return plain_forward_features(*vit, x); };
    model::VisionTransformer vit64(cfg);
    test::fill_parameters(*vit64);
    vit64->to(at::kDouble);
    auto plain64 = [&](const at::Tensor& x) { return plain_forward_features(*vit64, x); };
    const auto reference = loss_and_grads(*vit64, plain64, imgs.to(at::kDouble), at::kFloat);
    const auto plain32 = loss_and_grads(*vit, plain, imgs, at::kFloat);
    const auto fast32 = loss_and_grads(*vit, fast, imgs, at::kFloat);
    const auto plain16 = loss_and_grads(*vit, plain, imgs, at::kBFloat16);
    const auto fast16 = loss_and_grads(*vit, fast, imgs, at::kBFloat16);
    const auto scaled_error = [](const at::Tensor& a, const at::Tensor& e) {
      return (a.to(at::kDouble) - e).abs().max().item<double>() / std::max(e.abs().max().item<double>(), 1e-30);
    };
    const auto expect_fp32_close = [&](const at::Tensor& f, const at::Tensor& p, const at::Tensor& e,
                                       const std::string& what) {
      EXPECT_LE(scaled_error(f, e), 2.0 * scaled_error(p, e) + 5e-6) << what << ", img " << img;
    };
    expect_fp32_close(fast32.first, plain32.first, reference.first, "loss");
    EXPECT_LE(error(fast16.first, reference.first), 2.0 * error(plain16.first, reference.first) + 0.1) << img;
    for (const auto& [name, g] : reference.second) {
      expect_fp32_close(fast32.second.at(name), plain32.second.at(name), g, name);
      const double e_fast = error(fast16.second.at(name), g), e_plain = error(plain16.second.at(name), g);
      EXPECT_LE(e_fast, 2.0 * e_plain + 0.1) << name << ", img " << img;
    }
    // Without autograd (the frozen teacher, evaluation) the CPU takes the fused kernel at 145 tokens in bf16 too,
    // where with autograd it takes the explicit one: the output's bf16 error stays that of the plain composition.
    at::NoGradGuard no_grad;
    const auto out32 = plain(imgs);
    compat::AutocastGuard autocast(at::kCPU, at::kBFloat16);
    const double e_fast = error(fast(imgs).to(at::kFloat), out32), e_plain = error(plain(imgs).to(at::kFloat), out32);
    EXPECT_LE(e_fast, 2.0 * e_plain + 0.01) << "no-grad output, img " << img;
  }
}
