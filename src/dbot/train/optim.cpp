#include "dbot/train/optim.h"

#include <cmath>

namespace dbot::train {

bool no_weight_decay(const std::string& name, const at::Tensor& param) {
  const std::string suffix = ".bias";
  const bool is_bias =
      name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return param.dim() == 1 || is_bias;
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> named_params, AdamWConfig cfg)
    : params_(std::move(named_params)), cfg_(cfg) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    (no_weight_decay(params_[i].first, p) ? no_decay_idx_ : decay_idx_).push_back(i);
  }
}

void AdamW::zero_grad() {
  for (auto& item : params_) {
    auto& g = item.second.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

double AdamW::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (auto& item : params_) {
    if (item.second.grad().defined()) grads.push_back(item.second.grad());
  }
  if (grads.empty()) return 0.0;
  auto norms = at::_foreach_norm(grads, 2);
  const double total = at::stack(norms).to(at::kDouble).norm().item<double>();
  if (max_norm > 0.0) {
    const double coef = max_norm / (total + 1e-6);  // as torch.nn.utils.clip_grad_norm_
    if (coef < 1.0) at::_foreach_mul_(grads, coef);
  }
  return total;
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step_));
  auto update = [&](const std::vector<size_t>& idx, double weight_decay) {
    std::vector<at::Tensor> p, g, m, v;
    for (size_t i : idx) {
      const auto& grad = params_[i].second.grad();
      if (!grad.defined()) continue;
      p.push_back(params_[i].second);
      g.push_back(grad);
      m.push_back(exp_avg_[i]);
      v.push_back(exp_avg_sq_[i]);
    }
    if (p.empty()) return;
    if (weight_decay != 0.0) at::_foreach_mul_(p, 1.0 - lr * weight_decay);  // decoupled decay
    at::_foreach_mul_(m, cfg_.beta1);
    at::_foreach_add_(m, g, 1.0 - cfg_.beta1);
    at::_foreach_mul_(v, cfg_.beta2);
    at::_foreach_addcmul_(v, g, g, 1.0 - cfg_.beta2);
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, std::sqrt(bc2));
    at::_foreach_add_(denom, cfg_.eps);
    at::_foreach_addcdiv_(p, m, denom, -lr / bc1);
  };
  update(decay_idx_, cfg_.weight_decay);
  update(no_decay_idx_, 0.0);
}

}  // namespace dbot::train
