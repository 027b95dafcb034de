// Fine-tuning checkpoints (checkpoint-last.pt, checkpoint-best.pt): one plain pickled dict that Python opens
// with torch.load(weights_only=True), in the pretraining checkpoint's conventions (train/checkpoint.h):
//   {"format_version": 1, "kind": "finetune", "model": {classifier, timm names}, "model_arch": JSON,
//    "num_classes", "optimizer": {"step", "exp_avg", "exp_avg_sq", ...}, "grad_accum": {name: T} (inside an
//    accumulation window only), "epoch", "iteration" (where training continues), "best_acc1", "acc1",
//    "rng": {"scheme": "derived", "seed"}, "config": "<resolved recipe, YAML>"}
#pragma once

#include <string>

#include "dbot/finetune/classifier.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/optim.h"

namespace dbot::finetune {

struct FinetuneCheckpoint {
  model::TensorMap model, grad_accum;
  train::AdamWState optimizer;
  std::string model_arch, config;
  int64_t num_classes = 0, epoch = 0, iteration = 0;
  double best_acc1 = 0, acc1 = 0;
  uint64_t seed = 0;
};

// The classifier's parameters by name, in module order (what AdamW and the checkpoint's grad_accum see).
train::NamedTensors named_parameters(const ClassifierImpl& c);

// Written atomically. partial_grads: save the parameters' gradients (a stop inside an accumulation window).
void save_finetune_checkpoint(const std::string& path, Classifier& c, const train::AdamW& optimizer, bool partial_grads,
                              int64_t epoch, int64_t iteration, double best_acc1, double acc1, uint64_t seed,
                              const std::string& config_yaml);
// Errors name the file: unreadable, not a fine-tuning checkpoint, a field of the wrong type.
FinetuneCheckpoint load_finetune_checkpoint(const std::string& path);

}  // namespace dbot::finetune
