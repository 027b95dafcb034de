// Checkpoints: one pickled plain dict that Python opens with torch.load (no dbot code needed):
//   {"format_version": 3, "model": {student encoder (timm names) + decoder (dBOT names)},
//    "teacher": {teacher encoder, timm names}, "model_arch" and "teacher_arch": the two encoders'
//    architectures (JSON, model/layouts.h; the teacher's may differ from the student's), "teacher_input":
//    {"scale": [..], "shift": [..]} (only for a teacher with its own input normalization), "optimizer": {"step",
//    "exp_avg": {name: T}, "exp_avg_sq": {name: T}, "weight_decay", "betas", "eps"}, "loss_scaler": {"scale",
//    "growth_tracker"} (fp16 runs), "grad_accum": {name: T} (only when written inside a gradient-accumulation window:
//    the partial gradients, averaged over the ranks of a data-parallel run, so that a resume continues exactly),
//    "world_size" (the processes that trained it; absent: 1), "global_batch" (batch x accum x world_size;
//    absent: unknown), "stage", "epoch", "iteration", "rng": {"scheme":
//    "derived", "seed"}, "config": "<resolved recipe, YAML>"}
// epoch/iteration say where training continues: epoch `epoch`, iteration `iteration` within it. Tensors
// are stored on the CPU whatever the device, so a GPU checkpoint resumes on a CPU and the other way round.
// All randomness derives from (seed, purpose, index), so rng holds only the seed. Version 1 files (no
// loss_scaler, no grad_accum) and 2 (no architectures: the teacher is the student's shape) are still read.
// Reading goes through io/torch_pickle.h (data only, every length checked), not LibTorch's Unpickler. Files are written
// atomically (temporary file + rename).
#pragma once

#include <map>
#include <string>

#include "dbot/mkd/distiller.h"
#include "dbot/train/loss_scaler.h"
#include "dbot/train/optim.h"

namespace dbot::train {

constexpr int64_t kCheckpointFormatVersion = 3;

using model::load_state_dict;
using model::state_dict;
using model::TensorMap;

struct Checkpoint {
  int64_t format_version = kCheckpointFormatVersion;
  TensorMap model, teacher;
  bool has_optimizer = false;
  AdamWState optimizer;
  bool has_loss_scaler = false;
  LossScalerState loss_scaler;
  TensorMap grad_accum;  // partial gradients of an unfinished accumulation window; empty at boundaries
  int64_t stage = 1, epoch = 0, iteration = 0;
  int64_t world_size = 1;    // data-parallel processes that wrote it
  int64_t global_batch = 0;  // images per optimizer step (0: not recorded)
  uint64_t seed = 0;
  std::string config;                    // YAML
  std::string model_arch, teacher_arch;  // JSON (format 3); empty in older files
  mkd::TeacherInput teacher_input;       // a file teacher's own input normalization (absent: none)
};

// What a checkpoint holds besides the networks (all optional: stage-<k>.pt files hold none of it).
struct TrainingState {
  const AdamW* optimizer = nullptr;
  const LossScaler* loss_scaler = nullptr;  // saved when enabled (fp16)
  bool partial_grads = false;               // inside an accumulation window: save the student's gradients
  int64_t world_size = 1;                   // data-parallel processes
  int64_t global_batch = 0;                 // images per optimizer step
};

// torch.save-compatible bytes (zip container) of a value made of dicts, lists, strings, numbers and
// tensors, readable by Python's torch.load with its default weights_only=True.
std::vector<char> pickle_plain(const c10::IValue& value);

// The format's pieces, shared with the fine-tuning checkpoint (finetune/finetune_checkpoint.h): a plain
// string-keyed dict, tensors by name (stored on the CPU), the optimizer entry, and their readers (errors
// name the file and the key).
c10::impl::GenericDict plain_dict();
c10::Dict<std::string, at::Tensor> tensor_dict(const TensorMap& tensors);
TensorMap tensor_map(const c10::IValue& value, const std::string& path, const std::string& key);
c10::impl::GenericDict optimizer_dict(const AdamW& optimizer);
AdamWState optimizer_state(const c10::IValue& value, const std::string& path);
c10::impl::GenericDict rng_dict(uint64_t seed);  // {"scheme": "derived", "seed": seed}
// Partial gradients (grad_accum): the defined gradients of named parameters, and their restore onto the
// parameters' devices (a saved gradient of another shape than its parameter is an error naming `path`).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;
TensorMap defined_gradients(const NamedTensors& params);
void restore_gradients(const NamedTensors& params, const TensorMap& grads, const std::string& path);

void save_checkpoint(const std::string& path, const mkd::Distiller& distiller, int64_t epoch, int64_t iteration,
                     const std::string& config_yaml, const TrainingState& state = {});

// Throws std::runtime_error naming the file when it is missing, truncated, not a dbot checkpoint, or of
// an unsupported format_version.
Checkpoint load_checkpoint(const std::string& path);
// The same from a value io::read_torch_save gave; is_checkpoint: it has a format_version (a dbot checkpoint).
bool is_checkpoint(const c10::IValue& root);
Checkpoint checkpoint_from_value(const c10::IValue& root, const std::string& path);

// Loads student, decoder, teacher (rebuilt with the saved depth) and stage; then, when given, the optimizer
// state, the loss scaler and any partial gradients. Refuses a checkpoint written with another seed.
void restore(mkd::Distiller& distiller, AdamW* optimizer, LossScaler* loss_scaler, const Checkpoint& ckpt,
             const std::string& path);

}  // namespace dbot::train
