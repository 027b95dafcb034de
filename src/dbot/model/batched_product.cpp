// batched_product: alpha * (a b) batched, by a cblas_sgemm loop where LibTorch's own bmm loops through its
// dispatcher (LibTorch 1.x, CPU fp32: DBOT_HAVE_OPENBLAS), else by compat::scaled_bmm. Contract: batched_product.h.
#include "dbot/model/batched_product.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <limits>

#include "dbot/compat.h"

#ifdef DBOT_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace dbot::model {
namespace {
#ifdef DBOT_HAVE_OPENBLAS
// OpenBLAS's threading (openblas_get_parallel): the loop below calls it from ATen's OpenMP threads, where an
// OpenMP OpenBLAS runs each call on the calling thread. A pthreads OpenBLAS would start its own threads from
// every one of them: such a build keeps LibTorch's bmm.
constexpr int kOpenBlasPthreads = 1;
// cblas_sgemm's sizes are int (OpenBLAS without USE_64BITINT).
bool fits_blas_int(std::initializer_list<int64_t> sizes) {
  return std::all_of(sizes.begin(), sizes.end(),
                     [](int64_t s) { return s >= 0 && s <= std::numeric_limits<int>::max(); });
}

// One operand's matrices as row-major BLAS reads them: as stored (ld = row stride) or transposed (a column-major
// view such as k^T: ld = column stride). Any other layout is copied contiguous first.
struct BlasOperand {
  at::Tensor storage;  // the operand, or its contiguous copy
  CBLAS_TRANSPOSE trans;
  int64_t ld, batch_stride;
};
BlasOperand blas_operand(const at::Tensor& x) {  // x [B, rows, cols]
  const int64_t rows = x.size(1), cols = x.size(2);
  if (x.stride(2) == 1 && x.stride(1) >= std::max<int64_t>(1, cols)) return {x, CblasNoTrans, x.stride(1), x.stride(0)};
  if (x.stride(1) == 1 && x.stride(2) >= std::max<int64_t>(1, rows)) return {x, CblasTrans, x.stride(2), x.stride(0)};
  return {x.contiguous(), CblasNoTrans, std::max<int64_t>(1, cols), rows * cols};
}

// out [B, n, m] (contiguous) = alpha * a [B, n, k] b [B, k, m]: one cblas_sgemm per matrix, the batch split over
// ATen's threads. beta = 0: BLAS does not read C then, so out may hold anything.
void blas_bmm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double alpha) {
  const int64_t batch = a.size(0), n = a.size(1), k = a.size(2), m = b.size(2);
  if (out.numel() == 0) return;
  if (k == 0) {
    out.zero_();
    return;
  }
  const auto A = blas_operand(a), B = blas_operand(b);
  const float* pa = A.storage.data_ptr<float>();
  const float* pb = B.storage.data_ptr<float>();
  float* pc = out.data_ptr<float>();
  // A task of at least ~64k multiply-adds: the demo's 9x32x9 products go ~20 to a task, ViT-S/16's 197x64x197 one.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (n * m * k));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      cblas_sgemm(CblasRowMajor, A.trans, B.trans, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                  static_cast<float>(alpha), pa + i * A.batch_stride, static_cast<int>(A.ld), pb + i * B.batch_stride,
                  static_cast<int>(B.ld), 0.0f, pc + i * n * m, static_cast<int>(m));
  });
}

at::Tensor blas_bmm(const at::Tensor& a, const at::Tensor& b, double alpha) {
  auto out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  blas_bmm_into(out, a, b, alpha);
  return out;
}

// d(alpha a b)/da = alpha g b^T, d/db = alpha a^T g: the same loop on transposed views (no copies). With
// create_graph the backward records LibTorch's differentiable product instead.
struct BlasBmm : torch::autograd::Function<BlasBmm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b,
                            double alpha) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["alpha"] = alpha;
    return blas_bmm(a, b, alpha);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const auto& g = grad_out[0];  // [B, n, m]
    const bool recorded = at::GradMode::is_enabled();
    auto product = [&](const at::Tensor& x, const at::Tensor& y) {
      return recorded ? compat::scaled_bmm(x, y, alpha) : blas_bmm(x, y, alpha);
    };
    at::Tensor grad_a, grad_b;
    if (ctx->needs_input_grad(0)) grad_a = product(g, saved[1].transpose(1, 2));  // [B, n, k]
    if (ctx->needs_input_grad(1)) grad_b = product(saved[0].transpose(1, 2), g);  // [B, k, m]
    return {grad_a, grad_b, at::Tensor()};
  }
};
#endif
}  // namespace

bool blas_batched_product(const at::Tensor& a, const at::Tensor& b) {
#ifdef DBOT_HAVE_OPENBLAS
  static const bool threads_fit = openblas_get_parallel() != kOpenBlasPthreads;
  auto plain_fp32_cpu = [](const at::Tensor& x) {
    return x.dim() == 3 && x.is_cpu() && x.layout() == at::kStrided && x.scalar_type() == at::kFloat && !x.is_neg();
  };
  return threads_fit && plain_fp32_cpu(a) && plain_fp32_cpu(b) && a.size(0) == b.size(0) && a.size(2) == b.size(1) &&
         !compat::autocast_enabled(c10::kCPU) &&
         fits_blas_int({a.size(1), a.size(2), b.size(2), a.stride(1), a.stride(2), b.stride(1), b.stride(2)});
#else
  return false;
#endif
}

at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double alpha) {
#ifdef DBOT_HAVE_OPENBLAS
  if (blas_batched_product(a, b)) {
    if (at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) return BlasBmm::apply(a, b, alpha);
    return blas_bmm(a, b, alpha);
  }
#endif
  return compat::scaled_bmm(a, b, alpha);
}

void bmm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
#ifdef DBOT_HAVE_OPENBLAS
  if (blas_batched_product(a, b) && out.is_contiguous() && out.scalar_type() == at::kFloat &&
      out.sizes() == at::IntArrayRef({a.size(0), a.size(1), b.size(2)})) {
    blas_bmm_into(out, a, b, 1.0);
    return;
  }
#endif
  at::bmm_out(out, a, b);
}

}  // namespace dbot::model
