// Dynamic loss scaling for fp16 training, with the semantics of PyTorch's torch.amp.GradScaler:
// the loss is multiplied by `scale` before backward; before the optimizer step the gradients are divided
// by it and checked; a step with a non-finite gradient is skipped and the scale multiplied by
// backoff_factor (0.5); after growth_interval (2000) good steps in a row it is multiplied by
// growth_factor (2). Initial scale 2^16. Disabled (scale 1, nothing checked) for fp32 and bf16.
// Reading the found-inf flag is one host synchronization per optimizer step, in fp16 only.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace dbot::train {

struct LossScalerState {
  double scale = 65536.0;
  int64_t growth_tracker = 0;  // good steps since the last change
};

class LossScaler {
 public:
  explicit LossScaler(bool enabled, double init_scale = 65536.0, double growth_factor = 2.0,
                      double backoff_factor = 0.5, int64_t growth_interval = 2000);

  bool enabled() const { return enabled_; }
  double scale() const { return enabled_ ? state_.scale : 1.0; }
  at::Tensor scale_loss(const at::Tensor& loss) const;  // loss * scale
  // Divides the gradients by the scale; returns true when all of them are finite (the step may proceed).
  bool unscale_and_check(const std::vector<at::Tensor>& grads) const;
  // Updates the scale after an optimizer step attempt (found_finite = unscale_and_check's answer).
  void update(bool found_finite);

  const LossScalerState& state() const { return state_; }
  void load_state(const LossScalerState& s) { state_ = s; }

 private:
  bool enabled_;
  double growth_factor_, backoff_factor_;
  int64_t growth_interval_;
  LossScalerState state_;
};

}  // namespace dbot::train
