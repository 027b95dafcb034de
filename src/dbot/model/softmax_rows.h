// softmax_rows: softmax over the last dimension of the attention maps [N, h, T, T], and its backward, in place, for
// the CPU's fp32 attention (explicit_attention's BLAS kernel). LibTorch's softmax runs rows of 9-65 elements at
// 0.2-1.3 Gelem/s on 2 cores (its vector loop is built for long rows: docs/PERFORMANCE.md); here each row is one pass
// of AVX2 + FMA (max, exp and sum, scale) with a masked tail, no temporary and no second buffer. The exp is
// core::avx2::exp_nonpositive (Cephes' polynomial, within 2 ulp of exp); the result agrees with at::softmax within
// fp32 rounding, not bit for bit. On CPUs without AVX2 + FMA, LibTorch's operations.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace dbot::model {

// s <- softmax(s, -1) in place: s contiguous fp32 CPU, any shape (rows = everything but the last dimension).
void softmax_rows_(at::Tensor& s);

// dp <- p * (dp - sum_j dp_j p_j) per row, in place: the gradient of the softmax's input from the gradient of its
// output dp and the output p (at::_softmax_backward_data(dp, p, -1)). p and dp contiguous fp32 CPU, one shape.
void softmax_backward_rows_(at::Tensor& dp, const at::Tensor& p);

namespace detail {
// The same over [rows, cols] row-major. simd: the AVX2 + FMA loop (only where core::cpu_has_avx2_fma()), else the
// same formula in plain C++ with std::exp (exposed so that the tests check both).
void softmax_rows(float* s, int64_t rows, int64_t cols, bool simd);
void softmax_backward_rows(float* dp, const float* p, int64_t rows, int64_t cols, bool simd);
}  // namespace detail

}  // namespace dbot::model
