// batched_product: the attention's batched matrix products, alpha * (a b) for a [B, n, k], b [B, k, m] ->
// [B, n, m], with autograd. Where the build can call the BLAS LibTorch runs on (CMake: OpenBLAS under LibTorch 1.x,
// the MKL that the PyPI wheel's libtorch_cpu exports under 2.x), fp32 CPU products outside autocast take a loop of
// sgemm calls split over the threads, forward and backward: LibTorch 1.x runs a CPU fp32 bmm as one mm per matrix
// through its dispatcher (a select, a conj check and an mm per matrix: 1.5-2.3 ms for the demo's 512 small
// products, against 0.4-0.8 ms as the loop), and the loop reads strided heads in place where LibTorch's bmm wants
// them copied. Everything else takes compat::scaled_bmm (LibTorch's own batched kernels). The loop itself (blas_gemm
// over MatrixBatch views) also serves model/explicit_attention, which reads the heads in place from the qkv
// projection's output.
#pragma once

#include <ATen/ATen.h>

namespace dbot::model {

// alpha * (a b): a [B, n, k], b [B, k, m] -> [B, n, m]. Either operand may be a transposed view (the scores'
// k^T): the kernel reads it in place.
at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double alpha = 1.0);

// out = a b into out [B, n, m] without autograd, by the kernel scaled_bmm would take: the batched products of
// `dbot bench step`'s GEMM floor.
void bmm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

// Whether scaled_bmm(a, b) takes the sgemm loop (for the tests and the benchmark's table).
bool blas_batched_product(const at::Tensor& a, const at::Tensor& b);

// Whether this build has the sgemm loop and may run it now: a BLAS found (an OpenMP or sequential OpenBLAS, or
// LibTorch's MKL) and CPU autocast off (autocast would have run LibTorch's product in bf16).
bool blas_loop_usable();

// fp32 matrices [batch0, batch1, rows, cols] in place, with any strides where one of the two matrix strides is
// 1 (BLAS reads the other as its leading dimension). matrix_batch views a [B0, B1, r, c] or [B, r, c] tensor
// (which must stay alive); t() is the transposed view of the same memory.
struct MatrixBatch {
  float* data = nullptr;
  int64_t batch0 = 1, batch1 = 1, rows = 0, cols = 0;
  int64_t stride0 = 0, stride1 = 0, row_stride = 0, col_stride = 0;
  MatrixBatch t() const;
};
MatrixBatch matrix_batch(const at::Tensor& x);
// Whether BLAS reads x's matrices in place (else copy it contiguous first).
bool blas_layout(const at::Tensor& x);

// c = alpha a b for every matrix of the batch (c row-major: its col_stride is 1), split over ATen's threads.
// Only where blas_loop_usable(); c need not be initialized (beta = 0: BLAS does not read it).
void blas_gemm(const MatrixBatch& a, const MatrixBatch& b, const MatrixBatch& c, double alpha);

}  // namespace dbot::model
