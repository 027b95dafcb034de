// Recipes: YAML files layered on the built-in defaults, plus dotted-key overrides (--set optim.lr=1e-3).
// Every key a recipe or an override names must exist in the defaults; an unknown key is an error that
// names it and the file. The resolved tree is what gets saved as <run>/config.yaml and in checkpoints.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "dbot/data/dataset.h"
#include "dbot/mkd/distiller.h"
#include "dbot/train/optim.h"

namespace dbot::io {

struct OptimConfig {
  int64_t batch_size = 256;
  int64_t accum_iter = 1;
  double blr = 1.5e-4;  // base lr: peak lr = blr * effective batch / 256 (unless lr > 0)
  double lr = 0.0;      // absolute peak lr; 0 = derive from blr
  double min_lr = 0.0;
  double warmup_epochs = 40;
  double clip_grad = 0.0;  // global-norm clipping; 0 = off
  train::AdamWConfig adamw;
  double peak_lr(int64_t world_size = 1) const;
};

struct TrainConfig {
  uint64_t seed = 0;
  int64_t threads = 0;             // 0 = all cores
  std::string precision = "auto";  // auto | bf16 | fp32
  int64_t log_every = 50;          // iterations between metrics lines
  int64_t checkpoint_every = 500;  // iterations between checkpoint-last.pt writes (also at each epoch end)
};

struct EvalConfig {
  int64_t knn_k = 20;
  double knn_temperature = 0.07;
  int64_t linprobe_epochs = 20;
  double linprobe_lr = 1e-3;
  int64_t linprobe_batch_size = 256;
  double linprobe_weight_decay = 1e-4;
  int64_t batch_size = 500;  // feature extraction
};

struct RunConfig {
  model::VitConfig model;
  mkd::MkdConfig mkd;
  std::vector<int64_t> stage_epochs;
  data::DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  EvalConfig eval;
  YAML::Node tree;  // the resolved recipe
  std::string to_yaml() const;
};

// The defaults every recipe is layered on (the documented schema).
YAML::Node default_tree();

// Loads defaults, merges the recipe file (if not empty), applies "a.b=value" overrides, builds RunConfig.
RunConfig load_config(const std::string& recipe_path, const std::vector<std::string>& overrides = {});
// Same from YAML text (checkpoints carry their config as text).
RunConfig config_from_yaml(const std::string& yaml_text, const std::string& origin);

// Typed view of a resolved tree; throws naming the key when a value has the wrong type or range.
RunConfig build_config(const YAML::Node& tree, const std::string& origin);

// Applies one "dotted.key=value" override to tree (the key must exist).
void apply_override(YAML::Node tree, const std::string& assignment);

}  // namespace dbot::io
