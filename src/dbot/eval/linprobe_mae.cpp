#include "dbot/eval/linprobe_mae.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/core/rng.h"
#include "dbot/data/loader.h"
#include "dbot/eval/evaluate.h"
#include "dbot/train/schedule.h"

namespace dbot::eval {

namespace {
constexpr uint64_t kHeadIndex = 1u << 20;  // the head's generator index under kEval (epochs use 0..epochs-1)
}

void MaeLinprobeConfig::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (epochs < 1) fail("eval.mae_epochs must be >= 1");
  if (!(warmup_epochs >= 0 && warmup_epochs < static_cast<double>(epochs)))
    fail("eval.mae_warmup_epochs must be in [0, eval.mae_epochs)");
  if (batch_size < 2) fail("eval.mae_batch_size must be >= 2 (BatchNorm needs a batch)");
  if (!(peak_lr() > 0)) fail("eval.mae_blr (or eval.mae_lr) must be > 0");
  if (min_lr < 0 || weight_decay < 0) fail("eval.mae_min_lr and eval.mae_weight_decay must be >= 0");
  data::check_crop_scale(crop_scale, "eval.mae_crop_scale");
}

ProbeHead::ProbeHead(int64_t dim, int64_t classes, double weight_decay, at::Generator& gen, c10::Device device) {
  auto w = at::empty({classes, dim});
  w.normal_(0.0, 0.01, gen).clamp_(-2.0, 2.0);  // timm trunc_normal_(std=0.01), as MAE (MoCo v3); drawn on the CPU
  weight = w.to(device).requires_grad_(true);
  bias = at::zeros({classes}, at::TensorOptions().device(device)).requires_grad_(true);
  running_mean = at::zeros({dim}, at::TensorOptions().device(device));
  running_var = at::ones({dim}, at::TensorOptions().device(device));
  opt_ = std::make_unique<train::Lars>(
      std::vector<std::pair<std::string, at::Tensor>>{{"head.weight", weight}, {"head.bias", bias}},
      train::LarsConfig{weight_decay});
}

at::Tensor ProbeHead::forward(const at::Tensor& features, bool train) {
  const auto normed = at::batch_norm(features, /*weight=*/{}, /*bias=*/{}, running_mean, running_var, train, kMomentum,
                                     kEps, /*cudnn_enabled=*/false);
  return at::linear(normed, weight, bias);
}

double ProbeHead::train_step(const at::Tensor& features, const at::Tensor& labels, double lr) {
  const auto loss = at::cross_entropy_loss(forward(features, true), labels);
  opt_->zero_grad();
  loss.backward();
  opt_->step(lr);
  return loss.item<double>();
}

double ProbeHead::accuracy(const at::Tensor& features, const at::Tensor& labels) {
  at::NoGradGuard no_grad;
  return forward(features, false).argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
}

double mae_linprobe_accuracy(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> train,
                             std::shared_ptr<const data::ImageSource> val, const data::DataConfig& data,
                             const MaeLinprobeConfig& cfg, int64_t eval_batch_size, uint64_t seed,
                             const core::Runtime& runtime, bool progress) {
  cfg.validate();
  const auto& arch = encoder->cfg;
  // The val set's features are fixed (eval transform, frozen encoder): extracted once.
  const auto val_f = extract_features(encoder, val, data, eval_batch_size, runtime, Pool::kCls).to(runtime.device);
  const auto val_y = val->labels().to(runtime.device);
  data::DataConfig train_data = data;
  train_data.crop_scale = cfg.crop_scale;
  auto transform = data::transform_config(train_data, arch.img_size, arch.in_chans);
  transform.crop_single_draw = true;
  data::Loader loader(std::move(train), transform, data::loader_config(data, cfg.batch_size, /*train=*/true, seed));
  const int64_t ipe = loader.iters_per_epoch();
  if (ipe < 1) throw std::runtime_error("the training set has fewer images than eval.mae_batch_size");
  const auto lr = train::lr_schedule({cfg.peak_lr(), cfg.min_lr, cfg.warmup_epochs, {0, cfg.epochs}, ipe, 1});
  const int64_t classes = std::max(loader.source().num_classes(), val->num_classes());
  auto gen = core::derive_generator(seed, core::RngPurpose::kEval, kHeadIndex);
  ProbeHead head(val_f.size(1), classes, cfg.weight_decay, gen, runtime.device);
  encoder->eval();
  double acc = 0;
  for (int64_t epoch = 0; epoch < cfg.epochs; ++epoch) {
    loader.start_epoch(epoch);
    double loss_sum = 0;
    for (int64_t it = 0; it < ipe; ++it) {
      const auto batch = loader.next();
      at::Tensor f;  // [B, D]
      {
        at::NoGradGuard no_grad;
        compat::AutocastGuard autocast(runtime.device.type(), runtime.amp_dtype());
        const auto x = data::normalize(core::to_device(batch.images, runtime.device), data.mean, data.std);
        f = encoder->forward_features(x, /*final_norm=*/true).select(1, 0).to(at::kFloat);
      }
      loss_sum +=
          head.train_step(f, core::to_device(batch.labels, runtime.device), lr[static_cast<size_t>(epoch * ipe + it)]);
    }
    acc = head.accuracy(val_f, val_y);
    if (progress) {
      std::printf("  linear probe (MAE protocol) epoch %lld/%lld: train loss %.4f, val top-1 %.2f%%\n",
                  static_cast<long long>(epoch + 1), static_cast<long long>(cfg.epochs),
                  loss_sum / static_cast<double>(ipe), 100.0 * acc);
      std::fflush(stdout);
    }
  }
  return acc;
}

}  // namespace dbot::eval
