#include "dbot/train/lars.h"

namespace dbot::train {

Lars::Lars(std::vector<std::pair<std::string, at::Tensor>> named_params, LarsConfig cfg)
    : params_(std::move(named_params)), mu_(params_.size()), cfg_(cfg) {}

void Lars::step(double lr) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i].second;
    at::Tensor update = p.grad();
    if (!update.defined()) continue;
    if (p.dim() > 1) {
      update = update.add(p, cfg_.weight_decay);
      const auto param_norm = p.norm(), update_norm = update.norm();  // 0-dim, on p's device
      const auto one = at::ones_like(param_norm);
      const auto q = at::where(param_norm > 0,
                               at::where(update_norm > 0, cfg_.trust_coefficient * param_norm / update_norm, one), one);
      update = update * q;
    }
    if (!mu_[i].defined()) mu_[i] = at::zeros_like(p);
    mu_[i].mul_(cfg_.momentum).add_(update);
    p.add_(mu_[i], -lr);
  }
}

void Lars::zero_grad() {
  for (auto& [name, p] : params_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

}  // namespace dbot::train
