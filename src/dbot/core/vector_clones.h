// DBOT_VECTOR_CLONES before a plain (non-template) function builds an AVX2 clone of it beside the baseline
// x86-64 one and picks between them at load time, so that a portable binary still runs its plain loops
// vectorised 256 bits wide where the CPU allows (clang has target_clones since 14; without it the
// function is built for the baseline only: SSE2, about 2x the instructions, docs/PERFORMANCE.md).
// cpu_has_avx2_fma() is the run-time check for hand-written AVX2 + FMA loops (linear_gelu, softmax_rows, layer_norm,
// adamw_cpu), which keep a plain loop beside them for other CPUs; require_avx2_fma_if refuses their AVX2 loop where it
// cannot run.
#pragma once

#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 14 : defined(__GNUC__))
#define DBOT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DBOT_VECTOR_CLONES
#endif

namespace dbot::core {

// Whether this CPU runs AVX2 and FMA instructions (false off x86-64).
inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

// For kernels that take a simd flag: asking for the AVX2 loop on a CPU without it is a caller's bug.
inline void require_avx2_fma_if(bool simd, const char* who) {
  if (simd && !cpu_has_avx2_fma()) throw std::logic_error(std::string(who) + ": this CPU has no AVX2 + FMA");
}

}  // namespace dbot::core
