// model::layer_norm: the one-pass forward and backward (both the AVX2 loop and the plain one) against LayerNorm's
// formula in fp64, a hand-checked row, every row length around the 8-wide blocks and row counts across the 64-row
// blocks of the column sums; the autograd function's output and gradients against at::layer_norm's; which path runs;
// and bad operands.
#include <torch/csrc/autograd/autograd.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <vector>

#include "dbot/compat.h"
#include "dbot/model/layer_norm.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;
using dbot::test::close_to_scale;

namespace {
// Rows of unit-size values around row-dependent offsets (up to 50: the mean matters), weight and bias, and an output
// gradient.
struct NormOperands {
  at::Tensor x, w, b, g;
};
NormOperands norm_operands(int64_t rows, int64_t n) {
  const auto i = at::arange(rows * n, at::kDouble).view({rows, n});
  const auto offset = at::arange(rows, at::kDouble).view({rows, 1}).mul(7.3).remainder(100.0).sub(50.0);
  return {(at::sin(i * 0.71 + 0.2) * 2.0 + offset).to(at::kFloat),
          (1.0 + 0.5 * at::cos(at::arange(n, at::kDouble) * 1.3)).to(at::kFloat),
          (0.2 * at::sin(at::arange(n, at::kDouble) * 0.9)).to(at::kFloat), at::cos(i * 0.43 + 0.5).to(at::kFloat)};
}
struct NormReference {
  at::Tensor y, dx, dw, db;
};
NormReference reference64(const NormOperands& o, double eps) {
  const auto x = o.x.to(at::kDouble), w = o.w.to(at::kDouble), g = o.g.to(at::kDouble);
  const auto mean = x.mean(-1, true), var = (x - mean).pow(2).mean(-1, true);
  const auto xh = (x - mean) / (var + eps).sqrt(), gw = g * w;
  const auto dx = (gw - gw.mean(-1, true) - xh * (gw * xh).mean(-1, true)) / (var + eps).sqrt();
  return {xh * w + o.b.to(at::kDouble), dx, (g * xh).sum(0), g.sum(0)};
}
}  // namespace

// x = (1, 2, 3, 4, 5): mean 3, biased variance 2, so xh = (-2, -1, 0, 1, 2) / sqrt(2 + eps); weight 2, bias 1 give
// y = 1 + 2 xh: (-1.828427, -0.414214, 1, 2.414214, 3.828427) for eps 0.
TEST(LayerNorm, HandCheckedRow) {
  const auto x = at::arange(1, 6, at::kFloat).view({1, 5});
  for (const bool simd : test::simd_choices()) {
    const auto f = model::detail::layer_norm_forward(x, at::full({5}, 2.0f), at::ones({5}), 0.0, simd);
    const float expected[] = {-1.8284271f, -0.4142136f, 1.0f, 2.4142136f, 3.8284271f};
    for (int i = 0; i < 5; ++i) EXPECT_NEAR(f.y[0][i].item<float>(), expected[i], 2e-6) << i << " " << simd;
    EXPECT_FLOAT_EQ(f.mean[0].item<float>(), 3.0f) << simd;
    EXPECT_NEAR(f.rstd[0].item<float>(), 1.0 / std::sqrt(2.0), 1e-7) << simd;
  }
}

// Row lengths 1-33 (a 1-8 element masked tail after 0-3 blocks) and the models' 64, 128, 192 and 384; 3 rows, and
// 130 rows (three 64-row blocks of the column sums, the last partial) at two lengths. Against fp64, each output's
// error (largest |difference| over the largest |value|) within twice LibTorch's own fp32 LayerNorm's + 1e-6: rows
// offset by up to 50 with a spread of ~2 lose up to ~1e-5 of y's scale to fp32 in any order of summation.
TEST(LayerNorm, MatchesFp64AsCloselyAsLibTorch) {
  const auto error = [](const at::Tensor& a, const at::Tensor& e) {
    return (a.to(at::kDouble) - e).abs().max().item<double>() / std::max(e.abs().max().item<double>(), 1e-30);
  };
  std::vector<std::pair<int64_t, int64_t>> shapes{{130, 17}, {130, 128}};
  for (int64_t n = 2; n <= 33; ++n) shapes.push_back({3, n});
  for (const int64_t n : {64, 128, 192, 384}) shapes.push_back({3, n});
  for (const bool simd : test::simd_choices()) {
    for (const auto& [rows, n] : shapes) {
      const auto o = norm_operands(rows, n);
      const double eps = 1e-6;
      const auto ref = reference64(o, eps);
      const auto [ly, lmean, lrstd] = at::native_layer_norm(o.x, {n}, o.w, o.b, eps);
      const auto [ldx, ldw, ldb] =
          at::native_layer_norm_backward(o.g, o.x, {n}, lmean, lrstd, o.w, o.b, {true, true, true});
      const auto f = model::detail::layer_norm_forward(o.x, o.w, o.b, eps, simd);
      const auto d = model::detail::layer_norm_backward(o.g, o.x, o.w, f.mean, f.rstd, simd);
      const std::string what = std::to_string(rows) + "x" + std::to_string(n) + " simd " + std::to_string(simd);
      EXPECT_LE(error(f.y, ref.y), 2.0 * error(ly, ref.y) + 1e-6) << what;
      EXPECT_LE(error(d.dx, ref.dx), 2.0 * error(ldx, ref.dx) + 1e-6) << what;
      EXPECT_LE(error(d.dweight, ref.dw), 2.0 * error(ldw, ref.dw) + 1e-6) << what;
      EXPECT_LE(error(d.dbias, ref.db), 2.0 * error(ldb, ref.db) + 1e-6) << what;
    }
  }
}

// One element per row: y is the bias, and dx and the weight's gradient are 0 (x - mean = 0 exactly).
TEST(LayerNorm, OneElementRows) {
  const auto o = norm_operands(5, 1);
  for (const bool simd : test::simd_choices()) {
    const auto f = model::detail::layer_norm_forward(o.x, o.w, o.b, 1e-6, simd);
    EXPECT_TRUE(at::equal(f.y, o.b.expand({5, 1}))) << simd;
    const auto d = model::detail::layer_norm_backward(o.g, o.x, o.w, f.mean, f.rstd, simd);
    EXPECT_TRUE(at::equal(d.dx, at::zeros({5, 1}))) << simd;
    EXPECT_TRUE(at::equal(d.dweight, at::zeros({1}))) << simd;
    EXPECT_TRUE(all_close(d.dbias, o.g.sum(0), 1e-6, 0.0)) << simd;
  }
}

// The kernel's autograd function and the module path: output and the gradients of x, weight and bias against
// at::layer_norm through autograd, on a [N, T, D] input as the blocks give it (a strided slice, as take_rows' callers
// may), with and without autograd. Both sides are fp32 with their own rounding (their distance to fp64 is the test
// above), so within 1e-4 of scale: this checks the wiring (shapes, strides, which gradient goes where), where a mistake
// is off by O(1).
TEST(LayerNorm, ModuleMatchesAtLayerNorm) {
  torch::nn::LayerNorm ln(torch::nn::LayerNormOptions({64}).eps(1e-6));
  const auto o = norm_operands(4 * 18, 64);
  {
    torch::NoGradGuard no_grad;
    ln->weight.copy_(o.w);
    ln->bias.copy_(o.b);
  }
  const auto x = o.x.view({4, 18, 64}).slice(1, 0, 18, 2);  // [4, 9, 64], not contiguous
  const auto g = o.g.view({4, 18, 64}).slice(1, 0, 18, 2).contiguous();
  EXPECT_EQ(model::fused_layer_norm(x, ln->weight, ln->bias),
            core::cpu_has_avx2_fma() && !compat::has_fast_cpu_layer_norm());
  const auto xa = x.clone().requires_grad_(), xb = x.clone().requires_grad_();
  // The kernel's autograd function on either LibTorch (the module takes it on 1.x only).
  const auto ya = core::cpu_has_avx2_fma() ? model::detail::layer_norm_kernel(xa, ln->weight, ln->bias, 1e-6)
                                           : model::layer_norm(ln, xa);
  torch::autograd::backward({ya}, {g});
  const auto dwa = ln->weight.grad().clone(), dba = ln->bias.grad().clone();
  ln->weight.mutable_grad().reset();
  ln->bias.mutable_grad().reset();
  const auto yb = at::layer_norm(xb, {64}, ln->weight, ln->bias, 1e-6);
  torch::autograd::backward({yb}, {g});
  EXPECT_TRUE(all_close(ya, yb, 1e-4, 1e-4));
  EXPECT_TRUE(close_to_scale(xa.grad(), xb.grad(), 1e-4));
  EXPECT_TRUE(close_to_scale(dwa, ln->weight.grad(), 1e-4));
  EXPECT_TRUE(close_to_scale(dba, ln->bias.grad(), 1e-4));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(all_close(model::layer_norm(ln, x), yb, 1e-4, 1e-4));
  EXPECT_FALSE(model::fused_layer_norm(x.to(at::kBFloat16), ln->weight, ln->bias));
  EXPECT_FALSE(model::fused_layer_norm(x.slice(2, 0, 32), ln->weight, ln->bias));
}

TEST(LayerNorm, RefusesOperandsItCannotUse) {
  const auto o = norm_operands(3, 8);
  for (const bool simd : test::simd_choices()) {
    EXPECT_THROW(model::detail::layer_norm_forward(o.x.t(), o.w, o.b, 1e-6, simd), std::invalid_argument);
    EXPECT_THROW(model::detail::layer_norm_forward(o.x, o.w.slice(0, 0, 4), o.b, 1e-6, simd), std::invalid_argument);
    EXPECT_THROW(model::detail::layer_norm_forward(o.x.to(at::kDouble), o.w, o.b, 1e-6, simd), std::invalid_argument);
    const auto f = model::detail::layer_norm_forward(o.x, o.w, o.b, 1e-6, simd);
    EXPECT_THROW(model::detail::layer_norm_backward(o.g.slice(0, 0, 2), o.x, o.w, f.mean, f.rstd, simd),
                 std::invalid_argument);
  }
}
