// The MAE linear-probe protocol (MAE's main_linprobe.py; METHOD.md, "Linear probing"), beside the default
// cached-feature probe of evaluate.h. The frozen encoder runs on every training image of every epoch:
//   per iteration: uint8 batch (MAE's RandomResizedCrop: one draw, scale eval.mae_crop_scale, bicubic; flip)
//   -> normalize -> encoder (eval mode, no autograd, the runtime's autocast) -> the CLS token after the final
//   norm [B, D] -> BatchNorm1d(D, affine=False, eps=1e-6; batch statistics, running stats updated with
//   momentum 0.1) -> Linear(D, C) -> cross-entropy -> LARS (train/lars.h; MAE: weight decay 0) at the lr of
//   the per-iteration warmup + cosine schedule (peak blr x batch / 256, to min_lr).
//   per epoch: top-1 on the val set (eval transform, BatchNorm with its running stats); the last epoch's is
//   the result (MAE also prints the best epoch's, which selects on the test set).
// The head: weight trunc-normal(std 0.01) from derive_generator(seed, kEval, kHeadIndex), bias 0. The head
// and BatchNorm run in fp32 (MAE's run under fp16 autocast with a loss scaler).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/data/source.h"
#include "dbot/model/vit.h"
#include "dbot/train/lars.h"

namespace dbot::eval {

// The recipe's eval.mae_* keys (defaults: MAE's, except the batch: MAE's 16384 is for ImageNet).
struct MaeLinprobeConfig {
  int64_t epochs = 90;
  double warmup_epochs = 10;
  int64_t batch_size = 256;
  double blr = 0.1;  // peak lr = blr x batch / 256, unless lr > 0
  double lr = 0;
  double min_lr = 0;
  double weight_decay = 0;
  std::vector<double> crop_scale = {0.08, 1.0};  // torchvision's default, as MAE's crop
  double peak_lr() const { return lr > 0 ? lr : blr * static_cast<double>(batch_size) / 256.0; }
  void validate() const;  // throws std::invalid_argument naming the key
};

// BatchNorm1d(dim, affine=False, eps=1e-6) -> Linear(dim, classes), trained by LARS.
class ProbeHead {
 public:
  // Parameters, statistics and LARS state on `device`.
  ProbeHead(int64_t dim, int64_t classes, double weight_decay, at::Generator& gen, c10::Device device = c10::kCPU);
  // features [B, D] fp32 -> logits [B, C]; train: batch statistics (biased variance) and a running-stats
  // update (unbiased variance), as torch's BatchNorm1d in train mode; else the running stats.
  at::Tensor forward(const at::Tensor& features, bool train);
  // One LARS step on a batch; returns the mean cross-entropy before the step.
  double train_step(const at::Tensor& features, const at::Tensor& labels, double lr);
  // Top-1 accuracy in [0, 1] (running stats).
  double accuracy(const at::Tensor& features, const at::Tensor& labels);

  at::Tensor weight, bias;               // [C, D], [C]
  at::Tensor running_mean, running_var;  // [D]
  static constexpr double kEps = 1e-6, kMomentum = 0.1;

 private:
  std::unique_ptr<train::Lars> opt_;
};

// Top-1 accuracy in [0, 1] on `val` of the probe trained on `train` (both labeled). progress: a line per
// epoch on stdout.
double mae_linprobe_accuracy(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> train,
                             std::shared_ptr<const data::ImageSource> val, const data::DataConfig& data,
                             const MaeLinprobeConfig& cfg, int64_t eval_batch_size, uint64_t seed,
                             const core::Runtime& runtime, bool progress);

}  // namespace dbot::eval
