// DBOT_VECTOR_CLONES before a plain (non-template) function builds an AVX2 clone of it beside the baseline
// x86-64 one and picks between them at load time, so that a portable binary still runs its plain loops
// vectorised 256 bits wide where the CPU allows (clang has target_clones since 14; without it the
// function is built for the baseline only: SSE2, about 2x the instructions, docs/PERFORMANCE.md).
#pragma once

#if defined(__x86_64__) && (defined(__clang__) ? __clang_major__ >= 14 : defined(__GNUC__))
#define DBOT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DBOT_VECTOR_CLONES
#endif
