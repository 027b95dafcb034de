// The pretraining Trainer: runs (or resumes) a multi-stage dBOT pretraining into a RunFolder.
//
//   pretrain()   = open the run folder, load the data, build a Trainer, resume, run (pretrain.cpp)
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
//
// Data parallelism (a dist::Group of w processes): each rank trains on its shard of every global batch
// (data/loader.h) with its rows of the global masking noise (mkd/distiller.h); gradients are averaged by a
// bucketed all-reduce before the update (started during the backward pass on the CPU: dist/grad_sync.h), so every rank
// applies the same update to the same weights. Rank 0's student, teacher and optimizer state are broadcast when the run
// starts and the student again after every stage switch (the official code re-initializes each rank's student with its
// own seed after a switch and never re-broadcasts; here every rank holds identical state at all times). Losses are
// averaged across ranks for logs and the NaN check; a stop (signal or stop_after) is agreed on by all ranks at the same
// step; partial gradients are averaged before a checkpoint inside an accumulation window. Only rank 0
// writes (checkpoints, metrics, progress); the others read the same checkpoint-last.pt to resume.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/data/loader.h"
#include "dbot/dist/grad_sync.h"
#include "dbot/dist/process_group.h"
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

struct PretrainOptions : RunRequest {
  // Called after every training step and after every stage switch (stage_switch true), on every rank: for
  // tests and tools that inspect the state as it evolves.
  std::function<void(class Trainer&, bool stage_switch)> observe;
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
  // group: the data-parallel processes (null: one process); its world size must be runtime.world_size.
  Trainer(const PretrainConfig& cfg, const core::Runtime& runtime, int64_t iters_per_epoch,
          dist::Group* group = nullptr, const mkd::StartWeights& start = {});

  // Restores a checkpoint-last.pt (networks, optimizer, loss scale, partial gradients, position). A
  // checkpoint of another number of processes continues when the global batch (batch x accum x processes)
  // is the same; another global batch is refused unless accept_global_batch_change (the lr and the
  // iterations per epoch then follow the new one; training continues at the saved epoch and iteration).
  // Returns a line to print when the number of processes changed, else "".
  std::string resume(const std::string& checkpoint_path, bool accept_global_batch_change = false);

  int64_t global_batch() const;  // images per optimizer step: batch x accum x processes

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
  bool rank0() const { return group_ == nullptr || group_->rank() == 0; }
  int64_t world_size() const { return group_ == nullptr ? 1 : group_->world_size(); }
  double sum_over_ranks(double value);  // one all-reduce (value itself in one process)
  int agreed_stop_signal();             // the stop signal any rank received, the same on all (0: none)
  // Rank 0's student (and with everything: teacher, optimizer moments, gradients) onto every rank.
  void broadcast_state(bool everything);
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
  dist::Group* group_;
  std::unique_ptr<dist::GradSync> grad_sync_;  // no-op in one process, else the bucketed all-reduce
  std::vector<double> lrs_;
  int64_t start_epoch_ = 0, start_iteration_ = 0;
  at::Tensor unchecked_loss_sum_, epoch_loss_sum_;  // device-side accumulators (double)
  int64_t first_unchecked_ = 0;                     // iteration (in epoch) of the first unchecked loss
  double comm_s_ = 0;                               // seconds spent in collectives (data parallelism)
};

// group: the data-parallel processes, or null for one process. Every rank calls it; rank 0 owns the folder.
PretrainSummary pretrain(const PretrainConfig& cfg, const core::Runtime& runtime, const PretrainOptions& opts,
                         dist::Group* group = nullptr);

}  // namespace dbot::train
