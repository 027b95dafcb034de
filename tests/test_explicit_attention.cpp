// model::explicit_attention against the plain fp64 composition written here from timm 0.4.12's Attention
// (reshape to (3, heads, hd), softmax(q k^T * hd^-0.5), attn @ v, heads side by side): output and the gradient
// of the packed qkv output, for contiguous and strided inputs, with and without autograd, and which kernel runs.
#include <array>
#include <cmath>

#include "dbot/compat.h"
#include "dbot/model/explicit_attention.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::close_to_scale;

namespace {
at::Tensor plain_attention(const at::Tensor& qkv_out, int64_t h) {  // [N, T, 3D] -> [N, T, D], any dtype
  const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
  const auto qkv = qkv_out.reshape({N, T, 3, h, D / h}).permute({2, 0, 3, 1, 4});
  const auto attn = at::softmax(at::matmul(qkv[0], qkv[1].transpose(-2, -1)) * std::pow(D / h, -0.5), -1);
  return at::matmul(attn, qkv[2]).transpose(1, 2).reshape({N, T, D});
}
// Sign-changing values of unit size: sin(0.61 j + 0.2) over [N, T, 3D].
at::Tensor packed_wave(int64_t N, int64_t T, int64_t D) {
  return at::sin(at::arange(N * T * 3 * D, at::kDouble).view({N, T, 3 * D}) * 0.61 + 0.2).to(at::kFloat);
}
}  // namespace

// Shapes of the demo (9 and 17 tokens, head width 32 and 16) and a one-token, one-head edge; the input as the qkv
// linear gives it (contiguous) and as a strided slice (every other token of a longer sequence).
TEST(ExplicitAttention, MatchesThePlainCompositionInFp64) {
  for (const auto& [N, T, D, h] : std::vector<std::array<int64_t, 4>>{{3, 9, 64, 2}, {2, 17, 64, 4}, {2, 1, 8, 1}}) {
    for (const bool strided : {false, true}) {
      const auto leaf = packed_wave(N, strided ? 2 * T : T, D).requires_grad_();
      const auto qkv_out = strided ? leaf.slice(1, 0, 2 * T, 2) : leaf;
      const auto out = model::explicit_attention(qkv_out, h);
      const auto x64 = qkv_out.detach().to(at::kDouble).requires_grad_();
      const auto expected = plain_attention(x64, h);
      ASSERT_EQ(out.sizes(), at::IntArrayRef({N, T, D}));
      // fp32 sums of up to 17 terms of unit size against fp64: ~1e-6 of scale; a wrong head or transpose is O(1).
      EXPECT_TRUE(close_to_scale(out.detach().to(at::kDouble), expected.detach(), 1e-5)) << N << "x" << T << "x" << D;
      const auto g = at::cos(at::arange(N * T * D, at::kDouble).view({N, T, D}) * 0.43);
      const auto grad = torch::autograd::grad({out}, {leaf}, {g.to(at::kFloat)})[0];
      const auto grad64 = torch::autograd::grad({expected}, {x64}, {g})[0];
      EXPECT_TRUE(close_to_scale((strided ? grad.slice(1, 0, 2 * T, 2) : grad).to(at::kDouble), grad64, 1e-5))
          << N << "x" << T << "x" << D << (strided ? " strided" : "");
      if (strided) EXPECT_EQ(grad.slice(1, 1, 2 * T, 2).abs().max().item<float>(), 0.0f);  // untouched tokens
      at::NoGradGuard no_grad;  // the no-autograd path (the teacher, evaluation) computes the same
      EXPECT_TRUE(at::equal(model::explicit_attention(qkv_out.detach(), h), out.detach()));
    }
  }
}

// The in-place BLAS kernel runs where the build found a BLAS (OpenBLAS or LibTorch's MKL), on fp32 CPU inputs outside
// autocast.
TEST(ExplicitAttention, KernelChoice) {
  const auto x = packed_wave(2, 5, 8);
#ifdef DBOT_EXPECT_BLAS_PRODUCT
  EXPECT_TRUE(model::blas_attention(x));
#else
  EXPECT_FALSE(model::blas_attention(x));
#endif
  EXPECT_FALSE(model::blas_attention(x.to(at::kBFloat16)));
  compat::AutocastGuard autocast(c10::kCPU, at::kBFloat16);
  EXPECT_FALSE(model::blas_attention(x));
}

// A second derivative: LibTorch's composition differentiates twice; the BLAS kernel says it cannot, never returns
// a gradient autograd cannot follow.
TEST(ExplicitAttention, SecondDerivativeWorksOrSaysItCannot) {
  const auto x = packed_wave(2, 5, 8).requires_grad_();
  const auto out = model::explicit_attention(x, 2);
  auto second = [&] {
    const auto g = torch::autograd::grad({out.pow(2).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    return torch::autograd::grad({g.pow(2).sum()}, {x})[0];
  };
  if (model::blas_attention(x)) {
    EXPECT_TRUE(test::contains(test::error_of([&] { second(); }), "no second derivative"));
  } else {
    const auto x64 = x.detach().to(at::kDouble).requires_grad_();
    const auto out64 = plain_attention(x64, 2);
    const auto g64 = torch::autograd::grad({out64.pow(2).sum()}, {x64}, {}, true, true)[0];
    EXPECT_TRUE(close_to_scale(second().to(at::kDouble), torch::autograd::grad({g64.pow(2).sum()}, {x64})[0], 1e-4));
  }
}
