// Recipes: YAML files layered on the built-in defaults, plus dotted-key overrides (--set optim.lr=1e-3).
// This layer sits above every other: each layer owns its config struct (model::VitConfig, mkd::MkdConfig,
// data::DataConfig, train::OptimConfig, train::TrainConfig, core::RuntimeConfig, eval::EvalConfig,
// finetune::FinetuneConfig) with
// its defaults, and one schema here maps YAML keys onto their fields; the default tree is generated from
// the structs, so every default is written once. Every key a recipe or an override names must exist in the
// defaults; an unknown key is an error that names it and the file. The resolved tree is what gets saved
// as <run>/config.yaml and in checkpoints.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/eval/evaluate.h"
#include "dbot/finetune/finetune.h"
#include "dbot/train/trainer.h"

namespace dbot::recipe {

struct Recipe : train::PretrainConfig {
  core::RuntimeConfig runtime;
  eval::EvalConfig eval;
  finetune::FinetuneConfig finetune;
  YAML::Node tree;  // the resolved recipe
  std::string to_yaml() const;
};

// The defaults every recipe is layered on (the documented schema), generated from the config structs.
YAML::Node default_tree();

// Loads defaults, merges the recipe file (if not empty), applies "a.b=value" overrides, builds the Recipe.
Recipe load_config(const std::string& recipe_path, const std::vector<std::string>& overrides = {});
// Same from YAML text (checkpoints carry their config as text).
Recipe config_from_yaml(const std::string& yaml_text, const std::string& origin);

// Typed view of a resolved tree; throws naming the key when a value has the wrong type or range.
Recipe build_config(const YAML::Node& tree, const std::string& origin);

// Applies one "dotted.key=value" override to tree (the key must exist).
void apply_override(YAML::Node tree, const std::string& assignment);
// Sets an existing dotted key of tree to a value (used for command-line flags that mirror recipe keys).
template <typename T>
void set_key(YAML::Node tree, const std::string& dotted, const T& value) {
  const auto dot = dotted.find('.');
  if (dot == std::string::npos) {
    tree[dotted] = value;
    // An empty list in flow style ("[]"), as it reads back: the resolved YAML then round-trips unchanged.
    if (tree[dotted].IsSequence() && tree[dotted].size() == 0) tree[dotted].SetStyle(YAML::EmitterStyle::Flow);
  } else {
    set_key(tree[dotted.substr(0, dot)], dotted.substr(dot + 1), value);
  }
}

}  // namespace dbot::recipe
