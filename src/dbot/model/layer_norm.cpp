// layer_norm: LayerNorm forward and backward, one pass per row each, on the CPU in fp32. Contract: layer_norm.h.
#include "dbot/model/layer_norm.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "dbot/compat.h"
#include "dbot/core/avx2_math.h"
#include "dbot/core/parallel.h"
#include "dbot/core/vector_clones.h"

namespace dbot::model::detail {

namespace {
// The corrected two-pass moments (Chan, Golub and LeVeque): m0 = the rounded mean, then the deviations d = x - m0
// give the mean's correction and the variance, sum(d^2) / n - (sum(d) / n)^2. The correction recovers what rounding
// the sum of a row far from 0 lost (rows of the residual stream can sit at tens with a spread of one).
struct Moments {
  float mean, rstd;
};
Moments moments(float m0, float sum_d, float sum_d2, int64_t n, float eps) {
  const float c = sum_d / static_cast<float>(n);
  const float var = std::max(sum_d2 / static_cast<float>(n) - c * c, 0.0f);
  return {m0 + c, 1.0f / std::sqrt(var + eps)};
}

// One row of n: the moments (two reads of the row, the second from L1), then y.
void forward_plain(const float* x, const float* w, const float* b, float eps, float* y, float* mean, float* rstd,
                   int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float m0 = sum / static_cast<float>(n);
  float sum_d = 0.0f, sum_d2 = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    sum_d += x[i] - m0;
    sum_d2 += (x[i] - m0) * (x[i] - m0);
  }
  const auto [m, r] = moments(m0, sum_d, sum_d2, n, eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * r * w[i] + b[i];
  *mean = m;
  *rstd = r;
}

// One row: dx, and its terms of the column sums added into dw and db.
void backward_plain(const float* g, const float* x, const float* w, float m, float r, float* dx, float* dw, float* db,
                    int64_t n) {
  float a = 0.0f, c = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float xh = (x[i] - m) * r, gw = g[i] * w[i];
    a += gw;
    c += gw * xh;
    dw[i] += g[i] * xh;
    db[i] += g[i];
  }
  a /= static_cast<float>(n);
  c /= static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) dx[i] = r * (g[i] * w[i] - a - (x[i] - m) * r * c);
}

#ifdef DBOT_AVX2
using core::avx2::row_tail;
using core::avx2::sum8;

// forward_plain, 8 lanes at a time; each row's last 1-8 elements by masked loads and stores (masked lanes load 0).
__attribute__((target("avx2,fma"))) void forward_avx2(const float* x, const float* w, const float* b, float eps,
                                                      float* y, float* mean, float* rstd, int64_t rows, int64_t n) {
  const auto [full, tail, tail_ps] = row_tail(n);
  const __m256 w_tail = _mm256_maskload_ps(w + full, tail), b_tail = _mm256_maskload_ps(b + full, tail);
  for (int64_t row = 0; row < rows; ++row, x += n, y += n) {
    const __m256 x_tail = _mm256_maskload_ps(x + full, tail);
    __m256 vsum = x_tail;
    for (int64_t i = 0; i < full; i += 8) vsum = _mm256_add_ps(vsum, _mm256_loadu_ps(x + i));
    const float m0 = sum8(vsum) / static_cast<float>(n);
    const __m256 vm0 = _mm256_set1_ps(m0);
    const __m256 d0_tail = _mm256_and_ps(tail_ps, _mm256_sub_ps(x_tail, vm0));
    __m256 vd = d0_tail, vsq = _mm256_mul_ps(d0_tail, d0_tail);
    for (int64_t i = 0; i < full; i += 8) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm0);
      vd = _mm256_add_ps(vd, d);
      vsq = _mm256_fmadd_ps(d, d, vsq);
    }
    const auto [m, r] = moments(m0, sum8(vd), sum8(vsq), n, eps);
    const __m256 vm = _mm256_set1_ps(m), vr = _mm256_set1_ps(r);
    const __m256 d_tail = _mm256_and_ps(tail_ps, _mm256_sub_ps(x_tail, vm));
    for (int64_t i = 0; i < full; i += 8) {
      const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(xh, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    _mm256_maskstore_ps(y + full, tail, _mm256_fmadd_ps(_mm256_mul_ps(d_tail, vr), w_tail, b_tail));
    mean[row] = m;
    rstd[row] = r;
  }
}

// backward_plain over rows, 8 lanes at a time, the same masked tail.
__attribute__((target("avx2,fma"))) void backward_avx2(const float* g, const float* x, const float* w,
                                                       const float* mean, const float* rstd, float* dx, float* dw,
                                                       float* db, int64_t rows, int64_t n) {
  const auto [full, tail, tail_ps] = row_tail(n);
  const __m256 w_tail = _mm256_maskload_ps(w + full, tail);
  for (int64_t row = 0; row < rows; ++row, g += n, x += n, dx += n) {
    const __m256 vm = _mm256_set1_ps(mean[row]), vr = _mm256_set1_ps(rstd[row]);
    const __m256 g_tail = _mm256_maskload_ps(g + full, tail);
    const __m256 xh_tail =
        _mm256_and_ps(tail_ps, _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + full, tail), vm), vr));
    const __m256 gw_tail = _mm256_mul_ps(g_tail, w_tail);
    __m256 va = gw_tail, vc = _mm256_mul_ps(gw_tail, xh_tail);
    _mm256_maskstore_ps(dw + full, tail, _mm256_fmadd_ps(g_tail, xh_tail, _mm256_maskload_ps(dw + full, tail)));
    _mm256_maskstore_ps(db + full, tail, _mm256_add_ps(g_tail, _mm256_maskload_ps(db + full, tail)));
    for (int64_t i = 0; i < full; i += 8) {
      const __m256 gi = _mm256_loadu_ps(g + i);
      const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
      const __m256 gw = _mm256_mul_ps(gi, _mm256_loadu_ps(w + i));
      va = _mm256_add_ps(va, gw);
      vc = _mm256_fmadd_ps(gw, xh, vc);
      _mm256_storeu_ps(dw + i, _mm256_fmadd_ps(gi, xh, _mm256_loadu_ps(dw + i)));
      _mm256_storeu_ps(db + i, _mm256_add_ps(gi, _mm256_loadu_ps(db + i)));
    }
    const __m256 a = _mm256_set1_ps(sum8(va) / static_cast<float>(n));
    const __m256 c = _mm256_set1_ps(sum8(vc) / static_cast<float>(n));
    for (int64_t i = 0; i < full; i += 8) {
      const __m256 xh = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
      const __m256 gw = _mm256_mul_ps(_mm256_loadu_ps(g + i), _mm256_loadu_ps(w + i));
      _mm256_storeu_ps(dx + i, _mm256_mul_ps(vr, _mm256_fnmadd_ps(xh, c, _mm256_sub_ps(gw, a))));
    }
    _mm256_maskstore_ps(dx + full, tail, _mm256_mul_ps(vr, _mm256_fnmadd_ps(xh_tail, c, _mm256_sub_ps(gw_tail, a))));
  }
}
#endif

void check(const at::Tensor& t, const char* name, int64_t dim) {
  if (!t.defined() || !t.is_cpu() || t.scalar_type() != at::kFloat || !t.is_contiguous() || t.dim() != dim)
    throw std::invalid_argument(std::string("layer_norm: ") + name + " must be a contiguous " + std::to_string(dim) +
                                "-d fp32 CPU tensor");
}
}  // namespace

NormForward layer_norm_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps,
                               bool simd) {
  core::require_avx2_fma_if(simd, "layer_norm");
  check(x, "x", 2);
  check(weight, "weight", 1);
  check(bias, "bias", 1);
  const int64_t rows = x.size(0), n = x.size(1);
  if (weight.size(0) != n || bias.size(0) != n || n == 0)
    throw std::invalid_argument("layer_norm: weight and bias must have x's last dimension, not 0");
  NormForward f{at::empty_like(x), at::empty({rows}, x.options()), at::empty({rows}, x.options())};
  const float *px = x.data_ptr<float>(), *w = weight.data_ptr<float>(), *b = bias.data_ptr<float>();
  float *y = f.y.data_ptr<float>(), *mean = f.mean.data_ptr<float>(), *rstd = f.rstd.data_ptr<float>();
  const auto e = static_cast<float>(eps);
  // ~5 flops per element: tasks of at least 16k elements.
  core::parallel_for_rows(rows, n, int64_t{1} << 14, [&](int64_t begin, int64_t end) {
#ifdef DBOT_AVX2
    if (simd) return forward_avx2(px + begin * n, w, b, e, y + begin * n, mean + begin, rstd + begin, end - begin, n);
#endif
    for (int64_t r = begin; r < end; ++r) forward_plain(px + r * n, w, b, e, y + r * n, mean + r, rstd + r, n);
  });
  return f;
}

NormGrads layer_norm_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& weight,
                              const at::Tensor& mean, const at::Tensor& rstd, bool simd) {
  core::require_avx2_fma_if(simd, "layer_norm");
  check(g, "g", 2);
  check(x, "x", 2);
  check(weight, "weight", 1);
  check(mean, "mean", 1);
  check(rstd, "rstd", 1);
  const int64_t rows = x.size(0), n = x.size(1);
  if (!g.sizes().equals(x.sizes()) || weight.size(0) != n || mean.size(0) != rows || rstd.size(0) != rows)
    throw std::invalid_argument("layer_norm: backward's operands differ in shape");
  const int64_t blocks = (rows + kNormBlockRows - 1) / kNormBlockRows;
  auto dx = at::empty_like(x);
  auto partial = at::zeros({2, blocks, n}, x.options());  // each block's sums of g xh and of g
  const float *pg = g.data_ptr<float>(), *px = x.data_ptr<float>(), *w = weight.data_ptr<float>(),
              *m = mean.data_ptr<float>(), *r = rstd.data_ptr<float>();
  float *pdx = dx.data_ptr<float>(), *dw = partial.data_ptr<float>(), *db = dw + blocks * n;
  core::parallel_for_row_blocks(rows, kNormBlockRows, n, int64_t{1} << 14, [&](int64_t k, int64_t r0, int64_t count) {
    const int64_t i = r0 * n;
#ifdef DBOT_AVX2
    if (simd) return backward_avx2(pg + i, px + i, w, m + r0, r + r0, pdx + i, dw + k * n, db + k * n, count, n);
#endif
    for (int64_t j = 0; j < count; ++j)
      backward_plain(pg + i + j * n, px + i + j * n, w, m[r0 + j], r[r0 + j], pdx + i + j * n, dw + k * n, db + k * n,
                     n);
  });
  const auto sums = partial.sum(1);  // [2, n]
  return {dx, sums[0], sums[1]};
}

}  // namespace dbot::model::detail

namespace dbot::model {

namespace {
// Forward saves x [rows, D] (contiguous), the weight, mean and rstd; backward gives dx, dweight, dbias.
struct LayerNormFn : torch::autograd::Function<LayerNormFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, double eps) {
    const auto x2d = x.reshape({-1, x.size(-1)}).contiguous();
    auto f = detail::layer_norm_forward(x2d, weight.contiguous(), bias.contiguous(), eps, true);
    ctx->save_for_backward({x2d, weight, f.mean, f.rstd});
    return f.y.view(x.sizes());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    if (at::GradMode::is_enabled()) throw std::runtime_error("layer_norm: no second derivative on the CPU path");
    const auto s = ctx->get_saved_variables();
    const auto g = grad_out[0].reshape({-1, s[0].size(1)}).contiguous();
    auto grads = detail::layer_norm_backward(g, s[0], s[1].contiguous(), s[2], s[3], true);
    return {ctx->needs_input_grad(0) ? grads.dx.view(grad_out[0].sizes()) : at::Tensor(),
            ctx->needs_input_grad(1) ? grads.dweight : at::Tensor(),
            ctx->needs_input_grad(2) ? grads.dbias : at::Tensor(), at::Tensor()};
  }
};

bool cpu_fp32(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.layout() == at::kStrided && t.scalar_type() == at::kFloat;
}
}  // namespace

bool fused_layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return cpu_fp32(x) && cpu_fp32(weight) && cpu_fp32(bias) && x.dim() >= 1 && weight.dim() == 1 && bias.dim() == 1 &&
         x.size(-1) == weight.size(0) && bias.size(0) == weight.size(0) && weight.size(0) > 0 &&
         core::cpu_has_avx2_fma() &&  // the plain loop is for the tests: LibTorch's vectorized kernel beats it
         !compat::has_fast_cpu_layer_norm();
}

at::Tensor detail::layer_norm_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                     double eps) {
  RECORD_FUNCTION("dbot::layer_norm", std::vector<c10::IValue>());  // named in `dbot bench step --profile`
  const bool recorded =
      at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || bias.requires_grad());
  if (recorded) return LayerNormFn::apply(x, weight, bias, eps);
  const auto x2d = x.reshape({-1, x.size(-1)}).contiguous();
  return layer_norm_forward(x2d, weight.contiguous(), bias.contiguous(), eps, true).y.view(x.sizes());
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  if (!fused_layer_norm(x, weight, bias)) return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
  return detail::layer_norm_kernel(x, weight, bias, eps);
}

at::Tensor layer_norm(const torch::nn::LayerNorm& ln, const at::Tensor& x) {
  if (ln->options.normalized_shape().size() != 1)  // LayerNormImpl::forward
    return at::layer_norm(x, ln->options.normalized_shape(), ln->weight, ln->bias, ln->options.eps());
  return layer_norm(x, ln->weight, ln->bias, ln->options.eps());
}

}  // namespace dbot::model
