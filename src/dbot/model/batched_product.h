// batched_product: the attention's two batched matrix products, alpha * (a b) for a [B, n, k], b [B, k, m] ->
// [B, n, m], with autograd. LibTorch 1.x runs a CPU fp32 bmm as one mm per matrix through its dispatcher (a
// select, a conj check and an mm per matrix: 1.5-2.0 ms for the demo's 512 small products, against 0.3-0.8 ms
// as a loop of cblas_sgemm calls split over the threads); where the build found OpenBLAS (CMake, LibTorch 1.x
// only) fp32 CPU products outside autocast take that loop, forward and backward. Everything else takes
// compat::scaled_bmm (LibTorch's own batched kernels).
#pragma once

#include <ATen/ATen.h>

namespace dbot::model {

// alpha * (a b): a [B, n, k], b [B, k, m] -> [B, n, m]. Either operand may be a transposed view (the scores'
// k^T): the kernel reads it in place.
at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double alpha = 1.0);

// out = a b into out [B, n, m] without autograd, by the kernel scaled_bmm would take: the batched products of
// `dbot bench step`'s GEMM floor.
void bmm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

// Whether scaled_bmm(a, b) takes the cblas_sgemm loop (for the tests and the benchmark's table).
bool blas_batched_product(const at::Tensor& a, const at::Tensor& b);

}  // namespace dbot::model
