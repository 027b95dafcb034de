// softmax_rows: the attention maps' softmax and its backward, one pass per row. Contract: softmax_rows.h.
#include "dbot/model/softmax_rows.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "dbot/core/avx2_math.h"
#include "dbot/core/parallel.h"
#include "dbot/core/vector_clones.h"

namespace dbot::model::detail {

namespace {
// exp(y) is below fp32's smallest normal under this: such terms are 0 (LibTorch gives a denormal, < 1.2e-38).
constexpr float kMinExpArg = -87.0f;

// One row: m = max, e = exp(x - m), x = e / sum(e). A NaN anywhere makes the row NaN, as in LibTorch.
void softmax_plain(float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::isnan(x[i]) || x[i] > m ? x[i] : m;
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float y = x[i] - m;
    x[i] = y < kMinExpArg ? 0.0f : std::exp(y);
    sum += x[i];
  }
  const float scale = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
}

// One row: dp = p (dp - <dp, p>).
void softmax_backward_plain(float* dp, const float* p, int64_t n) {
  float dot = 0.0f;
  for (int64_t i = 0; i < n; ++i) dot += dp[i] * p[i];
  for (int64_t i = 0; i < n; ++i) dp[i] = p[i] * (dp[i] - dot);
}

#ifdef DBOT_AVX2
using core::avx2::exp_nonpositive;
using core::avx2::row_tail;
using core::avx2::sum8;

// exp(v - m) where v - m >= kMinExpArg, else 0; NaN stays NaN (max_ps returns its second operand on a NaN).
__attribute__((target("avx2,fma"))) inline __m256 shifted_exp(__m256 v, __m256 m) {
  const __m256 y = _mm256_sub_ps(v, m);
  const __m256 floor = _mm256_set1_ps(kMinExpArg);
  const __m256 e = exp_nonpositive(_mm256_max_ps(floor, y));
  return _mm256_andnot_ps(_mm256_cmp_ps(y, floor, _CMP_LT_OQ), e);
}

// softmax_plain over rows of n, 8 lanes at a time; each row's last 1-8 elements by masked loads and stores.
__attribute__((target("avx2,fma"))) void softmax_avx2(float* x, int64_t rows, int64_t n) {
  if (n <= 0) return;
  const auto [full, tail, tail_ps] = row_tail(n);
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t r = 0; r < rows; ++r, x += n) {
    // A NaN may drop out of the max (max_ps returns its second operand on a NaN), but not out of the sum below.
    __m256 vmax = _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x + full, tail), tail_ps);
    for (int64_t i = 0; i < full; i += 8) vmax = _mm256_max_ps(_mm256_loadu_ps(x + i), vmax);
    vmax = _mm256_max_ps(vmax, _mm256_permute2f128_ps(vmax, vmax, 1));
    vmax = _mm256_max_ps(vmax, _mm256_shuffle_ps(vmax, vmax, 0x4e));
    const __m256 m = _mm256_max_ps(vmax, _mm256_shuffle_ps(vmax, vmax, 0xb1));  // the max in every lane
    __m256 vsum = _mm256_setzero_ps();
    for (int64_t i = 0; i < full; i += 8) {
      const __m256 e = shifted_exp(_mm256_loadu_ps(x + i), m);
      _mm256_storeu_ps(x + i, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    const __m256 e_tail = _mm256_and_ps(tail_ps, shifted_exp(_mm256_maskload_ps(x + full, tail), m));
    vsum = _mm256_add_ps(vsum, e_tail);
    const __m256 scale = _mm256_set1_ps(1.0f / sum8(vsum));
    for (int64_t i = 0; i < full; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), scale));
    _mm256_maskstore_ps(x + full, tail, _mm256_mul_ps(e_tail, scale));
  }
}

// softmax_backward_plain over rows of n, 8 lanes at a time, the same masked tail.
__attribute__((target("avx2,fma"))) void softmax_backward_avx2(float* dp, const float* p, int64_t rows, int64_t n) {
  if (n <= 0) return;
  const auto [full, tail, tail_ps] = row_tail(n);  // tail_ps: unused here
  for (int64_t r = 0; r < rows; ++r, dp += n, p += n) {
    const __m256 dp_tail = _mm256_maskload_ps(dp + full, tail), p_tail = _mm256_maskload_ps(p + full, tail);
    __m256 vdot = _mm256_mul_ps(dp_tail, p_tail);  // masked lanes load as 0
    for (int64_t i = 0; i < full; i += 8) vdot = _mm256_fmadd_ps(_mm256_loadu_ps(dp + i), _mm256_loadu_ps(p + i), vdot);
    const __m256 dot = _mm256_set1_ps(sum8(vdot));
    for (int64_t i = 0; i < full; i += 8) {
      const __m256 pi = _mm256_loadu_ps(p + i);
      _mm256_storeu_ps(dp + i, _mm256_mul_ps(pi, _mm256_sub_ps(_mm256_loadu_ps(dp + i), dot)));
    }
    _mm256_maskstore_ps(dp + full, tail, _mm256_mul_ps(p_tail, _mm256_sub_ps(dp_tail, dot)));
  }
}
#endif

// ~2-10 flops per element: tasks of at least 16k elements.
constexpr int64_t kMinTaskElements = int64_t{1} << 14;
}  // namespace

void softmax_rows(float* s, int64_t rows, int64_t cols, bool simd) {
  core::require_avx2_fma_if(simd, "softmax_rows");
  core::parallel_for_rows(rows, cols, kMinTaskElements, [&](int64_t begin, int64_t end) {
    float* x = s + begin * cols;
#ifdef DBOT_AVX2
    if (simd) return softmax_avx2(x, end - begin, cols);
#endif
    for (int64_t r = begin; r < end; ++r) softmax_plain(s + r * cols, cols);
  });
}

void softmax_backward_rows(float* dp, const float* p, int64_t rows, int64_t cols, bool simd) {
  core::require_avx2_fma_if(simd, "softmax_backward_rows");
  core::parallel_for_rows(rows, cols, kMinTaskElements, [&](int64_t begin, int64_t end) {
#ifdef DBOT_AVX2
    if (simd) return softmax_backward_avx2(dp + begin * cols, p + begin * cols, end - begin, cols);
#endif
    for (int64_t r = begin; r < end; ++r) softmax_backward_plain(dp + r * cols, p + r * cols, cols);
  });
}

}  // namespace dbot::model::detail

namespace dbot::model {

namespace {
void check(const at::Tensor& t, const char* who, const char* name) {
  if (!t.is_cpu() || t.scalar_type() != at::kFloat || !t.is_contiguous() || t.dim() == 0)
    throw std::invalid_argument(std::string(who) + ": " + name + " must be a contiguous fp32 CPU tensor");
}
}  // namespace

void softmax_rows_(at::Tensor& s) {
  RECORD_FUNCTION("dbot::softmax_rows", std::vector<c10::IValue>());  // named in `dbot bench step --profile`
  check(s, "softmax_rows_", "s");
  if (!core::cpu_has_avx2_fma()) {
    s.copy_(s.softmax(-1));
    return;
  }
  const int64_t cols = s.size(-1);
  detail::softmax_rows(s.data_ptr<float>(), cols == 0 ? 0 : s.numel() / cols, cols, true);
}

void softmax_backward_rows_(at::Tensor& dp, const at::Tensor& p) {
  RECORD_FUNCTION("dbot::softmax_backward_rows", std::vector<c10::IValue>());
  check(dp, "softmax_backward_rows_", "dp");
  check(p, "softmax_backward_rows_", "p");
  if (!dp.sizes().equals(p.sizes())) throw std::invalid_argument("softmax_backward_rows_: dp and p differ in shape");
  if (!core::cpu_has_avx2_fma()) {
    dp.copy_(at::_softmax_backward_data(dp, p, -1, at::kFloat));
    return;
  }
  const int64_t cols = dp.size(-1);
  detail::softmax_backward_rows(dp.data_ptr<float>(), p.data_ptr<float>(), cols == 0 ? 0 : dp.numel() / cols, cols,
                                true);
}

}  // namespace dbot::model
