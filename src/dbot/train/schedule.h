// Learning-rate schedule of dBOT: per stage, linear warmup then half-cosine to min_lr, restarted at every
// stage boundary (MAE's adjust_learning_rate with the epoch counted from the stage start). Precomputed as
// one value per iteration so it is easy to test and to inspect.
#pragma once

#include <cstdint>
#include <vector>

namespace dbot::train {

struct ScheduleConfig {
  double peak_lr = 1e-3;
  double min_lr = 0.0;
  double warmup_epochs = 40;
  std::vector<int64_t> stage_epochs = {0, 800, 1600};  // boundaries; K stages = size - 1
  int64_t iters_per_epoch = 1;
  int64_t accum_iter = 1;  // lr is set on iterations with (iteration-in-epoch % accum_iter) == 0
};

// lr at fractional epoch t within a stage of stage_len epochs.
double lr_at(double t, double stage_len, const ScheduleConfig& cfg);

// The lr in effect at every global iteration of the run: stage_epochs.back() * iters_per_epoch values.
std::vector<double> lr_schedule(const ScheduleConfig& cfg);

// Stage (1-based) that contains `epoch`, and that stage's first epoch.
int64_t stage_of_epoch(const std::vector<int64_t>& stage_epochs, int64_t epoch);

// Validates boundaries: starts at 0, strictly increasing, at least one stage. Throws naming the field.
void validate_stage_epochs(const std::vector<int64_t>& stage_epochs);

}  // namespace dbot::train
