#include "dbot/train/loss_scaler.h"

namespace dbot::train {

LossScaler::LossScaler(bool enabled, double init_scale, double growth_factor, double backoff_factor,
                       int64_t growth_interval)
    : enabled_(enabled),
      growth_factor_(growth_factor),
      backoff_factor_(backoff_factor),
      growth_interval_(growth_interval) {
  state_.scale = init_scale;
}

at::Tensor LossScaler::scale_loss(const at::Tensor& loss) const { return enabled_ ? loss * state_.scale : loss; }

bool LossScaler::unscale_and_check(const std::vector<at::Tensor>& grads) const {
  if (!enabled_ || grads.empty()) return true;
  at::NoGradGuard no_grad;
  at::_foreach_mul_(grads, 1.0 / state_.scale);
  // The sum of the norms is finite exactly when every gradient element is.
  return at::stack(at::_foreach_norm(grads, 2)).sum().isfinite().item<bool>();
}

void LossScaler::update(bool found_finite) {
  if (!enabled_) return;
  if (!found_finite) {
    state_.scale *= backoff_factor_;
    state_.growth_tracker = 0;
  } else if (++state_.growth_tracker == growth_interval_) {
    state_.scale *= growth_factor_;
    state_.growth_tracker = 0;
  }
}

}  // namespace dbot::train
