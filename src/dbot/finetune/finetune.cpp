#include "dbot/finetune/finetune.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/core/rng.h"
#include "dbot/data/eval_batches.h"
#include "dbot/data/loader.h"
#include "dbot/finetune/classifier.h"
#include "dbot/finetune/finetune_checkpoint.h"
#include "dbot/io/safetensors.h"
#include "dbot/model/layouts.h"
#include "dbot/train/interrupt.h"
#include "dbot/train/run_folder.h"
#include "dbot/train/schedule.h"
#include "dbot/version.h"

namespace dbot::finetune {

void FinetuneConfig::validate() const {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (epochs < 1) fail("finetune.epochs must be >= 1");
  if (!(warmup_epochs >= 0 && warmup_epochs < static_cast<double>(epochs)))
    fail("finetune.warmup_epochs must be in [0, finetune.epochs)");
  if (batch_size < 1 || accum_iter < 1) fail("finetune.batch_size and finetune.accum_iter must be >= 1");
  if (!(layer_decay > 0 && layer_decay <= 1)) fail("finetune.layer_decay must be in (0, 1]");
  if (!(drop_path >= 0 && drop_path < 1)) fail("finetune.drop_path must be in [0, 1)");
  if (mix.mixup_alpha < 0 || mix.cutmix_alpha < 0) fail("finetune.mixup and finetune.cutmix must be >= 0 (0 = off)");
  if (!(mix.label_smoothing >= 0 && mix.label_smoothing < 1)) fail("finetune.smoothing must be in [0, 1)");
  if (!(reprob >= 0 && reprob <= 1)) fail("finetune.reprob must be in [0, 1]");
  if (!(head_init_std > 0)) fail("finetune.head_init_std must be > 0");
  data::check_crop_scale(crop_scale, "finetune.crop_scale");
  try {
    data::parse_rand_augment(rand_augment);
  } catch (const std::invalid_argument& e) {
    fail(std::string("finetune.rand_augment: ") + e.what());
  }
  if (num_classes < 0) fail("finetune.num_classes must be >= 0 (0 = the training set's)");
}

Accuracy evaluate_classifier(ClassifierImpl& c, std::shared_ptr<const data::ImageSource> source,
                             const data::DataConfig& dc, int64_t batch_size, const core::Runtime& runtime) {
  at::NoGradGuard no_grad;
  c.eval();
  Accuracy a;
  int64_t top1 = 0, top5 = 0;
  double loss_sum = 0;
  data::for_each_eval_batch(std::move(source), dc, c.cfg.img_size, c.cfg.in_chans, batch_size, runtime.device,
                            [&](const at::Tensor& x, const at::Tensor& y) {
                              at::Tensor logits;
                              {
                                compat::AutocastGuard autocast(runtime.device.type(), runtime.amp_dtype());
                                logits = c.forward(x).to(at::kFloat).to(at::kCPU);  // [B, classes]
                              }
                              loss_sum += at::cross_entropy_loss(logits, y, {}, at::Reduction::Sum).item<double>();
                              const auto k = std::min<int64_t>(5, logits.size(1));
                              const auto hit = std::get<1>(logits.topk(k, 1)).eq(y.unsqueeze(1));  // [B, k]
                              top1 += hit.select(1, 0).sum().item<int64_t>();
                              top5 += hit.any(1).sum().item<int64_t>();
                              a.images += y.size(0);
                              return true;
                            });
  if (a.images == 0) throw std::runtime_error("the evaluation set is empty");
  a.acc1 = 100.0 * static_cast<double>(top1) / static_cast<double>(a.images);
  a.acc5 = 100.0 * static_cast<double>(top5) / static_cast<double>(a.images);
  a.loss = loss_sum / static_cast<double>(a.images);
  return a;
}

namespace {

// One fine-tuning run: what finetune() sets up, and its loop.
class Run {
 public:
  Run(const FinetuneSetup& s, const FinetuneOptions& o);
  FinetuneSummary loop();

 private:
  double train_step(int64_t epoch, int64_t it);  // returns the loss
  void end_epoch(int64_t epoch, double train_loss);
  void save_last(int64_t epoch, int64_t iteration, bool partial_grads);
  void write_model();

  const FinetuneSetup& s_;
  const FinetuneOptions& o_;
  const FinetuneConfig& cfg_;
  train::RunFolder folder_;
  std::shared_ptr<const data::ImageSource> train_src_, val_src_;
  data::DataConfig train_data_;
  Classifier c_{nullptr};
  std::unique_ptr<train::AdamW> opt_;
  std::unique_ptr<data::Loader> loader_;
  std::vector<double> lr_;
  int64_t ipe_ = 0, start_epoch_ = 0, start_iteration_ = 0;
  double best_acc1_ = 0, last_acc1_ = 0;
  FinetuneSummary summary_;
};

std::shared_ptr<const data::ImageSource> labeled(const data::DataConfig& dc, const std::string& split) {
  auto src = data::open_source(dc, split);
  if (!src || src->num_classes() <= 0) {
    throw std::runtime_error("fine-tuning needs labeled images: data.format " + dc.format + " gives no labeled " +
                             (split == "eval_val" ? "val" : "train") +
                             " set (use imagefolder or idx, or set data.eval_path to an ImageFolder root)");
  }
  return src;
}

Run::Run(const FinetuneSetup& s, const FinetuneOptions& o)
    : s_(s), o_(o), cfg_(s.cfg), folder_(o, {"mkd.", "optim."}) {  // pretraining's keys differ freely
  cfg_.validate();
  if (s.runtime.amp == core::Amp::kFP16) throw std::runtime_error("fine-tuning runs in bf16 or fp32, not fp16 (yet)");
  train_src_ = labeled(s.data, "eval_train");
  val_src_ = labeled(s.data, "eval_val");
  const int64_t classes =
      cfg_.num_classes > 0 ? cfg_.num_classes : std::max(train_src_->num_classes(), val_src_->num_classes());
  c_ = Classifier(classifier_config(s.arch, cfg_.drop_path), classes);
  auto gen = core::derive_generator(s.seed, core::RngPurpose::kInit, 1);
  if (s.encoder.empty()) {
    init_from_scratch(c_, cfg_.head_init_std, gen);
  } else {
    load_encoder(c_, s.encoder, s.encoder_what, cfg_.head_init_std, gen);
  }
  c_->to(s.runtime.device);
  opt_ =
      train::make_training_adamw(named_parameters(*c_), cfg_.adamw, layer_decay_rule(s.arch.depth, cfg_.layer_decay));
  train_data_ = s.data;
  train_data_.crop_scale = cfg_.crop_scale;
  auto transform = data::transform_config(train_data_, s.arch.img_size, s.arch.in_chans);
  transform.rand_augment = data::parse_rand_augment(cfg_.rand_augment);
  for (size_t c = 0; c < s.data.mean.size() && c < 3; ++c)  // timm: min(255, round(255 x mean)), half to even
    transform.fill[c] = static_cast<uint8_t>(std::min(255.0, std::nearbyint(255.0 * s.data.mean[c])));
  loader_ = std::make_unique<data::Loader>(train_src_, transform,
                                           data::loader_config(train_data_, cfg_.batch_size, /*train=*/true, s.seed));
  ipe_ = loader_->iters_per_epoch();
  if (ipe_ < 1) throw std::runtime_error("the training set has fewer images than finetune.batch_size");
  lr_ = train::lr_schedule({cfg_.peak_lr(), cfg_.min_lr, cfg_.warmup_epochs, {0, cfg_.epochs}, ipe_, cfg_.accum_iter});
  if (folder_.has_last_checkpoint()) {
    const auto path = folder_.last_checkpoint();
    const auto ck = load_finetune_checkpoint(path);
    if (ck.seed != s.seed) throw std::runtime_error(path + ": was written with another train.seed");
    model::load_state_dict(*c_, ck.model, path);
    opt_->load_state(ck.optimizer, path);
    train::restore_gradients(named_parameters(*c_), ck.grad_accum, path);
    start_epoch_ = ck.epoch;
    start_iteration_ = ck.iteration;
    best_acc1_ = ck.best_acc1;
    last_acc1_ = ck.acc1;
  } else {
    folder_.write_config(o.config_yaml);
  }
  if (!o.quiet) {
    std::printf("fine-tuning %s (%s) on %s: %lld classes, %lld iterations/epoch, peak lr %.3g%s\n",
                s.encoder.empty() ? "from scratch" : s.encoder_what.c_str(),
                model::weights_file_model_name(s.arch).c_str(), train_src_->describe().c_str(),
                static_cast<long long>(classes), static_cast<long long>(ipe_), cfg_.peak_lr(),
                folder_.has_last_checkpoint() ? (", resuming at epoch " + std::to_string(start_epoch_)).c_str() : "");
  }
}

double Run::train_step(int64_t epoch, int64_t it) {
  const int64_t global = epoch * ipe_ + it;
  auto batch = loader_->next();
  auto gen = core::derive_generator(s_.seed, core::RngPurpose::kStep, static_cast<uint64_t>(global));
  auto x = data::normalize(core::to_device(batch.images, s_.runtime.device), s_.data.mean, s_.data.std);
  if (cfg_.reprob > 0) random_erase(x, cfg_.reprob, gen);
  const auto target = mix_batch(x, core::to_device(batch.labels, x.device()), c_->num_classes, cfg_.mix, gen);
  c_->train();
  at::Tensor loss;
  {
    compat::AutocastGuard autocast(s_.runtime.device.type(), s_.runtime.amp_dtype());
    loss = soft_target_cross_entropy(c_->forward(x, &gen), target);
  }
  const double value = loss.item<double>();
  if (!std::isfinite(value)) {
    throw std::runtime_error("non-finite loss " + std::to_string(value) + " at epoch " + std::to_string(epoch) +
                             ", iteration " + std::to_string(it) + ": lower finetune.blr or enable finetune.clip_grad");
  }
  (loss / static_cast<double>(cfg_.accum_iter)).backward();
  if ((it + 1) % cfg_.accum_iter == 0) {
    opt_->clip_grad_norm(cfg_.clip_grad);
    opt_->step(lr_[static_cast<size_t>(global)]);
    opt_->zero_grad();
  }
  return value;
}

void Run::save_last(int64_t epoch, int64_t iteration, bool partial_grads) {
  save_finetune_checkpoint(folder_.last_checkpoint(), c_, *opt_, partial_grads, epoch, iteration, best_acc1_,
                           last_acc1_, s_.seed, o_.config_yaml);
}

void Run::end_epoch(int64_t epoch, double train_loss) {
  const auto acc = evaluate_classifier(*c_, val_src_, s_.data, cfg_.batch_size, s_.runtime);
  last_acc1_ = acc.acc1;
  const bool best = acc.acc1 > best_acc1_ || epoch == 0;
  if (best) best_acc1_ = acc.acc1;
  summary_.best_acc1 = best_acc1_;
  save_last(epoch + 1, 0, false);
  if (best) {
    save_finetune_checkpoint(folder_.dir() + "/checkpoint-best.pt", c_, *opt_, false, epoch + 1, 0, best_acc1_,
                             acc.acc1, s_.seed, o_.config_yaml);
  }
  folder_.metrics().write({{"type", "epoch"},
                           {"epoch", epoch},
                           {"train_loss", train_loss},
                           {"acc1", acc.acc1},
                           {"acc5", acc.acc5},
                           {"val_loss", acc.loss},
                           {"best_acc1", best_acc1_},
                           {"lr", lr_[static_cast<size_t>(epoch * ipe_ + ipe_ - 1)]}});
  if (!o_.quiet) {
    std::printf("epoch %lld/%lld: train loss %.4f, val top-1 %.2f%% top-5 %.2f%% (best %.2f%%)\n",
                static_cast<long long>(epoch + 1), static_cast<long long>(cfg_.epochs), train_loss, acc.acc1, acc.acc5,
                best_acc1_);
    std::fflush(stdout);
  }
  summary_.last_acc1 = acc.acc1;
  summary_.last_acc5 = acc.acc5;
}

void Run::write_model() {
  const std::string path = folder_.dir() + "/model.safetensors";
  model::TensorMap state = model::state_dict(*c_);
  io::write_safetensors(
      path, state,
      {{"format", "pt"},
       {"dbot.version", kVersion},
       {"dbot.model", model::vit_config_to_json(c_->cfg)},
       {"dbot.num_classes", std::to_string(c_->num_classes)},
       {"dbot.timm", "VisionTransformer(global_pool='avg', num_classes=" + std::to_string(c_->num_classes) + ")"},
       {"dbot.recipe", o_.config_yaml}});
  summary_.written.push_back(path);
}

FinetuneSummary Run::loop() {
  for (int64_t epoch = start_epoch_; epoch < cfg_.epochs; ++epoch) {
    const int64_t first = epoch == start_epoch_ ? start_iteration_ : 0;
    loader_->start_epoch(epoch, first);
    double loss_sum = 0;
    for (int64_t it = first; it < ipe_; ++it) {
      const double loss = train_step(epoch, it);
      loss_sum += loss;
      ++summary_.iterations;
      const int64_t global = epoch * ipe_ + it;
      if ((it + 1) % s_.log_every == 0) {
        folder_.metrics().write({{"type", "step"},
                                 {"epoch", epoch},
                                 {"iteration", it},
                                 {"global_iteration", global},
                                 {"loss", loss},
                                 {"lr", lr_[static_cast<size_t>(global)]}});
      }
      const int sig = train::stop_requested();
      const bool stop = sig != 0 || summary_.iterations == o_.stop_after;
      if (it + 1 < ipe_ && (stop || (global + 1) % s_.checkpoint_every == 0)) {
        save_last(epoch, it + 1, (it + 1) % cfg_.accum_iter != 0);
      }
      if (stop && it + 1 < ipe_) {
        summary_.stopped_by = sig;
        return summary_;
      }
    }
    end_epoch(epoch, loss_sum / static_cast<double>(ipe_ - first));
    ++summary_.epochs_done;
    if ((train::stop_requested() != 0 || summary_.iterations == o_.stop_after) && epoch + 1 < cfg_.epochs) {
      summary_.stopped_by = train::stop_requested();
      return summary_;
    }
  }
  write_model();
  summary_.finished = true;
  return summary_;
}

}  // namespace

FinetuneSummary finetune(const FinetuneSetup& setup, const FinetuneOptions& opts) {
  Run run(setup, opts);
  return run.loop();
}

}  // namespace dbot::finetune
