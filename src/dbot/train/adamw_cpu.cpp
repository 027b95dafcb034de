// adamw_cpu: AdamW's update in one pass over fp32 CPU memory. Contract: adamw_cpu.h.
#include "dbot/train/adamw_cpu.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "dbot/core/avx2_math.h"
#include "dbot/core/parallel.h"
#include "dbot/core/vector_clones.h"

namespace dbot::train {

namespace {
// The update's scalars in fp32, as the _foreach ops apply their double scalars to fp32 tensors.
struct Coefficients {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, step_size;
};

Coefficients coefficients(const AdamWStep& s) {
  const double bc1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
  const double bc2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
  return {static_cast<float>(1.0 - s.lr * s.weight_decay),
          static_cast<float>(s.beta1),
          static_cast<float>(1.0 - s.beta1),
          static_cast<float>(s.beta2),
          static_cast<float>(1.0 - s.beta2),
          static_cast<float>(std::sqrt(bc2)),
          static_cast<float>(s.eps),
          static_cast<float>(-s.lr / bc1)};
}

// n elements of one tensor, from its first.
void update_plain(float* p, const float* g, float* m, float* v, int64_t n, const Coefficients& c) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = m[i] * c.beta1 + c.one_minus_beta1 * gi;
    const float vi = v[i] * c.beta2 + c.one_minus_beta2 * gi * gi;
    const float denom = std::sqrt(vi) / c.bc2_sqrt + c.eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * c.decay + c.step_size * mi / denom;
  }
}

#ifdef DBOT_AVX2
// The plain loop's operations in the same order, 8 lanes at a time (the loop is memory-bound: FMA would not pay).
__attribute__((target("avx2,fma"))) void update_avx2(float* p, const float* g, float* m, float* v, int64_t n,
                                                     const Coefficients& c) {
  const __m256 beta1 = _mm256_set1_ps(c.beta1), one_minus_beta1 = _mm256_set1_ps(c.one_minus_beta1),
               beta2 = _mm256_set1_ps(c.beta2), one_minus_beta2 = _mm256_set1_ps(c.one_minus_beta2),
               bc2_sqrt = _mm256_set1_ps(c.bc2_sqrt), eps = _mm256_set1_ps(c.eps), decay = _mm256_set1_ps(c.decay),
               step_size = _mm256_set1_ps(c.step_size);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), beta1), _mm256_mul_ps(one_minus_beta1, gi));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), beta2),
                                    _mm256_mul_ps(_mm256_mul_ps(one_minus_beta2, gi), gi));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2_sqrt), eps);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
    _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(step_size, mi), denom)));
  }
  update_plain(p + i, g + i, m + i, v + i, n - i, c);
}
#endif

void check(at::TensorList list, const char* what, size_t i, int64_t numel) {
  const auto& t = list[i];
  if (!t.defined() || !adamw_cpu_supports(t) || t.numel() != numel) {
    throw std::invalid_argument("adamw_cpu: " + std::string(what) + " " + std::to_string(i) +
                                " is not a contiguous fp32 CPU tensor of its parameter's size");
  }
}
}  // namespace

bool adamw_cpu_supports(const at::Tensor& param) {
  return param.device().is_cpu() && param.scalar_type() == at::kFloat && param.is_contiguous();
}

void adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
               const AdamWStep& s, bool simd) {
  if (grads.size() != params.size() || exp_avg.size() != params.size() || exp_avg_sq.size() != params.size()) {
    throw std::invalid_argument("adamw_cpu: unequal numbers of parameters, gradients and moments");
  }
  core::require_avx2_fma_if(simd, "adamw_cpu");
  std::vector<int64_t> offset{0};  // tensor t holds elements [offset[t], offset[t + 1]) of the whole
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t numel = params[i].numel();
    check(params, "parameter", i, numel);
    check(grads, "gradient", i, numel);
    check(exp_avg, "exp_avg", i, numel);
    check(exp_avg_sq, "exp_avg_sq", i, numel);
    offset.push_back(offset.back() + numel);
  }
  const Coefficients c = coefficients(s);
  // Tasks of whole 4k-element blocks of the concatenation (block boundaries cross tensors), at least 8 blocks:
  // ~28 bytes of traffic per element, so a task moves ~1 MB.
  constexpr int64_t kBlock = 4096;
  const int64_t total = offset.back();
  core::parallel_for((total + kBlock - 1) / kBlock, 8, [&](int64_t block_begin, int64_t block_end) {
    const int64_t end = std::min(total, block_end * kBlock);
    int64_t at = block_begin * kBlock;
    size_t t = static_cast<size_t>(std::upper_bound(offset.begin(), offset.end(), at) - offset.begin()) - 1;
    for (; at < end; ++t) {
      const int64_t from = at - offset[t], n = std::min(end, offset[t + 1]) - at;
      float* p = params[t].data_ptr<float>() + from;
      const float* g = grads[t].data_ptr<float>() + from;
      float* m = exp_avg[t].data_ptr<float>() + from;
      float* v = exp_avg_sq[t].data_ptr<float>() + from;
#ifdef DBOT_AVX2
      if (simd) {
        update_avx2(p, g, m, v, n, c);
        at += n;
        continue;
      }
#endif
      update_plain(p, g, m, v, n, c);
      at += n;
    }
  });
}

void adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
               const AdamWStep& s) {
  adamw_cpu(params, grads, exp_avg, exp_avg_sq, s, core::cpu_has_avx2_fma());
}

}  // namespace dbot::train
