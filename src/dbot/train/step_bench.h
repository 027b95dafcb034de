// The dBOT step benchmark behind `dbot bench step`: times Trainer::train_step (the very step pretraining
// runs) on synthetic images, after warm-up steps, and reports timm's benchmark columns plus the FLOPs of
// the step, the achieved TFLOP/s, the MFU against the measured peak of a large matrix product in the
// same dtype on the same device, and peak memory; and what the step's time is made of.
//
// FLOPs per image (matrix products only; LayerNorm, softmax, GELU and the optimizer are not counted):
//   block(T, D, r)      = 2 T D (3D) + 2 T D D + 2 T D (rD) * 2   (qkv, proj, fc1 + fc2)
//                       + 2 T T D * 2                              (q k^T and attn v)
//   patch_embed(L, D)   = 2 L (C p p) D
//   teacher  = patch_embed(L, Dt) + depth_t * block(1+L, Dt)                       forward only
//   student  = patch_embed(L, D) + depth * block(1+K, D)                            K = kept patches
//   decoder  = 2 (1+K) D Dd + depth_d * block(1+L, Dd) + 2 (1+L) Dd Dt
//   step     = teacher + 3 * (student + decoder)        (backward = 2x forward, as in the usual 6ND rule)
#pragma once

#include <string>

#include "dbot/train/trainer.h"

namespace dbot::train {

struct StepFlops {
  double teacher = 0, student = 0, decoder = 0;  // forward FLOPs per image
  double per_image() const { return teacher + 3.0 * (student + decoder); }
};
StepFlops step_flops(const PretrainConfig& cfg);

struct StepBenchOptions {
  int64_t steps = 20;
  int64_t warmup = 5;
};

struct StepBenchResult {
  std::string model;
  int64_t img_size = 0, batch = 0;
  double param_count_m = 0;  // student (encoder + decoder) parameters, millions
  double ms_per_step = 0, samples_per_s = 0;
  double gflop_per_image = 0, achieved_tflops = 0, peak_tflops = 0, mfu = 0;
  double peak_memory_gib = 0;
  double teacher_ms = 0, optimizer_ms = 0;  // parts of the step; the rest is the student's forward + backward
  std::string device, precision, torch_version;
};

StepBenchResult bench_step(const PretrainConfig& cfg, const core::Runtime& runtime, const StepBenchOptions& opts);

// Measured FLOP/s of a large square matrix product in `dtype` on the runtime's device.
double matmul_peak_flops(const core::Runtime& runtime, at::ScalarType dtype);

// The result as a markdown table (timm's columns first) plus the breakdown.
std::string format_step_bench(const StepBenchResult& r);

}  // namespace dbot::train
