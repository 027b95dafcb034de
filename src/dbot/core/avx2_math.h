// avx2_math: the 8-lane building blocks that dbot's hand-written AVX2 + FMA loops share (linear_gelu's GELU pass,
// softmax_rows, layer_norm; adamw_cpu takes the guard): DBOT_AVX2 where the compiler can emit them (x86-64, GCC or
// clang; each function carries its own target attribute, so the rest of the binary stays baseline x86-64 and the loops
// run only where core::cpu_has_avx2_fma() said yes), exp on [-87, 0], and 8 floats loaded from / stored to fp32 or
// bf16.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DBOT_AVX2 1
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <cstdint>

namespace dbot::core::avx2 {

// exp(y) for y in [-87, 0]: y = n ln2 + r, |r| <= ln2 / 2, exp(r) by Cephes' degree-5 polynomial, 2^n in the
// exponent bits (n >= -126: a normal float). A NaN lane gives NaN.
__attribute__((target("avx2,fma"))) inline __m256 exp_nonpositive(__m256 y) {
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), y);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// 8 floats from fp32 or bf16 (a bf16 is the upper half of its fp32), and back (bf16: round to nearest even, NaN to
// 0x7fc0, the bits c10::BFloat16 gives).
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const c10::BFloat16* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
}
__attribute__((target("avx2,fma"))) inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
__attribute__((target("avx2,fma"))) inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}

// The sum of the 8 lanes.
__attribute__((target("avx2,fma"))) inline float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A lane mask selecting the first n lanes (0 <= n <= 8), for _mm256_maskload_ps / _mm256_maskstore_ps.
__attribute__((target("avx2,fma"))) inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// A row of n >= 1 elements as the 8-lane blocks before `full` and one masked vector of the last n - full (1-8, so
// a row of 8 is one masked vector of all lanes): full, and the mask as integers and as floats.
struct RowTail {
  int64_t full;
  __m256i mask;
  __m256 mask_ps;
};
__attribute__((target("avx2,fma"))) inline RowTail row_tail(int64_t n) {
  const int64_t full = (n - 1) / 8 * 8;
  const __m256i mask = first_lanes(n - full);
  return {full, mask, _mm256_castsi256_ps(mask)};
}

}  // namespace dbot::core::avx2
#endif
