// model::linear_gelu: the fused bias + GELU + GELU' pass (both its AVX2 and its plain loop) against fp64 exact
// GELU and GELU' (std::erf), hand-checked values, non-finite inputs and row tails, its bf16 form against the fp32
// pass rounded by c10::BFloat16; backward's pass (dz and the bias gradient) against LibTorch's multiply and sum;
// and the whole function's output and gradients against the plain composition at::gelu(at::linear(x, W, b)) it
// replaces, in fp32 and under bf16 autocast, with and without autograd, and which path runs.
#include <cmath>
#include <limits>
#include <vector>

#include "dbot/compat.h"
#include "dbot/core/vector_clones.h"
#include "dbot/model/linear_gelu.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::close_to_scale;

namespace {
double gelu64(double z) { return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0))); }
double dgelu64(double z) {
  return 0.5 * (1.0 + std::erf(z / std::sqrt(2.0))) + z * std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI);
}

// Pre-activations across GELU's whole range, in 3 rows of 19 (a row tail after two 8-wide blocks), bias included.
struct Grid {
  std::vector<float> h, bias;
  int64_t rows = 3, cols = 19;
  float z(int64_t i) const { return h[i] + bias[i % cols]; }
};
Grid grid() {
  Grid g;
  for (int64_t c = 0; c < g.cols; ++c) g.bias.push_back(0.25f * static_cast<float>(c % 5) - 0.5f);
  for (int64_t i = 0; i < g.rows * g.cols; ++i) g.h.push_back(static_cast<float>(9.0 * std::sin(0.37 * i + 0.1)));
  return g;
}
// Smooth operands of linear_gelu, leaves needing gradients: x [N, T, in], W [hidden, in], b [hidden], and an output
// gradient g [N, T, hidden].
struct Operands {
  at::Tensor x, w, b, g;
};
Operands operands(int64_t N, int64_t T, int64_t in, int64_t hidden) {
  const auto wave = [](int64_t n, double f) { return at::sin(at::arange(n, at::kDouble) * f + 0.3).to(at::kFloat); };
  return {(2.0 * wave(N * T * in, 0.71)).view({N, T, in}).requires_grad_(),
          (0.5 * wave(hidden * in, 0.53)).view({hidden, in}).requires_grad_(),
          (0.3 * wave(hidden, 1.9)).requires_grad_(),
          at::cos(at::arange(N * T * hidden, at::kFloat).view({N, T, hidden}) * 0.43)};
}
}  // namespace

// GELU(0) = 0, GELU'(0) = 1/2; GELU(1) = Phi(1) = 0.8413447, GELU'(1) = Phi(1) + phi(1) = 1.0833155;
// GELU(-1) = -0.1586553, GELU'(-1) = Phi(-1) - phi(-1) = -0.0833155.
TEST(LinearGelu, HandCheckedValues) {
  const std::vector<float> h{0.0f, 1.0f, -1.0f, 0.5f, 0.0f, 1.0f, -1.0f, 0.5f, 0.0f, 1.0f}, bias(10, 0.0f);
  for (const bool simd : test::simd_choices()) {
    std::vector<float> out(10), d(10);
    model::detail::bias_gelu(h.data(), bias.data(), out.data(), d.data(), 1, 10, simd);
    for (const int i : {0, 4, 8}) {  // lanes of the vector block and the tail
      EXPECT_NEAR(out[i], 0.0f, 2e-7) << simd;
      EXPECT_NEAR(d[i], 0.5f, 2e-7) << simd;
    }
    for (const int i : {1, 5, 9}) {
      EXPECT_NEAR(out[i], 0.8413447f, 3e-7) << simd;
      EXPECT_NEAR(d[i], 1.0833155f, 3e-7) << simd;
    }
    EXPECT_NEAR(out[2], -0.1586553f, 3e-7) << simd;
    EXPECT_NEAR(d[2], -0.0833155f, 3e-7) << simd;
  }
}

// Against fp64 exact GELU: A&S 7.1.26 is within 1.5e-7 of erf, so Phi within 7.5e-8 plus fp32 rounding; the
// errors scale with |z|. A wrong coefficient, a missed bias column or a wrong branch is off by 1e-3 or more.
TEST(LinearGelu, PassMatchesExactGeluInFp64) {
  const auto g = grid();
  for (const bool simd : test::simd_choices()) {
    std::vector<float> out(g.h.size()), d(g.h.size());
    model::detail::bias_gelu(g.h.data(), g.bias.data(), out.data(), d.data(), g.rows, g.cols, simd);
    for (size_t i = 0; i < g.h.size(); ++i) {
      const double z = g.z(static_cast<int64_t>(i)), tol = 3e-7 * std::max(1.0, std::fabs(z));
      EXPECT_NEAR(out[i], gelu64(z), tol) << "z = " << z << (simd ? " avx2" : " plain");
      EXPECT_NEAR(d[i], dgelu64(z), tol) << "z = " << z << (simd ? " avx2" : " plain");
    }
    // In place over the input (as the function writes GELU' over the product), and without GELU'.
    auto inplace = g.h;
    model::detail::bias_gelu(inplace.data(), g.bias.data(), inplace.data(), nullptr, g.rows, g.cols, simd);
    EXPECT_EQ(inplace, out);
  }
}

// The tails of the range and non-finite values: the left tail within the same absolute bound (A&S bounds erf's
// absolute error: GELU(-8) = -5.1e-15 comes out 3% off, as exact as fp32 training needs), Phi exactly 0 or 1 past
// |z| ~ 13, NaN stays NaN, +inf gives +inf.
TEST(LinearGelu, TailsAndNonFiniteValues) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> h{-5.0f, -8.0f, -13.0f, -14.0f, 14.0f, 1e30f, -1e30f, 3.0f, inf, nan};
  const std::vector<float> bias(h.size(), 0.0f);
  for (const bool simd : test::simd_choices()) {
    std::vector<float> out(h.size()), d(h.size());
    model::detail::bias_gelu(h.data(), bias.data(), out.data(), d.data(), 1, static_cast<int64_t>(h.size()), simd);
    for (const int i : {0, 1, 2, 7}) {
      const double z = h[i];
      EXPECT_NEAR(out[i], gelu64(z), 3e-7 * std::fabs(z)) << "z = " << z << simd;
      EXPECT_NEAR(d[i], dgelu64(z), 3e-7 * std::fabs(z)) << "z = " << z << simd;
      EXPECT_LE(out[i], z > 0 ? z : 0.0) << simd;
    }
    EXPECT_EQ(out[3], 0.0f) << simd;
    EXPECT_EQ(d[3], 0.0f) << simd;
    EXPECT_EQ(out[4], 14.0f) << simd;
    EXPECT_EQ(d[4], 1.0f) << simd;
    EXPECT_EQ(out[5], 1e30f) << simd;
    EXPECT_EQ(d[5], 1.0f) << simd;
    EXPECT_EQ(out[6], 0.0f) << simd;
    EXPECT_EQ(d[6], 0.0f) << simd;
    EXPECT_EQ(out[8], inf) << simd;
    EXPECT_TRUE(std::isnan(out[9]) && std::isnan(d[9])) << simd;
  }
}

// The bf16 pass is the fp32 pass on the same (widened) inputs, each output rounded to nearest even as
// c10::BFloat16 rounds it, bit for bit. Past |z| ~ 13 GELU(z) is z, so ties can be placed: 256 + 1 = 257 lies halfway
// between bf16's 256 and 258 and goes to 256 (even), 259 to 260 and 518 to 520; truncating would give 256, 258 and
// 516, rounding halves away from zero 258. NaN stays NaN.
TEST(LinearGelu, Bf16PassIsTheFp32PassRoundedToNearestEven) {
  auto g = grid();
  const std::vector<std::pair<float, float>> ties{{256.0f, 1.0f}, {256.0f, 3.0f}, {512.0f, 6.0f}};
  for (size_t k = 0; k < ties.size(); ++k) {
    g.h[k] = ties[k].first;  // row 0, columns 0-2
    g.bias[k] = ties[k].second;
  }
  const size_t nan_block = static_cast<size_t>(g.cols) + 3, nan_tail = g.h.size() - 1;  // in a vector block, a tail
  g.h[nan_block] = g.h[nan_tail] = std::numeric_limits<float>::quiet_NaN();
  std::vector<c10::BFloat16> h16;
  for (const float v : g.h) h16.emplace_back(v);
  std::vector<float> widened(h16.begin(), h16.end());
  for (const bool simd : test::simd_choices()) {
    std::vector<float> out(g.h.size()), d(g.h.size());
    model::detail::bias_gelu(widened.data(), g.bias.data(), out.data(), d.data(), g.rows, g.cols, simd);
    std::vector<c10::BFloat16> out16(g.h.size()), d16(g.h.size());
    model::detail::bias_gelu(h16.data(), g.bias.data(), out16.data(), d16.data(), g.rows, g.cols, simd);
    for (size_t i = 0; i < g.h.size(); ++i) {
      EXPECT_EQ(out16[i].x, c10::BFloat16(out[i]).x) << "z = " << widened[i] + g.bias[i % g.cols] << simd;
      EXPECT_EQ(d16[i].x, c10::BFloat16(d[i]).x) << "z = " << widened[i] + g.bias[i % g.cols] << simd;
    }
    EXPECT_EQ(static_cast<float>(out16[0]), 256.0f) << simd;
    EXPECT_EQ(static_cast<float>(out16[1]), 260.0f) << simd;
    EXPECT_EQ(static_cast<float>(out16[2]), 520.0f) << simd;
    EXPECT_TRUE(std::isnan(static_cast<float>(out16[nan_block])) && std::isnan(static_cast<float>(out16[nan_tail])));
    auto inplace = h16;  // in place, as the function writes it
    model::detail::bias_gelu(inplace.data(), g.bias.data(), inplace.data(), nullptr, g.rows, g.cols, simd);
    for (size_t i = 0; i < g.h.size(); ++i) EXPECT_EQ(inplace[i].x, out16[i].x) << i << simd;
  }
}

// Backward's pass: dz is LibTorch's own g * GELU' (one multiply, rounded once: equal bit for bit, fp32 and bf16) and
// db the column sums of dz within fp32 summation's bound (68 terms' rounding: 1e-5 of the sum of |dz|; one row
// of 200 left out or counted twice is ~5e-3), at sizes across the 8-lane tails and the 64-row blocks, both loops.
TEST(LinearGelu, GradPassIsTheProductAndItsColumnSums) {
  const std::vector<std::pair<int64_t, int64_t>> sizes{{1, 1}, {3, 13}, {64, 8}, {65, 7}, {200, 520}};
  for (const bool simd : test::simd_choices()) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      at::manual_seed(3);
      for (const auto& [rows, cols] : sizes) {
        const auto g = at::randn({rows, cols}).to(dtype), d = (at::rand({rows, cols}) * 1.2 - 0.1).to(dtype);
        const auto [dz, db] = model::detail::gelu_grad(g, d, simd);
        EXPECT_EQ(dz.scalar_type(), dtype);
        EXPECT_TRUE(at::equal(dz, g * d)) << rows << "x" << cols << " " << dtype << " simd " << simd;
        ASSERT_EQ(db.scalar_type(), at::kFloat);
        const auto err = (db.to(at::kDouble) - dz.to(at::kDouble).sum(0)).abs();
        EXPECT_TRUE(err.le(dz.to(at::kDouble).abs().sum(0) * 1e-5).all().item<bool>())
            << rows << "x" << cols << " " << dtype << " simd " << simd << " worst " << err.max().item<double>();
        const auto sums = model::detail::column_sums(g, simd);  // the pass without the multiply
        EXPECT_TRUE((sums.to(at::kDouble) - g.to(at::kDouble).sum(0))
                        .abs()
                        .le(g.to(at::kDouble).abs().sum(0) * 1e-5)
                        .all()
                        .item<bool>())
            << rows << "x" << cols << " " << dtype << " simd " << simd;
      }
    }
    // By hand: 130 rows (two full blocks and a row) of 0.5 * 1 sum to 65 in every column.
    const auto [dz, db] = model::detail::gelu_grad(at::full({130, 11}, 0.5), at::ones({130, 11}), simd);
    EXPECT_TRUE(at::equal(db, at::full({11}, 65.0)));
  }
  EXPECT_THROW(model::detail::gelu_grad(at::ones({2, 3}), at::ones({2, 3}, at::kBFloat16), false),
               std::invalid_argument);
  EXPECT_THROW(model::detail::gelu_grad(at::ones({3, 2}).t(), at::ones({2, 3}), false), std::invalid_argument);
}

// The whole function against the composition it replaces, in fp32: output and the gradients of x, W and b, for a
// [N, T, in] input with a hidden width that is not a multiple of 8, with and without autograd.
TEST(LinearGelu, MatchesThePlainComposition) {
  const int64_t N = 3, T = 5, in = 12, hidden = 20;
  const auto [x, w, b, g] = operands(N, T, in, hidden);
  ASSERT_EQ(model::fused_linear_gelu(x, w, b), core::cpu_has_avx2_fma());
  const auto out = model::linear_gelu(x, w, b);
  const auto expected = at::gelu(at::linear(x, w, b));
  ASSERT_EQ(out.sizes(), at::IntArrayRef({N, T, hidden}));
  EXPECT_TRUE(close_to_scale(out, expected, 1e-6));
  const auto grads = torch::autograd::grad({out}, {x, w, b}, {g});
  const auto plain = torch::autograd::grad({expected}, {x, w, b}, {g});
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(close_to_scale(grads[i], plain[i], 1e-5)) << "input " << i;
  at::NoGradGuard no_grad;  // the teacher's path: the same numbers
  EXPECT_TRUE(at::equal(model::linear_gelu(x, w, b), out.detach()));
}

// Under bf16 autocast, against autocast's own composition (bf16 addmm then bf16 GELU): the output in bf16 and the
// gradients of the fp32 x, W and b in fp32, each within bf16's rounding of the composition, and both as close to
// the fp32 result. The no-grad path with W already in bf16 (the teacher's) gives the same numbers.
TEST(LinearGelu, MatchesTheAutocastCompositionInBf16) {
  const auto [x, w, b, g] = operands(4, 9, 24, 36);
  const auto exact = at::gelu(at::linear(x, w, b));
  const auto exact_grads = torch::autograd::grad({exact}, {x, w, b}, {g});
  compat::AutocastGuard autocast(c10::kCPU, at::kBFloat16);
  ASSERT_EQ(model::fused_linear_gelu(x, w, b), core::cpu_has_avx2_fma());
  const auto out = model::linear_gelu(x, w, b);
  const auto expected = at::gelu(at::linear(x, w, b));
  ASSERT_EQ(out.scalar_type(), at::kBFloat16);
  ASSERT_EQ(expected.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(close_to_scale(out.to(at::kFloat), expected.to(at::kFloat), 1e-2));
  EXPECT_TRUE(close_to_scale(out.to(at::kFloat), exact, 1e-2));
  const auto grads = torch::autograd::grad({out}, {x, w, b}, {g.to(at::kBFloat16)});
  const auto plain = torch::autograd::grad({expected}, {x, w, b}, {g.to(at::kBFloat16)});
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_EQ(grads[i].scalar_type(), at::kFloat) << "input " << i;
    EXPECT_TRUE(close_to_scale(grads[i], plain[i], 2e-2)) << "input " << i;
    EXPECT_TRUE(close_to_scale(grads[i], exact_grads[i], 2e-2)) << "input " << i;
  }
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(model::linear_gelu(x, w.to(at::kBFloat16), b), out.detach()));
}

// The fused path is CPU with an fp32 bias, fp32 outside autocast or fp32/bf16 under bf16 autocast, on a CPU with
// AVX2 + FMA; everything else is the plain composition, and the fused gradient is not differentiable again.
TEST(LinearGelu, PathChoiceAndNoSecondDerivative) {
  const auto x = at::randn({4, 6}), w = at::randn({8, 6}), b = at::randn({8});
  EXPECT_EQ(model::fused_linear_gelu(x, w, b), core::cpu_has_avx2_fma());
  EXPECT_FALSE(model::fused_linear_gelu(x.to(at::kBFloat16), w.to(at::kBFloat16), b));
  EXPECT_FALSE(model::fused_linear_gelu(x, w, at::Tensor()));
  {
    compat::AutocastGuard autocast(c10::kCPU, at::kBFloat16);
    EXPECT_EQ(model::fused_linear_gelu(x, w, b), core::cpu_has_avx2_fma());
    EXPECT_EQ(model::fused_linear_gelu(x.to(at::kBFloat16), w.to(at::kBFloat16), b), core::cpu_has_avx2_fma());
    EXPECT_FALSE(model::fused_linear_gelu(x, w, b.to(at::kBFloat16)));
  }
  const auto xr = x.clone().requires_grad_();
  const auto out = model::linear_gelu(xr, w, b);
  const auto gx = torch::autograd::grad({out.sum()}, {xr}, {}, /*retain_graph=*/true, /*create_graph=*/false)[0];
  EXPECT_TRUE(close_to_scale(gx, torch::autograd::grad({at::gelu(at::linear(xr, w, b)).sum()}, {xr})[0], 1e-5));
  if (model::fused_linear_gelu(x, w, b))
    EXPECT_THROW(torch::autograd::grad({out.sum()}, {xr}, {}, true, /*create_graph=*/true), std::exception);
}

// model::linear (every other Linear): under bf16 autocast and autograd on the CPU its own function, whose forward
// and dx, dW are autocast's linear and whose bias gradient is the fp32 column sums of the bf16 output gradient (the
// composition rounds its sum to bf16); in fp32 and without autograd at::linear itself.
TEST(LinearGelu, LinearIsAtLinearWithTheBiasGradientInFp32) {
  const auto [x, w, b, g] = operands(3, 5, 12, 20);
  const auto out = model::linear(x, w, b);
  const auto expected = at::linear(x, w, b);
  EXPECT_TRUE(at::equal(out, expected));
  const auto grads = torch::autograd::grad({out}, {x, w, b}, {g});
  const auto plain = torch::autograd::grad({expected}, {x, w, b}, {g});
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(at::equal(grads[i], plain[i])) << "input " << i;
  {
    compat::AutocastGuard autocast(c10::kCPU, at::kBFloat16);
    const auto out16 = model::linear(x, w, b);
    const auto expected16 = at::linear(x, w, b);
    ASSERT_EQ(out16.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(close_to_scale(out16.to(at::kFloat), expected16.to(at::kFloat), 1e-2));
    const auto g16 = g.to(at::kBFloat16);
    const auto grads16 = torch::autograd::grad({out16}, {x, w, b}, {g16});
    const auto plain16 = torch::autograd::grad({expected16}, {x, w, b}, {g16});
    for (size_t i = 0; i < grads16.size(); ++i) {
      EXPECT_EQ(grads16[i].scalar_type(), at::kFloat) << "input " << i;
      EXPECT_TRUE(close_to_scale(grads16[i], plain16[i], 2e-2)) << "input " << i;
      EXPECT_TRUE(close_to_scale(grads16[i], plain[i], 2e-2)) << "input " << i;
    }
    if (model::fused_linear_gelu(x, w, b)) {  // the bias gradient: g16's column sums in fp32; then no 2nd derivative
      EXPECT_TRUE(close_to_scale(grads16[2], g16.to(at::kFloat).reshape({-1, 20}).sum(0), 1e-6));
      const auto again = model::linear(x, w, b);
      EXPECT_THROW(torch::autograd::grad({again.sum()}, {b}, {}, true, /*create_graph=*/true), std::exception);
    }
  }
  at::NoGradGuard no_grad;  // the teacher's path: at::linear's own numbers
  EXPECT_TRUE(at::equal(model::linear(x, w, b), at::linear(x, w, b)));
  EXPECT_TRUE(at::equal(model::linear(x, w, at::Tensor()), at::linear(x, w, at::Tensor())));
}
