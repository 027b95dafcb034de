// The pretraining Trainer: runs (or resumes) a multi-stage dBOT pretraining into a RunFolder.
//
//   pretrain()   = open the run folder, load the data, build a Trainer, resume, run
//   Trainer      = setup (distiller on the runtime's device, optimizer, loss scaler, lr schedule),
//                  resume(checkpoint), run() over epochs (stage boundaries, checkpoints, metrics),
//                  train_step(batch): the one step that pretraining and `dbot bench step` both run.
//
// One optimizer step per optim.accum_iter iterations (gradients are zeroed at each epoch start, as MAE);
// a checkpoint taken inside an accumulation window keeps the partial gradients, so resuming is exact.
// The lr comes from the precomputed schedule (warmup + cosine, restarted at every stage). The step never
// waits for the device: losses are summed on the device and checked for NaN/Inf at log steps and before
// every checkpoint write (the error names the iteration range), so a non-finite loss never overwrites a
// good checkpoint.
#pragma once

#include <string>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/data/loader.h"
#include "dbot/dist/grad_sync.h"
#include "dbot/mkd/distiller.h"
#include "dbot/train/loss_scaler.h"
#include "dbot/train/optim.h"
#include "dbot/train/run_folder.h"

namespace dbot::train {

struct TrainConfig {
  uint64_t seed = 0;
  int64_t log_every = 50;          // iterations between metrics lines
  int64_t checkpoint_every = 500;  // iterations between checkpoint-last.pt writes (also at each epoch end)
};

// Everything pretraining needs; the recipe layer composes it from YAML.
struct PretrainConfig {
  model::VitConfig model;
  mkd::MkdConfig mkd;
  data::DataConfig data;
  OptimConfig optim;
  TrainConfig train;
};

struct PretrainOptions {
  std::string run_dir;
  std::string config_yaml;            // the resolved recipe: saved as config.yaml and in every checkpoint
  bool resume = false;                // continue from run_dir/checkpoint-last.pt
  bool overwrite = false;             // delete the run in run_dir first (RunFolder); excludes resume
  bool accept_recipe_change = false;  // resume although config_yaml differs from the folder's
  int64_t stop_after = -1;            // stop (with a checkpoint) once this many global iterations are done
                                      // (so does a SIGINT/SIGTERM while a train::StopOnSignal is installed)
  bool quiet = false;                 // no progress lines
};

struct PretrainSummary {
  int64_t stages_done = 0;  // stages completed (stage-<k>.pt written for k = 1..stages_done)
  int64_t iterations = 0;   // iterations run by this call
  double seconds = 0.0;     // wall time of this call's training loop
  double images_per_s = 0.0;
  bool finished = false;  // all stages complete
  int stopped_by = 0;     // the signal that stopped it (train/interrupt.h; checkpoint-last.pt written), or 0
};

// One iteration's input: augmented uint8 images [B, C, H, W] (host or device; normalized on the device in
// train_step) and where it sits in the run.
struct Batch {
  at::Tensor images;
  int64_t epoch = 0, iteration = 0, global = 0;  // iteration within the epoch; global = epoch * ipe + iteration
  at::Generator rng;                             // the step's generator: masking noise and drop path continue from it
};

class Trainer {
 public:
  // start: pretrained teacher/student weights for a new run (train/pretrained.h: read_start_weights).
  Trainer(const PretrainConfig& cfg, const core::Runtime& runtime, int64_t iters_per_epoch,
          dist::GradSync* grad_sync = nullptr, const mkd::StartWeights& start = {});

  // Restores a checkpoint-last.pt (networks, optimizer, loss scale, partial gradients, position).
  void resume(const std::string& checkpoint_path);

  // Forward + backward of one batch; at the end of an accumulation window: gradient sync, unscale and
  // check (fp16), clipping, the AdamW update with the scheduled lr, zeroing. Returns the loss (on the
  // device, not synchronized).
  at::Tensor train_step(const Batch& batch);

  // Trains from the resume point to the end (or stop_after) into the run folder.
  PretrainSummary run(data::Loader& loader, RunFolder& folder, const PretrainOptions& opts);

  mkd::Distiller& distiller() { return distiller_; }
  AdamW& optimizer() { return *optimizer_; }
  const AdamW& optimizer() const { return *optimizer_; }
  const LossScaler& loss_scaler() const { return scaler_; }
  const std::vector<double>& lr_schedule() const { return lrs_; }

 private:
  struct Progress;  // counters of one run() call
  struct Window;    // counters between two log lines
  bool run_epoch(int64_t epoch, data::Loader& loader, RunFolder& folder, const PretrainOptions& opts,
                 Progress& progress);
  void log_step(double loss, int64_t stage, int64_t epoch, int64_t it, int64_t global, const Window& w,
                RunFolder& folder, const PretrainOptions& opts);
  void optimizer_update(double lr);
  // Throws when a loss since the last check was not finite (one host synchronization).
  void check_losses(int64_t stage, int64_t epoch, int64_t up_to_iteration, const std::string& last_path);
  void save(const std::string& path, int64_t epoch, int64_t iteration, const std::string& config_yaml);
  uint64_t bytes_to_write() const;  // checkpoint and stage files still to come, for RunFolder::check_free_space

  PretrainConfig cfg_;
  core::Runtime runtime_;
  int64_t iters_per_epoch_;
  mkd::Distiller distiller_;
  std::unique_ptr<AdamW> optimizer_;
  LossScaler scaler_;
  dist::GradSync default_sync_;
  dist::GradSync* grad_sync_;
  std::vector<double> lrs_;
  int64_t start_epoch_ = 0, start_iteration_ = 0;
  at::Tensor unchecked_loss_sum_, epoch_loss_sum_;  // device-side accumulators (double)
  int64_t first_unchecked_ = 0;                     // iteration (in epoch) of the first unchecked loss
};

PretrainSummary pretrain(const PretrainConfig& cfg, const core::Runtime& runtime, const PretrainOptions& opts);

}  // namespace dbot::train
