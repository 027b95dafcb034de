// Fine-tuning (METHOD.md, "Fine-tuning"): a pretrained encoder (or a random one: the supervised baseline)
// becomes a Classifier trained end to end on a labeled set, as MAE's / dBOT's main_finetune.py:
//   per iteration: uint8 batch (RandomResizedCrop(scale finetune.crop_scale) + flip + RandAugment) -> normalize ->
//   random_erase(reprob) -> mix_batch (mixup/cutmix + label smoothing) -> logits (drop path) ->
//   soft-target cross-entropy / accum_iter -> backward; every accum_iter iterations: clip (optional), AdamW with
//   layer-wise lr decay (classifier.h) at the lr of the per-iteration warmup + cosine schedule (to min_lr).
//   per epoch: top-1 / top-5 and loss on the val set (eval transform), a line in metrics.jsonl,
//   checkpoint-last.pt, and checkpoint-best.pt when top-1 improves (the official code crashes saving it).
//   at the end: model.safetensors, timm names, loading strictly into VisionTransformer(global_pool='avg').
// Randomness: the loader's (seed, epoch, position) keys; erasing, mixing and drop path from the step generator
// derive_generator(seed, kStep, global iteration); the head from derive_generator(seed, kInit, 1). So a run
// stopped anywhere (a signal, --stop-after, a kill after a checkpoint) resumes to the same weights.
//   The train transform adds timm's RandAugment (finetune.rand_augment, data/rand_augment.h) after the crop and flip.
// Not yet: fp16 (bf16 and fp32 only), several processes.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/data/source.h"
#include "dbot/finetune/mixup.h"
#include "dbot/model/vit.h"
#include "dbot/train/optim.h"
#include "dbot/train/run_folder.h"

namespace dbot::finetune {

// The recipe's finetune section (defaults: METHOD.md's ViT-B protocol).
struct FinetuneConfig {
  int64_t epochs = 100;
  double warmup_epochs = 5;
  int64_t batch_size = 128;  // per step; the paper's 1024 = 128 x 8 GPUs
  int64_t accum_iter = 1;
  double blr = 3e-4;  // peak lr = blr x batch x accum / 256, unless lr > 0
  double lr = 0;
  double min_lr = 1e-6;
  double layer_decay = 0.65;
  double drop_path = 0.1;
  double clip_grad = 0;  // 0 = off
  train::AdamWConfig adamw{0.05, 0.9, 0.999, 1e-8};
  MixupConfig mix;
  double reprob = 0.25;                          // random erasing probability
  std::vector<double> crop_scale = {0.08, 1.0};  // RandomResizedCrop scale (timm's default for training)
  double head_init_std = 0.01;
  std::string rand_augment = "rand-m9-mstd0.5-inc1";  // timm's spec; none = off
  int64_t num_classes = 0;                            // 0 = the training set's
  double peak_lr() const { return lr > 0 ? lr : blr * static_cast<double>(batch_size * accum_iter) / 256.0; }
  void validate() const;  // throws std::invalid_argument naming the key
};

struct FinetuneSetup {
  model::VitConfig arch;     // the encoder's architecture
  model::TensorMap encoder;  // its weights (timm names); empty = from scratch
  std::string encoder_what;  // where they came from, for errors and the log
  data::DataConfig data;
  FinetuneConfig cfg;
  core::Runtime runtime;
  uint64_t seed = 0;
  int64_t log_every = 50, checkpoint_every = 500;  // iterations
};

// Where and how to run: a run folder request (train/run_folder.h).
using FinetuneOptions = train::RunRequest;

struct FinetuneSummary {
  int64_t epochs_done = 0, iterations = 0;
  double best_acc1 = 0, last_acc1 = 0, last_acc5 = 0;  // percent
  bool finished = false;
  int stopped_by = 0;  // the signal that stopped it, or 0
  std::vector<std::string> written;
};

FinetuneSummary finetune(const FinetuneSetup& setup, const FinetuneOptions& opts);

// Top-1 and top-5 accuracy (percent) and mean cross-entropy of a classifier over a labeled source (eval
// transform), in batches.
struct Accuracy {
  double acc1 = 0, acc5 = 0, loss = 0;
  int64_t images = 0;
};
class ClassifierImpl;
Accuracy evaluate_classifier(ClassifierImpl& c, std::shared_ptr<const data::ImageSource> source,
                             const data::DataConfig& dc, int64_t batch_size, const core::Runtime& runtime);

}  // namespace dbot::finetune
