#include "dbot/train/schedule.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace dbot::train {

void validate_stage_epochs(const std::vector<int64_t>& b) {
  if (b.size() < 2 || b.front() != 0) {
    throw std::invalid_argument(
        "mkd.stage_epochs must start at 0 and name at least one stage end, e.g. [0, 800, 1600]");
  }
  for (size_t i = 1; i < b.size(); ++i) {
    if (b[i] <= b[i - 1]) throw std::invalid_argument("mkd.stage_epochs must be strictly increasing");
  }
}

double lr_at(double t, double stage_len, const ScheduleConfig& cfg) {
  if (t < cfg.warmup_epochs) return cfg.peak_lr * t / cfg.warmup_epochs;
  const double span = stage_len - cfg.warmup_epochs;
  const double progress = span > 0 ? (t - cfg.warmup_epochs) / span : 1.0;
  return cfg.min_lr + (cfg.peak_lr - cfg.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

int64_t stage_of_epoch(const std::vector<int64_t>& b, int64_t epoch) {
  for (size_t s = 1; s < b.size(); ++s) {
    if (epoch < b[s]) return static_cast<int64_t>(s);
  }
  throw std::out_of_range("epoch " + std::to_string(epoch) + " is past the last stage");
}

std::vector<double> lr_schedule(const ScheduleConfig& cfg) {
  validate_stage_epochs(cfg.stage_epochs);
  const int64_t ipe = cfg.iters_per_epoch;
  std::vector<double> lrs;
  lrs.reserve(static_cast<size_t>(cfg.stage_epochs.back() * ipe));
  double current = 0.0;
  for (int64_t epoch = 0; epoch < cfg.stage_epochs.back(); ++epoch) {
    const int64_t s = stage_of_epoch(cfg.stage_epochs, epoch);
    const int64_t start = cfg.stage_epochs[s - 1];
    const double len = static_cast<double>(cfg.stage_epochs[s] - start);
    for (int64_t i = 0; i < ipe; ++i) {
      if (i % cfg.accum_iter == 0) {
        const double t = static_cast<double>(i) / static_cast<double>(ipe) + static_cast<double>(epoch - start);
        current = lr_at(t, len, cfg);
      }
      lrs.push_back(current);
    }
  }
  return lrs;
}

}  // namespace dbot::train
