// Distiller: owns the MaskedStudent (encoder + decoder), the frozen Teacher and the stage rule of dBOT's
// multi-stage masked knowledge distillation (METHOD.md). This file is "where the loss is".
//
//   forward(imgs):  noise ~ U[0,1]^[N, L] (CPU generator, copied to the device)
//     latent, mask, ids_restore = student.forward_encoder(imgs, noise)  // CLS + kept patches
//     pred   = student.forward_decoder(latent, ids_restore)             // [N, 1+L, D_teacher]
//     target = teacher.forward_target(imgs)                             // full image, before the final norm
//     loss   = forward_loss(target, pred, mask)                         // SmoothL1(beta 2) on masked + CLS
//   next_stage(): teacher <- student encoder; student re-initialized (patch conv bias carried).
//
// Stage numbering is the paper's: the random network is stage 0; `stage` is the stage being trained
// (1, 2, ...), whose teacher is the stage-(stage-1) network. All randomness comes from generators derived
// from (seed, purpose, index) so that a run resumes exactly, on any device.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "dbot/core/rng.h"
#include "dbot/mkd/student.h"
#include "dbot/mkd/teacher.h"

namespace dbot::mkd {

struct MkdConfig {
  std::vector<int64_t> stage_epochs = {0, 800, 1600};  // stage boundaries in epochs: K stages
  double mask_ratio = 0.75;
  DecoderConfig decoder;
  int64_t teacher_depth = -1;     // stage-0 teacher depth: -1 = same as the student, 0 = zero-block teacher
  bool reset_patch_bias = false;  // official: the patch conv bias is NOT re-initialized between stages
};

// Per-token normalization over features with the unbiased variance: (t - mean) / sqrt(var + 1e-6), fp32.
at::Tensor normalize_target(const at::Tensor& target);

// SmoothL1 (beta 2) between pred and the normalized target, averaged over features, then a weighted mean
// over tokens: weight 1 for CLS and masked patches, 0 for visible patches. target: raw teacher output.
at::Tensor forward_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask);

class Distiller {
 public:
  // Builds the student on the CPU, initializes it from derive_generator(seed, kInit, 1) and makes the
  // stage-0 teacher a copy of that initialization (truncated to teacher_depth blocks when given).
  Distiller(model::VitConfig student_cfg, MkdConfig cfg, uint64_t seed);

  // Moves student and teacher to `device` and gives the teacher a compute copy in `amp_dtype` (kFloat:
  // none). Call before building an optimizer on the student's parameters.
  void to(c10::Device device, at::ScalarType amp_dtype);
  c10::Device device() const { return device_; }

  EncoderOutput forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen);
  at::Tensor forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen);
  at::Tensor forward_teacher(const at::Tensor& imgs);  // no autograd; [N, 1+L, D_teacher]
  // The training loss for one batch on the device; noise and drop path come from gen. A scalar (fp32).
  at::Tensor forward(const at::Tensor& imgs, at::Generator& gen);

  // The stage rule: the current student's encoder becomes the teacher, the student (encoder + decoder) is
  // re-initialized from derive_generator(seed, kInit, stage + 1), stage advances. Parameters are modified
  // in place, so an optimizer holding them keeps its state (the official behaviour).
  void next_stage();
  // For resuming: sets the stage, rebuilds the teacher with `teacher_depth` blocks and loads both networks.
  void load(int64_t stage, const model::TensorMap& student_state, const model::TensorMap& teacher_state,
            const std::string& what);
  int64_t stage() const { return stage_; }

  // Student parameters with checkpoint names (encoder names as timm, decoder as dBOT), encoder first.
  std::vector<std::pair<std::string, at::Tensor>> named_student_parameters() const;

  void train(bool on) { student->train(on); }

  model::VitConfig student_cfg;
  MkdConfig cfg;
  uint64_t seed;
  MaskedStudent student{nullptr};
  Teacher teacher{nullptr};

 private:
  MaskedStudent make_student() const;  // on the CPU, not initialized
  void initialize_student(uint64_t stage_index, bool reset_patch_bias);
  // A frozen ViT like the student with `depth` blocks, on the device, loaded from `state`, with its compute copy.
  void make_teacher(int64_t depth, const model::TensorMap& state, const std::string& what);
  int64_t stage_ = 1;
  c10::Device device_{c10::kCPU};
  at::ScalarType amp_dtype_ = at::kFloat;
};

}  // namespace dbot::mkd
