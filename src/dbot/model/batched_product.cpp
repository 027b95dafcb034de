// batched_product: alpha * (a b) batched, by a loop of sgemm calls into the BLAS LibTorch runs on (OpenBLAS under
// LibTorch 1.x: DBOT_HAVE_OPENBLAS; the MKL inside the PyPI wheel's libtorch_cpu: DBOT_HAVE_MKL_SGEMM), else by
// compat::scaled_bmm. Contract: batched_product.h.
#include "dbot/model/batched_product.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <vector>

#include "dbot/compat.h"
#include "dbot/core/parallel.h"

#if defined(DBOT_HAVE_OPENBLAS)
#include <cblas.h>
#define DBOT_HAVE_SGEMM 1
#elif defined(DBOT_HAVE_MKL_SGEMM)
// MKL's batched product (LP64: int sizes; CBLAS's enum values), exported by the PyPI wheel's libtorch_cpu, which
// dbot links anyway; the wheel ships no MKL header. One call per task: MKL's per-call cost is 3-4x the product
// itself on the demo's 9x32x9 matrices (docs/PERFORMANCE.md), where one batched call shares it.
extern "C" void cblas_sgemm_batch(int layout, const int* transa, const int* transb, const int* m, const int* n,
                                  const int* k, const float* alpha, const float** a, const int* lda, const float** b,
                                  const int* ldb, const float* beta, float** c, const int* ldc, int group_count,
                                  const int* group_size);
#define DBOT_HAVE_SGEMM 1
#endif

namespace dbot::model {

MatrixBatch MatrixBatch::t() const {
  MatrixBatch m = *this;
  std::swap(m.rows, m.cols);
  std::swap(m.row_stride, m.col_stride);
  return m;
}

MatrixBatch matrix_batch(const at::Tensor& x) {
  if (x.scalar_type() != at::kFloat || !x.is_cpu() || (x.dim() != 3 && x.dim() != 4))
    throw std::logic_error("matrix_batch: a [B0, B1, r, c] or [B, r, c] fp32 CPU tensor");
  const int64_t d = x.dim();
  MatrixBatch m;
  m.data = x.data_ptr<float>();
  m.batch0 = d == 4 ? x.size(0) : 1;
  m.stride0 = d == 4 ? x.stride(0) : 0;
  m.batch1 = x.size(d - 3);
  m.stride1 = x.stride(d - 3);
  m.rows = x.size(d - 2);
  m.cols = x.size(d - 1);
  m.row_stride = x.stride(d - 2);
  m.col_stride = x.stride(d - 1);
  return m;
}

namespace {
// One matrix as row-major BLAS reads it: as stored (ld = row stride) or transposed (ld = column stride).
struct BlasLayout {
  bool ok, trans;
  int64_t ld;
};
BlasLayout blas_layout_of(const MatrixBatch& m) {
  if (m.col_stride == 1 && m.row_stride >= std::max<int64_t>(1, m.cols)) return {true, false, m.row_stride};
  if (m.row_stride == 1 && m.col_stride >= std::max<int64_t>(1, m.rows)) return {true, true, m.col_stride};
  return {false, false, 0};
}
// sgemm's sizes are int (OpenBLAS without USE_64BITINT, MKL's LP64 interface).
bool fits_blas_int(const MatrixBatch& m) {
  const int64_t limit = std::numeric_limits<int>::max();
  return m.rows <= limit && m.cols <= limit && std::abs(m.row_stride) <= limit && std::abs(m.col_stride) <= limit;
}
}  // namespace

bool blas_layout(const at::Tensor& x) {
  const auto m = matrix_batch(x);
  return blas_layout_of(m).ok && fits_blas_int(m);
}

bool blas_loop_usable() {
#if defined(DBOT_HAVE_OPENBLAS)
  // openblas_get_parallel: 1 = pthreads. The loop calls BLAS from ATen's OpenMP threads, where an OpenMP
  // OpenBLAS runs each call on the calling thread; a pthreads one would start its own threads from every one.
  static const bool threads_fit = openblas_get_parallel() != 1;
  return threads_fit && !compat::autocast_enabled(c10::kCPU);
#elif defined(DBOT_HAVE_MKL_SGEMM)
  // The wheel's MKL threads with the same OpenMP as ATen: inside ATen's parallel region it runs on the calling thread.
  return !compat::autocast_enabled(c10::kCPU);
#else
  return false;
#endif
}

namespace {
#ifdef DBOT_HAVE_SGEMM
// The products [begin, end) of the batch on the calling thread: c = alpha a b, beta = 0, row-major.
struct Gemm {
  const MatrixBatch &a, &b, &c;
  BlasLayout la, lb;
  float alpha;

  int64_t offset(const MatrixBatch& x, int64_t i) const { return i / c.batch1 * x.stride0 + i % c.batch1 * x.stride1; }
  void run(int64_t begin, int64_t end) const {
    const int n = static_cast<int>(c.rows), m = static_cast<int>(c.cols), k = static_cast<int>(a.cols);
    const int lda = static_cast<int>(la.ld), ldb = static_cast<int>(lb.ld), ldc = static_cast<int>(c.row_stride);
#if defined(DBOT_HAVE_OPENBLAS)
    for (int64_t i = begin; i < end; ++i)
      cblas_sgemm(CblasRowMajor, la.trans ? CblasTrans : CblasNoTrans, lb.trans ? CblasTrans : CblasNoTrans, n, m, k,
                  alpha, a.data + offset(a, i), lda, b.data + offset(b, i), ldb, 0.0f, c.data + offset(c, i), ldc);
#else
    std::vector<const float*> pa, pb;
    std::vector<float*> pc;
    for (int64_t i = begin; i < end; ++i) {
      pa.push_back(a.data + offset(a, i));
      pb.push_back(b.data + offset(b, i));
      pc.push_back(c.data + offset(c, i));
    }
    constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
    const int ta = la.trans ? kTrans : kNoTrans, tb = lb.trans ? kTrans : kNoTrans,
              count = static_cast<int>(end - begin);
    const float beta = 0.0f;
    cblas_sgemm_batch(kRowMajor, &ta, &tb, &n, &m, &k, &alpha, pa.data(), &lda, pb.data(), &ldb, &beta, pc.data(), &ldc,
                      1, &count);
#endif
  }
};
#endif
}  // namespace

void blas_gemm(const MatrixBatch& a, const MatrixBatch& b, const MatrixBatch& c, double alpha) {
#ifdef DBOT_HAVE_SGEMM
  const auto la = blas_layout_of(a), lb = blas_layout_of(b);
  if (!la.ok || !lb.ok || c.col_stride != 1 || c.row_stride < std::max<int64_t>(1, c.cols) || a.cols != b.rows ||
      a.rows != c.rows || b.cols != c.cols || a.batch0 != c.batch0 || a.batch1 != c.batch1 || b.batch0 != c.batch0 ||
      b.batch1 != c.batch1)
    throw std::logic_error("blas_gemm: operands BLAS cannot read in place, or mismatched sizes");
  const int64_t n = c.rows, m = c.cols, k = a.cols, batch = c.batch0 * c.batch1;
  if (batch == 0 || n == 0 || m == 0) return;
  RECORD_FUNCTION("dbot::blas_gemm", std::vector<c10::IValue>());  // named in `dbot bench step --profile`
  const Gemm gemm{a, b, c, la, lb, static_cast<float>(alpha)};
  if (k == 0) {  // BLAS may leave C alone when there is nothing to sum
    for (int64_t i = 0; i < batch; ++i)
      for (int64_t r = 0; r < n; ++r) {
        float* row = c.data + gemm.offset(c, i) + r * c.row_stride;
        std::fill(row, row + m, 0.0f);
      }
    return;
  }
  // A task of at least ~64k multiply-adds: the demo's 9x32x9 products go ~20 to a task, ViT-S/16's 197x64x197 one.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, n * m * k));
  core::parallel_for(batch, grain, [&](int64_t begin, int64_t end) { gemm.run(begin, end); });
#else
  throw std::logic_error("blas_gemm: built without a BLAS to call");
#endif
}

namespace {
at::Tensor blas_operand(const at::Tensor& x) { return blas_layout(x) ? x : x.contiguous(); }

at::Tensor blas_bmm(const at::Tensor& a, const at::Tensor& b, double alpha) {
  auto out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  const auto ca = blas_operand(a), cb = blas_operand(b);
  blas_gemm(matrix_batch(ca), matrix_batch(cb), matrix_batch(out), alpha);
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
}  // namespace

bool blas_batched_product(const at::Tensor& a, const at::Tensor& b) {
  auto plain_fp32_cpu = [](const at::Tensor& x) {
    return x.dim() == 3 && x.is_cpu() && x.layout() == at::kStrided && x.scalar_type() == at::kFloat && !x.is_neg();
  };
  return blas_loop_usable() && plain_fp32_cpu(a) && plain_fp32_cpu(b) && a.size(0) == b.size(0) &&
         a.size(2) == b.size(1) && a.size(1) <= std::numeric_limits<int>::max() &&
         a.size(2) <= std::numeric_limits<int>::max() && b.size(2) <= std::numeric_limits<int>::max();
}

at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double alpha) {
  if (!blas_batched_product(a, b)) return compat::scaled_bmm(a, b, alpha);
  if (at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) return BlasBmm::apply(a, b, alpha);
  return blas_bmm(a, b, alpha);
}

void bmm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (blas_batched_product(a, b) && out.scalar_type() == at::kFloat && out.stride(-1) == 1 && blas_layout(out) &&
      out.sizes() == at::IntArrayRef({a.size(0), a.size(1), b.size(2)})) {
    blas_gemm(matrix_batch(blas_operand(a)), matrix_batch(blas_operand(b)), matrix_batch(out), 1.0);
    return;
  }
  at::bmm_out(out, a, b);
}

}  // namespace dbot::model
