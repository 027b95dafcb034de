// The pretraining engine: runs (or resumes) a multi-stage dBOT pretraining into a run folder.
//
// Run folder: config.yaml (resolved recipe), metrics.jsonl (one line per log step and per epoch),
// checkpoint-last.pt (every train.checkpoint_every iterations and at each epoch end), stage-<k>.pt at the
// end of stage k (the stage-k student and the teacher it learned from; no optimizer state).
//
// One optimizer step per optim.accum_iter iterations; the lr comes from the precomputed schedule
// (warmup + cosine, restarted at every stage); gradients are zeroed at each epoch start (as MAE).
#pragma once

#include <string>

#include "dbot/io/config.h"

namespace dbot::train {

struct PretrainOptions {
  std::string run_dir;
  bool resume = false;      // continue from run_dir/checkpoint-last.pt
  bool bf16 = false;        // bf16 autocast for the forward passes
  int64_t stop_after = -1;  // stop (with a checkpoint) once this many global iterations are done
  bool quiet = false;       // no progress lines
};

struct PretrainSummary {
  int64_t stages_done = 0;  // stages completed (stage-<k>.pt written for k = 1..stages_done)
  int64_t iterations = 0;   // iterations run by this call
  double seconds = 0.0;     // wall time of this call's training loop
  double images_per_s = 0.0;
  bool finished = false;  // all stages complete
};

PretrainSummary pretrain(const io::RunConfig& cfg, const PretrainOptions& opts);

}  // namespace dbot::train
