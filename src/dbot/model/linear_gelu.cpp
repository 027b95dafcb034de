// linear_gelu: GELU(x W^T + b) with the bias and GELU' fused into one pass after the product, and model::linear's
// bf16 autograd function. Contract: linear_gelu.h.
#include "dbot/model/linear_gelu.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "dbot/compat.h"
#include "dbot/core/avx2_math.h"
#include "dbot/core/parallel.h"
#include "dbot/core/vector_clones.h"

namespace dbot::model::detail {

namespace {
// Phi(z) = 0.5 erfc(-z / sqrt 2), with erfc(a) = poly(t) exp(-a^2), t = 1 / (1 + p a) for a >= 0: Abramowitz and
// Stegun 7.1.26 (|error| <= 1.5e-7), the approximation LibTorch's own vectorized erf uses. Written as
// erfc for both signs, Phi avoids the cancellation of 1 + erf(x) in the left tail; its accuracy there is still the
// absolute bound (GELU(-8) = -5.1e-15 comes out 3% off: LinearGelu.TailsAndNonFiniteValues).
constexpr float kP = 0.3275911f, kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f, kA4 = -1.453152027f,
                kA5 = 1.061405429f;
constexpr float kSqrtHalf = 0.70710678118654752f, kInvSqrt2Pi = 0.39894228040143268f;
// Past |z| = 13.19, exp(-z^2 / 2) is below fp32's smallest normal: Phi is 0 or 1 and phi is 0.
constexpr float kMaxHalfSquare = 87.0f;

// One row segment of n elements: h, out, dgelu at its start, bias at its first column. T is float or bf16 (computed
// in fp32, rounded to nearest even once per output by c10::BFloat16).
template <typename T>
void bias_gelu_plain(const T* h, const float* bias, T* out, T* dgelu, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float z = static_cast<float>(h[i]) + bias[i];
    const float a = std::fabs(z) * kSqrtHalf;
    const float half_square = 0.5f * z * z;
    const float e = half_square < kMaxHalfSquare ? std::exp(-half_square) : 0.0f;
    const float t = 1.0f / (1.0f + kP * std::fmin(a, 10.0f));
    const float q = 0.5f * (t * (kA1 + t * (kA2 + t * (kA3 + t * (kA4 + t * kA5))))) * e;  // 0.5 erfc(|z| / sqrt 2)
    const float phi_cdf = z >= 0.0f ? 1.0f - q : q;
    out[i] = static_cast<T>(z * phi_cdf);
    if (dgelu) dgelu[i] = static_cast<T>(phi_cdf + z * (kInvSqrt2Pi * e));
  }
}

// Backward's row segment: dz = g dgelu rounded to T, and dz (as rounded) added to the block's column sums db.
template <typename T>
void gelu_grad_plain(const T* g, const T* dgelu, T* dz, float* db, int64_t n) {
  if (!dgelu) {  // column sums of g alone
    for (int64_t i = 0; i < n; ++i) db[i] += static_cast<float>(g[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T d = static_cast<T>(static_cast<float>(g[i]) * static_cast<float>(dgelu[i]));
    dz[i] = d;
    db[i] += static_cast<float>(d);
  }
}

#ifdef DBOT_AVX2
using core::avx2::exp_nonpositive;
using core::avx2::load8;
using core::avx2::store8;

// The plain loop's formula, 8 lanes at a time (1 / (1 + p a) by a reciprocal estimate and one Newton step).
template <typename T>
__attribute__((target("avx2,fma"))) void bias_gelu_avx2(const T* h, const float* bias, T* out, T* dgelu, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 z = _mm256_add_ps(load8(h + i), _mm256_loadu_ps(bias + i));
    const __m256 a =
        _mm256_min_ps(_mm256_mul_ps(_mm256_andnot_ps(sign, z), _mm256_set1_ps(kSqrtHalf)), _mm256_set1_ps(10.0f));
    const __m256 half_square = _mm256_mul_ps(_mm256_mul_ps(z, z), _mm256_set1_ps(0.5f));
    const __m256 in_range = _mm256_cmp_ps(half_square, _mm256_set1_ps(kMaxHalfSquare), _CMP_LT_OQ);
    const __m256 e = _mm256_and_ps(
        in_range, exp_nonpositive(_mm256_max_ps(_mm256_xor_ps(half_square, sign), _mm256_set1_ps(-kMaxHalfSquare))));
    const __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(kP), a, one);
    __m256 t = _mm256_rcp_ps(d);
    t = _mm256_mul_ps(t, _mm256_fnmadd_ps(d, t, two));
    __m256 poly = _mm256_fmadd_ps(_mm256_set1_ps(kA5), t, _mm256_set1_ps(kA4));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA3));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA2));
    poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kA1));
    const __m256 q = _mm256_mul_ps(_mm256_mul_ps(poly, t), _mm256_mul_ps(e, _mm256_set1_ps(0.5f)));
    const __m256 nonneg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GE_OQ);
    const __m256 phi_cdf = _mm256_blendv_ps(q, _mm256_sub_ps(one, q), nonneg);
    store8(out + i, _mm256_mul_ps(z, phi_cdf));
    if (dgelu) store8(dgelu + i, _mm256_fmadd_ps(z, _mm256_mul_ps(e, _mm256_set1_ps(kInvSqrt2Pi)), phi_cdf));
  }
  bias_gelu_plain(h + i, bias + i, out + i, dgelu ? dgelu + i : nullptr, n - i);  // the segment's tail
}

// gelu_grad_plain, 8 lanes at a time (the sums read dz back as stored: bf16-rounded where T is bf16).
template <typename T>
__attribute__((target("avx2,fma"))) void gelu_grad_avx2(const T* g, const T* dgelu, T* dz, float* db, int64_t n) {
  int64_t i = 0;
  if (!dgelu) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(db + i, _mm256_add_ps(_mm256_loadu_ps(db + i), load8(g + i)));
    gelu_grad_plain(g + i, dgelu, dz, db + i, n - i);
    return;
  }
  for (; i + 8 <= n; i += 8) {
    store8(dz + i, _mm256_mul_ps(load8(g + i), load8(dgelu + i)));
    _mm256_storeu_ps(db + i, _mm256_add_ps(_mm256_loadu_ps(db + i), load8(dz + i)));
  }
  gelu_grad_plain(g + i, dgelu + i, dz + i, db + i, n - i);
}
#endif
}  // namespace

namespace {
template <typename T>
void bias_gelu_rows(const T* h, const float* bias, T* out, T* dgelu, int64_t rows, int64_t cols, bool simd) {
  core::require_avx2_fma_if(simd, "bias_gelu");
  // ~40 flops per element: tasks of at least 32k elements.
  core::parallel_for_rows(rows, cols, int64_t{1} << 15, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r * cols;
      T* d = dgelu ? dgelu + i : nullptr;
#ifdef DBOT_AVX2
      if (simd) {
        bias_gelu_avx2(h + i, bias, out + i, d, cols);
        continue;
      }
#endif
      bias_gelu_plain(h + i, bias, out + i, d, cols);
    }
  });
}

// Row blocks of kGradBlockRows, each summing its columns into its own row of partial [blocks, cols].
template <typename T>
void gelu_grad_rows(const T* g, const T* dgelu, T* dz, float* partial, int64_t rows, int64_t cols, bool simd) {
  core::require_avx2_fma_if(simd, "gelu_grad");
  // ~1 flop per element: tasks of at least 64k elements.
  core::parallel_for_row_blocks(rows, kGradBlockRows, cols, int64_t{1} << 16,
                                [&](int64_t b, int64_t r0, int64_t count) {
                                  float* db = partial + b * cols;
                                  std::fill(db, db + cols, 0.0f);
                                  for (int64_t r = r0; r < r0 + count; ++r) {
                                    const int64_t i = r * cols;
                                    const T* d = dgelu ? dgelu + i : nullptr;
#ifdef DBOT_AVX2
                                    if (simd) {
                                      gelu_grad_avx2(g + i, d, dz + i, db, cols);
                                      continue;
                                    }
#endif
                                    gelu_grad_plain(g + i, d, dz + i, db, cols);
                                  }
                                });
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// gelu_grad, or with dgelu undefined column_sums: {dz (undefined then), db}.
std::pair<at::Tensor, at::Tensor> grad_pass(const char* what, const at::Tensor& g, const at::Tensor& dgelu, bool simd) {
  const bool bf16 = g.scalar_type() == at::kBFloat16;
  if (g.dim() != 2 || !g.is_cpu() || !g.is_contiguous() || (!bf16 && g.scalar_type() != at::kFloat) ||
      (dgelu.defined() &&
       (!dgelu.is_contiguous() || dgelu.sizes() != g.sizes() || dgelu.scalar_type() != g.scalar_type()))) {
    throw std::invalid_argument(std::string(what) +
                                ": the operands must be contiguous [rows, cols] CPU tensors, all fp32 or all bf16");
  }
  const int64_t rows = g.size(0), cols = g.size(1);
  auto dz = dgelu.defined() ? at::empty_like(g) : at::Tensor();
  auto partial = at::empty({(rows + kGradBlockRows - 1) / kGradBlockRows, cols}, g.options().dtype(at::kFloat));
  const auto run = [&](auto zero) {
    using T = decltype(zero);
    gelu_grad_rows(g.data_ptr<T>(), data_or_null<T>(dgelu), data_or_null<T>(dz), partial.data_ptr<float>(), rows, cols,
                   simd);
  };
  if (bf16) {
    run(c10::BFloat16());
  } else {
    run(0.0f);
  }
  return {dz, partial.sum(0)};
}
}  // namespace

std::pair<at::Tensor, at::Tensor> gelu_grad(const at::Tensor& g, const at::Tensor& dgelu, bool simd) {
  RECORD_FUNCTION("dbot::gelu_grad", std::vector<c10::IValue>());  // named in `dbot bench step --profile`
  if (!dgelu.defined()) throw std::invalid_argument("gelu_grad: no GELU'");
  return grad_pass("gelu_grad", g, dgelu, simd);
}

at::Tensor column_sums(const at::Tensor& g, bool simd) {
  RECORD_FUNCTION("dbot::column_sums", std::vector<c10::IValue>());
  return grad_pass("column_sums", g, at::Tensor(), simd).second;
}

void bias_gelu(const float* h, const float* bias, float* out, float* dgelu, int64_t rows, int64_t cols, bool simd) {
  bias_gelu_rows(h, bias, out, dgelu, rows, cols, simd);
}
void bias_gelu(const c10::BFloat16* h, const float* bias, c10::BFloat16* out, c10::BFloat16* dgelu, int64_t rows,
               int64_t cols, bool simd) {
  bias_gelu_rows(h, bias, out, dgelu, rows, cols, simd);
}

}  // namespace dbot::model::detail

namespace dbot::model {

namespace {
// What the fused path computes in: bf16 under CPU bf16 autocast (the dtype autocast gives linear), else fp32.
at::ScalarType compute_dtype() {
  return compat::autocast_enabled(c10::kCPU) ? compat::autocast_dtype(c10::kCPU) : at::kFloat;
}

// [M, in] x [hidden, in]^T, both in the compute dtype -> the product [M, hidden] without the bias, ready for the
// fused pass.
at::Tensor product(const at::Tensor& x2d, const at::Tensor& weight) { return at::mm(x2d, weight.t()).contiguous(); }

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t hidden) {
  auto shape = x.sizes().vec();
  shape.back() = hidden;
  return shape;
}

// h, out, dgelu: [M, hidden] in one dtype T (fp32 or bf16); bias: [hidden] fp32. dgelu may be null.
template <typename T>
void fused_pass_as(const at::Tensor& h, const at::Tensor& bias, at::Tensor& out, at::Tensor* dgelu) {
  detail::bias_gelu(h.data_ptr<T>(), bias.data_ptr<float>(), out.data_ptr<T>(), dgelu ? dgelu->data_ptr<T>() : nullptr,
                    h.size(0), h.size(1), true);
}
void fused_pass(const at::Tensor& h, const at::Tensor& bias, at::Tensor& out, at::Tensor* dgelu) {
  RECORD_FUNCTION("dbot::bias_gelu", std::vector<c10::IValue>());  // named in `dbot bench step --profile`
  if (h.scalar_type() == at::kBFloat16) return fused_pass_as<c10::BFloat16>(h, bias, out, dgelu);
  fused_pass_as<float>(h, bias, out, dgelu);
}

// x as [M, in] and W, both in the compute dtype.
std::pair<at::Tensor, at::Tensor> product_inputs(const at::Tensor& x, const at::Tensor& weight) {
  const auto dtype = compute_dtype();
  return {x.reshape({-1, x.size(-1)}).to(dtype), weight.to(dtype)};
}

// Saves x2d and W in the compute dtype (saved[0], saved[1]), extra after them, and x's and W's own dtypes.
void save_product_inputs(torch::autograd::AutogradContext* ctx, const at::Tensor& x2d, const at::Tensor& w,
                         const at::Tensor& x, const at::Tensor& weight, const at::Tensor& extra = {}) {
  ctx->save_for_backward(extra.defined() ? torch::autograd::variable_list{x2d, w, extra}
                                         : torch::autograd::variable_list{x2d, w});
  ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
  ctx->saved_data["w_dtype"] = static_cast<int64_t>(weight.scalar_type());
}

// From the product's output gradient dz [M, out] and the bias gradient db (fp32): dx = dz W and dW = dz^T x, each in
// its input's own dtype (fp32 master weights under autocast), for the inputs that need one. grad_out: the output's
// gradient as given (its shape gives dx's).
torch::autograd::variable_list product_grads(torch::autograd::AutogradContext* ctx,
                                             const torch::autograd::variable_list& saved, const at::Tensor& dz,
                                             const at::Tensor& db, const at::Tensor& grad_out) {
  const auto& x2d = saved[0];
  const auto& weight = saved[1];
  const auto dtype = [&](const char* key) { return static_cast<at::ScalarType>(ctx->saved_data[key].toInt()); };
  at::Tensor dx, dw;
  if (ctx->needs_input_grad(0)) dx = dz.mm(weight).view(out_shape(grad_out, x2d.size(1))).to(dtype("x_dtype"));
  if (ctx->needs_input_grad(1)) dw = dz.t().mm(x2d).to(dtype("w_dtype"));
  return {dx, dw, ctx->needs_input_grad(2) ? db : at::Tensor()};
}

// Forward saves x and W in the compute dtype (what autocast's linear would save) and GELU'(z) (written over the
// product); backward: dz = g GELU'(z), dx = dz W, dW = dz^T x, db = sum dz (in fp32), each gradient returned in its
// input's own dtype (fp32 master weights under autocast).
struct LinearGelu : torch::autograd::Function<LinearGelu> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
    const auto [x2d, w] = product_inputs(x, weight);
    auto h = product(x2d, w);  // [M, hidden], becomes GELU'(z)
    auto out = at::empty_like(h);
    fused_pass(h, bias.contiguous(), out, &h);
    save_product_inputs(ctx, x2d, w, x, weight, h);
    return out.view(out_shape(x, weight.size(0)));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    // GELU'(z) is saved as numbers, not as a function of z: there is no second derivative to give.
    if (at::GradMode::is_enabled())
      throw std::runtime_error("linear_gelu: no second derivative through the fused GELU");
    const auto saved = ctx->get_saved_variables();
    const auto& weight = saved[1];
    // dz = g GELU'(z) [M, hidden] and db = sum over rows of dz in fp32, in one pass (g has the output's dtype, which
    // is GELU''s and the products' one: the compute dtype).
    const auto g = grad_out[0].reshape({-1, weight.size(0)}).contiguous();
    const auto [dz, db] = detail::gelu_grad(g, saved[2], true);
    return product_grads(ctx, saved, dz, db, grad_out[0]);
  }
};

// x W^T + b as autocast's linear computes it (x, W and b in the compute dtype, addmm), saving what autocast's would
// save; backward: dx = g W, dW = g^T x and db = the column sums of g in fp32 in one pass (autocast's composition
// sums in bf16, then casts to the fp32 bias in another pass).
struct Linear : torch::autograd::Function<Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias) {
    const auto [x2d, w] = product_inputs(x, weight);
    const auto out = at::addmm(bias.to(w.scalar_type()), x2d, w.t());  // [M, out]
    save_product_inputs(ctx, x2d, w, x, weight);
    return out.view(out_shape(x, weight.size(0)));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    if (at::GradMode::is_enabled()) throw std::runtime_error("model::linear: no second derivative on the CPU path");
    const auto saved = ctx->get_saved_variables();
    const auto g = grad_out[0].reshape({-1, saved[1].size(0)}).contiguous();
    return product_grads(ctx, saved, g, detail::column_sums(g, true), grad_out[0]);
  }
};

bool cpu_strided(const at::Tensor& t, bool bf16_too) {
  return t.defined() && t.is_cpu() && t.layout() == at::kStrided &&
         (t.scalar_type() == at::kFloat || (bf16_too && t.scalar_type() == at::kBFloat16));
}
}  // namespace

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // Only under bf16 autocast: in fp32 LibTorch's sum is as fast as the one pass in the step (docs/PERFORMANCE.md).
  const bool recorded = at::GradMode::is_enabled() && compat::autocast_enabled(c10::kCPU) &&
                        fused_linear_gelu(x, weight, bias) &&
                        (x.requires_grad() || weight.requires_grad() || bias.requires_grad());
  return recorded ? Linear::apply(x, weight, bias) : at::linear(x, weight, bias);
}

bool fused_linear_gelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // Outside autocast all fp32; under bf16 autocast x and W may also be bf16 (the teacher keeps bf16 matrices) and
  // the bias stays fp32. fp16 autocast takes the composition.
  const bool autocast = compat::autocast_enabled(c10::kCPU);
  if (autocast && compat::autocast_dtype(c10::kCPU) != at::kBFloat16) return false;
  return cpu_strided(x, autocast) && cpu_strided(weight, autocast) && cpu_strided(bias, false) && x.dim() >= 2 &&
         weight.dim() == 2 && bias.dim() == 1 && x.size(-1) == weight.size(1) && bias.size(0) == weight.size(0) &&
         core::cpu_has_avx2_fma();  // the plain loop (scalar exp) is slower than LibTorch's vectorized GELU
}

at::Tensor linear_gelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!fused_linear_gelu(x, weight, bias)) return at::gelu(at::linear(x, weight, bias));
  const bool recorded =
      at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || bias.requires_grad());
  if (recorded) return LinearGelu::apply(x, weight, bias);
  const auto [x2d, w] = product_inputs(x, weight);
  auto h = product(x2d, w);
  fused_pass(h, bias.contiguous(), h, nullptr);  // in place: nothing to keep for backward
  return h.view(out_shape(x, weight.size(0)));
}

}  // namespace dbot::model
