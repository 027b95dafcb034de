// Distiller: owns the MaskedStudent (encoder + decoder), the frozen Teacher and the stage rule of dBOT's
// multi-stage masked knowledge distillation (METHOD.md). This file is "where the loss is".
//
//   forward(imgs):  noise ~ U[0,1]^[N, L] (CPU generator, copied to the device; rank r of w data-parallel
//                   ranks draws the global batch's [N w, L] and keeps rows r, r + w, ..., the rows of its
//                   samples in the one-rank batch, so masks differ across ranks and equal a one-rank run's)
//     latent, mask, ids_restore, ids_masked = student.forward_encoder(imgs, noise)  // CLS + kept patches
//     pred   = student.forward_decoder(latent, ids_restore)             // [N, 1+L, D_teacher]
//     target = teacher.forward_target(imgs)                             // full image, before the final norm
//     loss   = forward_loss(target, pred, mask, spec)                   // SmoothL1(beta 2) on masked + CLS
//   computed as: rows = loss_rows(ids_masked, spec.cls), the tokens of weight 1 [N, R]; pred and target at those
//   rows only (the decoder's and the teacher's last block run them alone after its attention); loss =
//   forward_loss_rows(target, pred, spec). The same loss and gradients, without the predictions and targets that
//   forward_loss multiplies by 0 (a quarter to a half of every token's last-block and decoder_predp work).
//   (a CLIP-tower teacher, by default: 1 - cosine similarity on masked patches, METHOD.md's CLIP variant)
//   mkd.target pixels is MAE, the paper's baseline, through the same trainer: decoder_predp predicts each
//   patch's p*p*C pixels and loss = pixel_loss(patchify(imgs), pred, mask) on masked patches; one stage; the
//   teacher is then the stage-0 (random) network, kept for the stage-0 row of the evaluation table only.
//   next_stage(): teacher <- student encoder; student re-initialized (patch conv bias carried); when the
//   teacher's width changes (a pretrained teacher of another width was stage 0), decoder_predp is rebuilt
//   to predict the new width.
//
// Stage numbering is the paper's: the random network is stage 0; `stage` is the stage being trained
// (1, 2, ...), whose teacher is the stage-(stage-1) network. All randomness comes from generators derived
// from (seed, purpose, index) so that a run resumes exactly, on any device.
#pragma once

#include <optional>
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
  // official: the student is re-initialized at each stage switch; false = it continues from its weights (an
  // ablation), with a fresh prediction layer only where the target's width changes
  bool reinit_student = true;
  // Pretrained starts (read by the train layer, train/pretrained.h): the stage-0 teacher and the student's
  // initial weights; "" = the stage-0 rule and the official initialization.
  std::string teacher_init, student_init;
  int64_t teacher_num_heads = 0;                  // for a teacher file without architecture metadata; 0 = inferred
  std::string teacher_act = "auto";               // its MLP activation: auto | gelu | quick_gelu (train/pretrained.h)
  std::string loss = "auto";                      // auto | smooth_l1 | cosine (loss_spec)
  std::string target = "teacher";                 // teacher (dBOT) | pixels (MAE's baseline, pixel_loss)
  bool norm_pix_loss = true;                      // pixels: per-patch normalized targets (MAE's recipe)
  std::vector<double> teacher_mean, teacher_std;  // its input normalization; empty = the data's
};

// Pretrained weights to start from, already read (see MkdConfig::teacher_init, student_init).
struct StartWeights {
  std::optional<model::EncoderWeights> teacher;  // the stage-0 teacher, any width/depth/patch (fit_to_grid)
  model::TensorMap student;                // encoder tensors of the student's shape (pos_embed on the student's grid),
                                           // with the decoder's when it has them; empty = no file
  TeacherInput teacher_input;              // its input normalization relative to the data's (empty: the same)
  std::string teacher_what, student_what;  // the files, for errors
  std::vector<std::string> log;            // what was read, one line per file
};

// Per-token normalization over features with the unbiased variance: (t - mean) / sqrt(var + 1e-6), fp32.
at::Tensor normalize_target(const at::Tensor& target);

// How prediction and target are compared, per token.
struct LossSpec {
  bool cosine = false;  // false: SmoothL1 (beta 2) against normalize_target(target), averaged over features;
                        // true: 1 - cos(pred, target) (torch's cosine_similarity, eps 1e-8)
  bool cls = true;      // the CLS token counts (dBOT); a CLIP teacher's CLS is dropped (METHOD.md)
};
// mkd.loss for this teacher: "auto" = cosine without CLS for a CLIP tower, else SmoothL1 with CLS; "smooth_l1" and
// "cosine" choose the comparison (CLS still follows the teacher). Throws on another name.
LossSpec loss_spec(const std::string& loss, const model::VitConfig& teacher);
// Throws std::invalid_argument unless mkd.target is teacher or pixels.
void check_target(const std::string& target);

// The per-token loss of `spec` between pred and target (raw teacher output), then a weighted mean over tokens:
// weight 1 for masked patches, 0 for visible patches, CLS as spec.cls. pred, target: [N, 1+L, Dt]; mask [N, L].
at::Tensor forward_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask,
                        const LossSpec& spec = {});
// The tokens forward_loss gives weight 1: CLS (token 0) when `cls`, then the masked patches (token = patch + 1) in
// the order of ids_masked [N, M]. [N, (cls ? 1 : 0) + M], int64.
at::Tensor loss_rows(const at::Tensor& ids_masked, bool cls);
// forward_loss on those tokens alone: the per-token loss of `spec` averaged over all R. pred, target: [N, R, Dt].
at::Tensor forward_loss_rows(const at::Tensor& target, const at::Tensor& pred, const LossSpec& spec = {});

// MAE's patchify: [N, C, H, W] -> [N, L, p*p*C], each patch's pixels in (row, column, channel) order.
at::Tensor patchify(const at::Tensor& imgs, int64_t patch_size);

// MAE's loss (models_mae.forward_loss): the squared error against target = patchify(imgs) (per patch normalized
// with the unbiased variance, (t - mean) / sqrt(var + 1e-6), when norm_pix), averaged over pixels, then over the
// masked patches. target [N, L, p*p*C] (raw pixels); pred [N, 1+L, p*p*C] (the decoder's CLS token is dropped, as
// MAE does); mask [N, L]. fp32.
at::Tensor pixel_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask, bool norm_pix);
// pixel_loss on the masked patches alone: target [N, M, p*p*C] (those patches' pixels), pred [N, M, p*p*C].
at::Tensor pixel_loss_rows(const at::Tensor& target, const at::Tensor& pred, bool norm_pix);

class Distiller {
 public:
  // Builds the student on the CPU, initializes it from derive_generator(seed, kInit, 1) (then from
  // start.student when given) and makes the stage-0 teacher start.teacher, else a copy of the student's
  // initialization (truncated to teacher_depth blocks when given). The decoder predicts the teacher's width.
  Distiller(model::VitConfig student_cfg, MkdConfig cfg, uint64_t seed, const StartWeights& start = {});

  // Moves student and teacher to `device` and gives the teacher a compute copy in `amp_dtype` (kFloat:
  // none). Call before building an optimizer on the student's parameters.
  void to(c10::Device device, at::ScalarType amp_dtype);
  c10::Device device() const { return device_; }

  EncoderOutput forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen);
  // With `rows` [N, R] defined (token indices, CLS = 0), both give those tokens only: [N, R, D_teacher].
  at::Tensor forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen,
                             const at::Tensor& rows = {});
  at::Tensor forward_teacher(const at::Tensor& imgs, const at::Tensor& rows = {});  // no autograd; [N, 1+L, D_teacher]
  // What the decoder is trained to predict: the teacher's output (at `rows` when defined), or patchify(imgs) for
  // mkd.target pixels (every patch).
  at::Tensor forward_target(const at::Tensor& imgs, const at::Tensor& rows = {});
  bool pixels() const { return cfg.target == "pixels"; }
  // The training loss for one batch on the device; noise and drop path come from gen. A scalar (fp32).
  // With world_size > 1, gen is the step's generator (the same on every rank): the rank takes its rows of
  // the global noise, and drop path draws from a generator seeded by the rank's own draw from gen.
  at::Tensor forward(const at::Tensor& imgs, at::Generator& gen, int64_t rank = 0, int64_t world_size = 1);

  // The stage rule: the current student's encoder becomes the teacher, the student (encoder + decoder) is
  // re-initialized from derive_generator(seed, kInit, stage + 1), stage advances. Parameters are modified
  // in place, so an optimizer holding them keeps its state (the official behaviour).
  void next_stage();
  // For resuming: sets the stage, rebuilds the teacher as teacher_cfg, sizes decoder_predp as the saved
  // one, and loads both networks.
  void load(int64_t stage, const model::TensorMap& student_state, const model::TensorMap& teacher_state,
            const model::VitConfig& teacher_cfg, const TeacherInput& teacher_input, const std::string& what);
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
  MaskedStudent make_student() const;  // on the CPU, not initialized, predicting target_dim_
  void initialize_student(uint64_t stage_index, bool reset_patch_bias);
  void initialize_predictor(uint64_t stage_index);  // decoder_predp only (a continued student, a new width)
  void load_student_start(const model::TensorMap& state, const std::string& what);
  // Rebuilds decoder_predp (in place: optimizers keep the same tensors) for a teacher of another width; no
  // autograd graph through the old one may be alive (its gradient accumulator keeps the old shape).
  void set_target_dim(int64_t dim);
  // A frozen ViT of `teacher_cfg` on the device, loaded from `state`, with its compute copy.
  void make_teacher(model::VitConfig teacher_cfg, const model::TensorMap& state, const std::string& what);
  int64_t target_dim_ = 0;  // the teacher's target width (target_width): what decoder_predp predicts
  int64_t stage_ = 1;
  c10::Device device_{c10::kCPU};
  at::ScalarType amp_dtype_ = at::kFloat;
};

}  // namespace dbot::mkd
