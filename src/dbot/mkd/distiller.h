// Distiller: owns the student (ViT encoder + decoder), the frozen teacher and the stage rule of dBOT's
// multi-stage masked knowledge distillation (METHOD.md). This file is "where the loss is".
//
//   forward(imgs):  noise ~ U[0,1]^[N, L]
//     latent, mask, ids_restore = forward_encoder(imgs, noise)   // student sees CLS + kept patches
//     pred   = forward_decoder(latent, ids_restore)              // [N, 1+L, D_teacher]
//     target = forward_teacher(imgs)                             // full image, before the final norm
//     loss   = forward_loss(target, pred, mask)                  // SmoothL1(beta 2) on masked + CLS
//   next_stage(): teacher <- student encoder; student re-initialized (patch conv bias carried).
//
// Stage numbering is the paper's: the random network is stage 0; `stage` is the stage being trained
// (1, 2, ...), whose teacher is the stage-(stage-1) network. All randomness comes from generators derived
// from (seed, purpose, index) so that a run resumes exactly.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "dbot/mkd/decoder.h"
#include "dbot/model/vit.h"

namespace dbot::mkd {

struct MkdConfig {
  double mask_ratio = 0.75;
  DecoderConfig decoder;
  int64_t teacher_depth = -1;     // stage-0 teacher depth: -1 = same as the student, 0 = zero-block teacher
  bool reset_patch_bias = false;  // official: the patch conv bias is NOT re-initialized between stages
};

struct Masking {
  at::Tensor x_masked;     // [N, K, D] kept tokens, in noise order
  at::Tensor mask;         // [N, L] 0 = kept, 1 = removed
  at::Tensor ids_restore;  // [N, L] argsort(ids_shuffle)
  at::Tensor ids_keep;     // [N, K]
};

struct EncoderOutput {
  at::Tensor latent;       // [N, 1+K, D] after the final norm
  at::Tensor mask;         // [N, L]
  at::Tensor ids_restore;  // [N, L]
};

// Random masking per sample by argsort of noise: keep the first int(L * (1 - mask_ratio)).
Masking random_masking(const at::Tensor& x, const at::Tensor& noise, double mask_ratio);

// Per-token normalization over features with the unbiased variance: (t - mean) / sqrt(var + 1e-6), fp32.
at::Tensor normalize_target(const at::Tensor& target);

// SmoothL1 (beta 2) between pred and the normalized target, averaged over features, then a weighted mean
// over tokens: weight 1 for CLS and masked patches, 0 for visible patches. target: raw teacher output.
at::Tensor forward_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask);

// Derived generators: every random draw in dbot is keyed by (seed, purpose, index).
enum class RngPurpose : uint64_t { kInit = 1, kStep = 2, kShuffle = 3, kEval = 4 };
at::Generator derive_generator(uint64_t seed, RngPurpose purpose, uint64_t index);

class Distiller {
 public:
  // Builds the student, initializes it from derive_generator(seed, kInit, 1) and makes the stage-0 teacher
  // a copy of that initialization (truncated to teacher_depth blocks when given).
  Distiller(model::VitConfig student_cfg, MkdConfig cfg, uint64_t seed);

  EncoderOutput forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen);
  at::Tensor forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen);
  at::Tensor forward_teacher(const at::Tensor& imgs);  // no autograd; [N, 1+L, D_teacher]
  // The training loss for one batch; noise, drop path come from gen. Returns a scalar (fp32).
  at::Tensor forward(const at::Tensor& imgs, at::Generator& gen);

  // The stage rule: the current student's encoder becomes the teacher, the student (encoder + decoder) is
  // re-initialized from derive_generator(seed, kInit, stage + 1), stage advances. Parameters are modified
  // in place, so an optimizer holding them keeps its state (the official behaviour).
  void next_stage();
  // For resuming: sets the stage and gives the teacher `teacher_depth` blocks; weights are loaded afterwards.
  void prepare_resume(int64_t stage, int64_t teacher_depth);
  int64_t stage() const { return stage_; }

  // Student parameters with checkpoint names (encoder names as timm, decoder as dBOT), encoder first.
  std::vector<std::pair<std::string, at::Tensor>> named_student_parameters() const;

  void train(bool on);

  model::VitConfig student_cfg;
  MkdConfig cfg;
  uint64_t seed;
  model::VisionTransformer student{nullptr};
  Decoder decoder{nullptr};
  model::VisionTransformer teacher{nullptr};

 private:
  void initialize_student(uint64_t stage_index, bool reset_patch_bias);
  void make_teacher(int64_t depth);  // a frozen ViT like the student with `depth` blocks, copied from it
  int64_t stage_ = 1;
};

}  // namespace dbot::mkd
