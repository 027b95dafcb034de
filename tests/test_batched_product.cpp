// model::scaled_bmm and bmm_out against fp64 products computed by LibTorch's bmm: every operand layout the
// attention passes (contiguous, the transposed k^T view, a strided slice), alpha, both gradients, a second
// derivative, empty sizes, and which kernel runs (the sgemm loop where the build found a BLAS to call).
#include <array>
#include <cmath>

#include "dbot/compat.h"
#include "dbot/model/batched_product.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::close_to_scale;

namespace {
// Hand-checkable, sign-changing values: sin(0.37 j + phase) over [B, rows, cols].
at::Tensor wave(int64_t B, int64_t rows, int64_t cols, double phase) {
  return at::sin(at::arange(B * rows * cols, at::kDouble).view({B, rows, cols}) * 0.37 + phase).to(at::kFloat);
}
// The operand [B, rows, cols] in one of three layouts with the same values: 0 contiguous, 1 a transposed view of a
// [B, cols, rows] tensor (the scores' k^T), 2 every other column of a [B, rows, 2 cols] tensor (neither layout:
// the kernel copies it).
at::Tensor in_layout(const at::Tensor& x, int layout) {
  if (layout == 1) return x.transpose(1, 2).contiguous().transpose(1, 2);
  if (layout == 2) return at::stack({x, at::zeros_like(x)}, -1).flatten(-2).slice(-1, 0, 2 * x.size(2), 2);
  return x;
}
}  // namespace

// fp32 sums of up to 32 unit-sized terms that cancel to ~0.04 at most: ~3e-6 of the result's scale from rounding,
// where a wrong layout or transpose is off by O(1).
TEST(BatchedProduct, MatchesFp64ProductsInEveryLayout) {
  const double alpha = 0.125, kTol = 1e-5;
  for (const auto& [n, k, m] : std::vector<std::array<int64_t, 3>>{{9, 32, 9}, {17, 16, 17}, {5, 1, 3}, {1, 7, 1}}) {
    for (int la = 0; la < 3; ++la) {
      for (int lb = 0; lb < 3; ++lb) {
        const auto a = in_layout(wave(6, n, k, 0.1), la).requires_grad_();
        const auto b = in_layout(wave(6, k, m, 0.9), lb).requires_grad_();
        const auto s = model::scaled_bmm(a, b, alpha);  // [6, n, m]
        const auto a64 = a.detach().to(at::kDouble), b64 = b.detach().to(at::kDouble);
        ASSERT_EQ(s.sizes(), at::IntArrayRef({6, n, m}));
        EXPECT_TRUE(close_to_scale(s.detach().to(at::kDouble), at::bmm(a64, b64) * alpha, kTol))
            << n << "x" << k << "x" << m << " layouts " << la << lb;
        const auto g = wave(6, n, m, 2.0);
        const auto grads = torch::autograd::grad({s}, {a, b}, {g});
        const auto g64 = g.to(at::kDouble);
        EXPECT_TRUE(close_to_scale(grads[0].to(at::kDouble), at::bmm(g64, b64.transpose(1, 2)) * alpha, kTol));
        EXPECT_TRUE(close_to_scale(grads[1].to(at::kDouble), at::bmm(a64.transpose(1, 2), g64) * alpha, kTol));
      }
    }
  }
}

// alpha * (a b) is the product's, not a read of its output: LibTorch 1.13's baddbmm with beta = 0 multiplied the
// uninitialized output by 0 for small matrices and gave NaN where freed memory held NaN. Freed NaN-filled blocks of
// the output's size come first, so a kernel that reads its output fails here.
TEST(BatchedProduct, IgnoresItsOutputsMemory) {
  for (const auto& [n, k, m] : std::vector<std::array<int64_t, 3>>{{3, 4, 3}, {5, 8, 5}, {17, 32, 17}}) {
    const auto a = wave(8, n, k, 0.0).requires_grad_();
    const auto b = wave(8, k, m, 1.0).requires_grad_();
    for (int round = 0; round < 5; ++round) {
      {  // many, so that the output's allocation gets one whatever the allocator's order
        std::vector<at::Tensor> poison;
        for (int i = 0; i < 64; ++i) poison.push_back(at::full({8, n, m}, NAN));
      }
      const auto s = model::scaled_bmm(a, b, 0.25);  // [8, n, m]
      const auto expected = at::bmm(a, b).detach() * 0.25;
      ASSERT_TRUE(close_to_scale(s.detach(), expected, 1e-6)) << n << "x" << k << "x" << m;
      const auto g = at::ones_like(s);
      const auto grads = torch::autograd::grad({s}, {a, b}, {g});
      EXPECT_TRUE(close_to_scale(grads[0], at::bmm(g, b.detach().transpose(1, 2)) * 0.25, 1e-6));
      EXPECT_TRUE(close_to_scale(grads[1], at::bmm(a.detach().transpose(1, 2), g) * 0.25, 1e-6));
      at::Tensor out = at::full({8, n, m}, NAN);
      model::bmm_out(out, a.detach(), b.detach());  // the GEMM floor's form: a NaN-filled output is overwritten
      EXPECT_TRUE(close_to_scale(out, expected * 4.0, 1e-6));
    }
  }
}

// With create_graph the gradients are themselves differentiable: d/da sum((dL/db)^2) through the BLAS backward
// equals LibTorch's own composition's.
TEST(BatchedProduct, SecondDerivative) {
  auto second = [](bool ours) {
    const auto a = wave(4, 5, 6, 0.3).requires_grad_();
    const auto b = wave(4, 6, 7, 1.3).requires_grad_();
    const auto s = ours ? model::scaled_bmm(a, b, 0.5) : at::bmm(a, b) * 0.5;
    const auto grad_b = torch::autograd::grad({s}, {b}, {wave(4, 5, 7, 2.3)}, /*retain_graph=*/true,
                                              /*create_graph=*/true)[0];
    return torch::autograd::grad({grad_b.pow(2).sum()}, {a})[0];
  };
  EXPECT_TRUE(close_to_scale(second(true), second(false), 1e-5));
}

TEST(BatchedProduct, EmptySizes) {
  const auto zero_k = model::scaled_bmm(at::ones({2, 3, 0}), at::ones({2, 0, 4}), 2.0);
  EXPECT_EQ(zero_k.sizes(), at::IntArrayRef({2, 3, 4}));
  EXPECT_EQ(zero_k.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(model::scaled_bmm(at::ones({0, 3, 5}), at::ones({0, 5, 4}), 2.0).sizes(), at::IntArrayRef({0, 3, 4}));
}

// The sgemm loop runs where the build found a BLAS (OpenBLAS or LibTorch's MKL: DBOT_EXPECT_BLAS_PRODUCT), for fp32 CPU
// operands outside autocast only; LibTorch's kernels everywhere else.
TEST(BatchedProduct, KernelChoice) {
  const auto a = wave(2, 3, 4, 0.0), b = wave(2, 4, 5, 0.0);
#ifdef DBOT_EXPECT_BLAS_PRODUCT
  EXPECT_TRUE(model::blas_batched_product(a, b));
  EXPECT_TRUE(model::blas_batched_product(a, b.transpose(1, 2).contiguous().transpose(1, 2)));
#else
  EXPECT_FALSE(model::blas_batched_product(a, b));
#endif
  EXPECT_FALSE(model::blas_batched_product(a.to(at::kBFloat16), b.to(at::kBFloat16)));
  EXPECT_FALSE(model::blas_batched_product(a.to(at::kDouble), b.to(at::kDouble)));
  EXPECT_FALSE(model::blas_batched_product(a, wave(2, 5, 5, 0.0)));  // mismatched: LibTorch's error
  {
    compat::AutocastGuard autocast(c10::kCPU, at::kBFloat16);
    EXPECT_FALSE(model::blas_batched_product(a, b));
  }
}
