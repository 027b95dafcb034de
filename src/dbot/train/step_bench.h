// The dBOT step benchmark behind `dbot bench step`: times Trainer::train_step (the very step pretraining
// runs) on synthetic images, after warm-up steps, and reports timm's benchmark columns plus the FLOPs of
// the step, the achieved TFLOP/s, the MFU against the measured matmul peak in the same dtype on the same
// device (the faster of a large square product and the step's own products back to back, its GEMM floor), and
// peak memory; and what the step's time is made of.
//
// FLOPs per image (matrix products only; LayerNorm, softmax, GELU and the optimizer are not counted):
//   block(T, R, D, r)   = 2 T D (3D) + 2 T T D * 2                 (qkv; q k^T and attn v: every token)
//                       + 2 R D D + 2 R D (rD) * 2                 (proj, fc1 + fc2: the R tokens wanted)
//   patch_embed(L, D)   = 2 L (C p p) D
//   R = the tokens the loss weighs (mkd::loss_rows): 1 + L - K (CLS and the masked patches; L - K for pixels)
//   teacher  = patch_embed(L, Dt) + (depth_t - 1) * block(1+L, 1+L, Dt) + block(1+L, R, Dt)      forward only
//   student  = patch_embed(L, D) + depth * block(1+K, 1+K, D)                       K = kept patches
//   decoder  = 2 (1+K) D Dd + (depth_d - 1) * block(1+L, 1+L, Dd) + block(1+L, R, Dd) + 2 R Dd Dt
//   step     = teacher + 3 * (student + decoder)        (backward = 2x forward, as in the usual 6ND rule)
//
// The GEMM floor: the step's own matrix products (step_gemms: every forward product and the two backward
// products of each, at their real shapes, transposes and dtype) timed back to back on preallocated operands.
// No step can be faster with these kernels; `ms/step / floor` says how much of the step is everything else.
#pragma once

#include <string>

#include "dbot/train/trainer.h"

namespace dbot::train {

struct StepFlops {
  double teacher = 0, student = 0, decoder = 0;  // forward FLOPs per image
  double per_image() const { return teacher + 3.0 * (student + decoder); }
};
StepFlops step_flops(const PretrainConfig& cfg);

// One matrix product of the step: `batch` products of op(A) [m, k] and op(B) [k, n] (batch 1: one mm);
// trans_a / trans_b: the operand is stored transposed ([k, m] / [n, k]), as autograd's backward reads it.
struct Gemm {
  int64_t batch, m, n, k;
  bool trans_a, trans_b;
  double flops() const { return 2.0 * static_cast<double>(batch * m * n * k); }
};
// The products of one train_step of cfg (batch optim.batch_size): the teacher's forward, the student's and
// the decoder's forward and backward (no input gradient for the patch embedding: images need none).
std::vector<Gemm> step_gemms(const PretrainConfig& cfg);
// The FLOPs of running `gemms` once.
double total_flops(const std::vector<Gemm>& gemms);
// Milliseconds to run `gemms` once, back to back in `dtype` on the runtime's device (mean over `reps`, after
// `warmup` untimed runs).
double gemm_floor_ms(const std::vector<Gemm>& gemms, const core::Runtime& runtime, at::ScalarType dtype,
                     int64_t reps = 10, int64_t warmup = 2);

struct StepBenchOptions {
  int64_t steps = 20;
  int64_t warmup = 5;
  std::string profile;  // when set: a trace of the timed steps (LibTorch's profiler, chrome://tracing JSON)
};

struct StepBenchResult {
  std::string model;
  int64_t img_size = 0, batch = 0;
  double param_count_m = 0;  // student (encoder + decoder) parameters, millions
  double ms_per_step = 0, samples_per_s = 0;
  double gflop_per_image = 0, achieved_tflops = 0, peak_tflops = 0, mfu = 0;
  double peak_memory_gib = 0;
  double teacher_ms = 0, optimizer_ms = 0;  // parts of the step; the rest is the student's forward + backward
  double gemm_floor_ms = 0;                 // the step's matrix products back to back (step_gemms)
  std::string device, precision, torch_version;
};

StepBenchResult bench_step(const PretrainConfig& cfg, const core::Runtime& runtime, const StepBenchOptions& opts);

// Measured FLOP/s of a large square matrix product in `dtype` on the runtime's device.
double matmul_peak_flops(const core::Runtime& runtime, at::ScalarType dtype);

// The result as a markdown table (timm's columns first) plus the breakdown.
std::string format_step_bench(const StepBenchResult& r);

}  // namespace dbot::train
