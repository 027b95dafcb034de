// Checkpoints: one pickled plain dict that Python opens with torch.load (no dbot code needed):
//   {"format_version": 1, "model": {student encoder (timm names) + decoder (dBOT names)},
//    "teacher": {teacher encoder, timm names}, "optimizer": {"step", "exp_avg": {name: T},
//    "exp_avg_sq": {name: T}, "weight_decay", "betas", "eps"}, "stage", "epoch", "iteration",
//    "rng": {"scheme": "derived", "seed"}, "config": "<resolved recipe, YAML>"}
// epoch/iteration say where training continues: epoch `epoch`, iteration `iteration` within it.
// All randomness derives from (seed, purpose, index), so rng holds only the seed.
// Files are written atomically (temporary file + rename).
#pragma once

#include <map>
#include <string>

#include "dbot/mkd/distiller.h"
#include "dbot/train/optim.h"

namespace dbot::train {

constexpr int64_t kCheckpointFormatVersion = 1;

using model::load_state_dict;
using model::state_dict;
using model::TensorMap;

struct Checkpoint {
  int64_t format_version = kCheckpointFormatVersion;
  TensorMap model, teacher;
  bool has_optimizer = false;
  int64_t optimizer_step = 0;
  TensorMap exp_avg, exp_avg_sq;
  int64_t stage = 1, epoch = 0, iteration = 0;
  uint64_t seed = 0;
  std::string config;  // YAML
};

// torch.save-compatible bytes (zip container) of a value made of dicts, lists, strings, numbers and
// tensors, readable by Python's torch.load with its default weights_only=True.
std::vector<char> pickle_plain(const c10::IValue& value);

void save_checkpoint(const std::string& path, const mkd::Distiller& distiller, const AdamW* optimizer, int64_t epoch,
                     int64_t iteration, const std::string& config_yaml);

// Throws std::runtime_error naming the file when it is missing, truncated, not a dbot checkpoint, or of
// an unsupported format_version.
Checkpoint load_checkpoint(const std::string& path);

// Loads student, decoder, teacher (rebuilt with the saved depth) and stage; then the optimizer state.
void restore(mkd::Distiller& distiller, AdamW* optimizer, const Checkpoint& ckpt, const std::string& path);

// Number of blocks in an encoder state dict ("blocks.{i}." prefixes).
int64_t count_blocks(const TensorMap& state, const std::string& prefix = "blocks.");

}  // namespace dbot::train
