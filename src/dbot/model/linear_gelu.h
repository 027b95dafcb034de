// linear_gelu: the MLP's first half, GELU(x W^T + b) with the exact (erf) GELU, as one autograd function on the
// CPU in fp32 (outside autocast) and in bf16 (under CPU bf16 autocast), on both LibTorch builds. LibTorch runs it
// as addmm (which first copies the bias into its output), a GELU pass, and in backward a GELU-backward pass that
// evaluates erf and exp a second time, then a pass summing the bias gradient. Here the product runs without the
// bias, and one pass adds the (fp32) bias and writes GELU(z) and, where autograd will need it, GELU'(z) = Phi(z) +
// z phi(z) into the product's own buffer (one exp serves both: erf's and phi's; in bf16 each computed in fp32 and
// rounded once). Backward is then one pass (dz = g GELU'(z) and the bias gradient's column sums) and two products. The
// pass is AVX2 + FMA, on CPUs that have them (checked at run time), split over LibTorch's threads (core::parallel_for).
// Everything else (no AVX2, CUDA, fp16 autocast, no bias) takes at::gelu(at::linear(x, w, b)). The other Linears
// take model::linear below, which under bf16 autocast shares the backward's pass for its bias gradient.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace dbot::model {

// GELU(x W^T + b): x [..., in], weight [hidden, in], bias [hidden] -> [..., hidden].
at::Tensor linear_gelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// x W^T + b (torch.nn.functional.linear) for every other Linear with a bias: under CPU bf16 autocast where autograd
// records it (and linear_gelu's fused path applies), one autograd function whose backward sums the bias gradient in
// fp32 in one pass (detail::column_sums) instead of LibTorch's sum in bf16 and a cast to the fp32 bias; its forward
// and other gradients are autocast's. Elsewhere (fp32, no autograd: the teacher, evaluation; CUDA; fp16) at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// Whether linear_gelu(x, weight, bias) takes the fused CPU path, and linear its autograd function where autograd
// records (for the tests and the benchmark).
bool fused_linear_gelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

namespace detail {
// The fused pass over [rows, cols] row-major: z = h + bias[col]; out = z Phi(z); dgelu = GELU'(z) where dgelu is
// not null. out and dgelu may be h itself (each element is read before it is written). simd: the AVX2 + FMA
// loop (only where core::cpu_has_avx2_fma()), else the same formula in plain C++ (the AVX2 loop's row tails; exposed so
// that the tests check both). The bf16 form computes in fp32 and rounds each output to nearest even.
void bias_gelu(const float* h, const float* bias, float* out, float* dgelu, int64_t rows, int64_t cols, bool simd);
void bias_gelu(const c10::BFloat16* h, const float* bias, c10::BFloat16* out, c10::BFloat16* dgelu, int64_t rows,
               int64_t cols, bool simd);

// Backward's pass: g and dgelu [rows, cols], contiguous, both fp32 or both bf16 -> {dz, db}: dz = g dgelu in their
// dtype (rounded once, as LibTorch's multiply rounds) and db [cols] fp32, the column sums of dz, in one read of g and
// dgelu (blocks of kGradBlockRows rows summed in order in fp32, then the blocks' sums). simd as for bias_gelu.
constexpr int64_t kGradBlockRows = 64;
std::pair<at::Tensor, at::Tensor> gelu_grad(const at::Tensor& g, const at::Tensor& dgelu, bool simd);
// The same pass without the multiply: g [rows, cols] contiguous, fp32 or bf16 -> its column sums [cols] in fp32
// (model::linear's bias gradient).
at::Tensor column_sums(const at::Tensor& g, bool simd);
}  // namespace detail

}  // namespace dbot::model
