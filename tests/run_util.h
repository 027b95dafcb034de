// The tiny pretraining run the engine tests share: a recipe on the tiny network (tiny_config.h's sizes)
// over a fake Fashion-MNIST folder, and quiet options for a run folder.
#pragma once

#include <string>
#include <vector>

#include "dbot/recipe/recipe.h"
#include "dbot/train/trainer.h"

namespace dbot::test {

// Two stages of 2 epochs, batch 16, drop path 0.1, lr 1e-3 with a 1-epoch warmup, clipping at 1, fp32,
// a log line per iteration and a checkpoint every 3; `extra` overrides come last and win.
inline recipe::Recipe tiny_run(const std::string& data_dir, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> overrides = {
      "model.name=vit_tiny_patch2_8", "model.embed_dim=16",      "model.depth=2",       "model.num_heads=2",
      "model.drop_path=0.1",          "mkd.decoder_embed_dim=8", "mkd.decoder_depth=1", "mkd.decoder_num_heads=2",
      "mkd.stage_epochs=[0, 2, 4]",   "data.path=" + data_dir,   "optim.batch_size=16", "optim.lr=1e-3",
      "optim.warmup_epochs=1",        "optim.clip_grad=1.0",     "train.log_every=1",   "train.checkpoint_every=3",
      "train.precision=fp32"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return recipe::load_config("", overrides);
}

inline train::PretrainOptions options(const std::string& run_dir, const recipe::Recipe& cfg) {
  train::PretrainOptions o;
  o.run_dir = run_dir;
  o.config_yaml = cfg.to_yaml();
  o.quiet = true;
  return o;
}

}  // namespace dbot::test
