// adamw_cpu: one AdamW update (decoupled decay) of fp32 CPU tensors in one pass over memory. On the CPU the
// _foreach form runs each of its eight multi-tensor ops as one ATen op per tensor (~580 ops and eight passes over
// the parameters and moments per demo step), and LibTorch's fused CPU kernel (2.4+; none in Debian's 1.13) is one
// call per tensor. This reads each element's parameter, gradient and moments once and writes them once, AVX2 where the
// CPU has it (the same formula in plain C++ elsewhere and for the tails), on LibTorch's threads (core::parallel_for)
// over all tensors together. The arithmetic is the _foreach form's (AdamW::step), element by element in fp32:
//   p <- p (1 - lr wd);  m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
//   p <- p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - beta_i^step.
// AdamWCpu.MatchesTheFormulaInDouble holds both loops to that formula, and AdamW.FusedKernelMatchesForeach
// the whole optimizer to the _foreach form.
#pragma once

#include <ATen/ATen.h>

namespace dbot::train {

struct AdamWStep {
  int64_t step = 1;  // the count after this update (bias correction)
  double lr = 0.0, beta1 = 0.9, beta2 = 0.999, weight_decay = 0.0, eps = 1e-8;
};

// Whether adamw_cpu takes these tensors: on the CPU, fp32, contiguous (checked again by adamw_cpu, which throws).
bool adamw_cpu_supports(const at::Tensor& param);

// Updates params, exp_avg and exp_avg_sq in place from grads (equal counts; tensor i of each list has param i's
// number of elements, all fp32 contiguous on the CPU). simd: the AVX2 loop, only where core::cpu_has_avx2_fma()
// (false: the plain loop everywhere, for the tests).
void adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
               const AdamWStep& s, bool simd);
void adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
               const AdamWStep& s);  // simd where the CPU has it

}  // namespace dbot::train
