// layer_norm: the ViT's LayerNorms (timm's nn.LayerNorm over the last dimension, with weight and bias) on the CPU in
// fp32 as one autograd function whose forward and backward are one AVX2 + FMA pass per row each. LibTorch runs a
// moments pass and an apply pass forward, and backward a pass for dx and separate column reductions for the weight's
// and bias's gradients; here the moments stay in registers, and backward computes dx and the column sums (blocks of
// kNormBlockRows rows, summed in a fixed order for any thread count) while reading g and x once. Results agree with
// at::layer_norm within fp32 rounding, not bit for bit. It applies to fp32 inputs on CPUs with AVX2 + FMA, inside and
// outside autocast (autocast runs layer_norm in fp32 too), under LibTorch 1.x, whose own kernel it beats by 1.1-1.8x;
// LibTorch 2.x's is as fast (compat::has_fast_cpu_layer_norm). Elsewhere (2.x, CUDA, other dtypes, no AVX2) the
// module's own forward.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>

namespace dbot::model {

// ln(x): x [..., D], ln over D with ln's weight, bias and eps.
at::Tensor layer_norm(const torch::nn::LayerNorm& ln, const at::Tensor& x);
// at::layer_norm(x, {D}, weight, bias, eps) with weight and bias [D].
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);

// Whether layer_norm takes the fused CPU path for x and the module's weight (for the tests and the benchmark).
bool fused_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

namespace detail {
constexpr int64_t kNormBlockRows = 64;

struct NormForward {
  at::Tensor y, mean, rstd;  // [rows, D], [rows], [rows]
};
// x [rows, D] contiguous fp32, weight and bias [D] fp32: y = (x - mean) rstd weight + bias with mean and
// rstd = 1 / sqrt(var + eps) per row (var: the biased variance). simd: the AVX2 + FMA loop (only where
// core::cpu_has_avx2_fma()), else the same formula in plain C++ (exposed so that the tests check both).
NormForward layer_norm_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps,
                               bool simd);

struct NormGrads {
  at::Tensor dx, dweight, dbias;  // [rows, D], [D], [D]
};
// From g = dL/dy [rows, D] and the forward's x, mean and rstd: with xh = (x - mean) rstd and gw = g weight,
// dx = rstd (gw - mean(gw) - xh mean(gw xh)) per row, dweight = sum over rows of g xh, dbias = sum of g.
NormGrads layer_norm_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& mean, const at::Tensor& rstd, bool simd);

// layer_norm's kernel path (the autograd function where autograd records) whatever the LibTorch: fp32 CPU operands on
// a CPU with AVX2 + FMA (for bench_kernels, which times it against 2.x's LayerNorm too).
at::Tensor layer_norm_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps);
}  // namespace detail

}  // namespace dbot::model
