#include "dbot/train/optim.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/train/adamw_cpu.h"

namespace dbot::train {

double OptimConfig::peak_lr(int64_t world_size) const {
  if (lr > 0.0) return lr;
  return blr * static_cast<double>(batch_size * accum_iter * world_size) / 256.0;
}

bool no_weight_decay(const std::string& name, const at::Tensor& param) {
  const std::string suffix = ".bias";
  const bool is_bias =
      name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return param.dim() == 1 || is_bias;
}

namespace {
bool adamw_cpu_supports_all(const std::vector<std::pair<std::string, at::Tensor>>& named_params) {
  return std::all_of(named_params.begin(), named_params.end(),
                     [](const auto& item) { return adamw_cpu_supports(item.second); });
}
}  // namespace

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> named_params, AdamWConfig cfg, const ParamGroupRule& rule)
    : params_(std::move(named_params)), cfg_(cfg) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    const ParamGroup g = rule ? rule(name, p) : ParamGroup{1.0, !no_weight_decay(name, p)};
    const double wd = g.decay ? cfg_.weight_decay : 0.0;
    auto it = std::find_if(groups_.begin(), groups_.end(),
                           [&](const Group& x) { return x.lr_scale == g.lr_scale && x.weight_decay == wd; });
    if (it == groups_.end()) it = groups_.insert(groups_.end(), Group{{}, g.lr_scale, wd});
    it->idx.push_back(i);
  }
  if (cfg_.fused) {
    for (const auto& [name, p] : params_) {  // the CPU kernels walk raw data, ignoring strides
      if (!p.is_contiguous()) throw std::invalid_argument("fused AdamW: parameter '" + name + "' is not contiguous");
    }
    if (!fused_adamw_available(params_)) {
      throw std::invalid_argument("fused AdamW is not available in LibTorch " + compat::torch_version() +
                                  " for these parameters");
    }
    // dbot's kernel wherever it applies, also where LibTorch has one: LibTorch's CPU kernel (2.4+) is one call
    // per tensor, 0.55 ms per demo step against adamw_cpu's 0.22 over all tensors at once (docs/PERFORMANCE.md).
    if (!adamw_cpu_supports_all(params_)) {
      fused_step_ = at::zeros({}, params_.front().second.options().dtype(at::kFloat));
    }
  }
}

bool fused_adamw_available(const std::vector<std::pair<std::string, at::Tensor>>& named_params) {
  if (named_params.empty()) return false;
  if (adamw_cpu_supports_all(named_params)) return true;
  // LibTorch's kernel walks raw data too (the constructor refuses a non-contiguous parameter).
  const bool contiguous = std::all_of(named_params.begin(), named_params.end(),
                                      [](const auto& item) { return item.second.is_contiguous(); });
  return contiguous && compat::has_fused_adamw(named_params.front().second.device());
}

std::unique_ptr<AdamW> make_training_adamw(std::vector<std::pair<std::string, at::Tensor>> named_params,
                                           AdamWConfig cfg, const ParamGroupRule& rule) {
  cfg.fused = fused_adamw_available(named_params);
  return std::make_unique<AdamW>(std::move(named_params), cfg, rule);
}

void AdamW::zero_grad() {
  for (auto& item : params_) {
    auto& g = item.second.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

std::vector<at::Tensor> AdamW::grads() const {
  std::vector<at::Tensor> out;
  for (const auto& item : params_) {
    if (item.second.grad().defined()) out.push_back(item.second.grad());
  }
  return out;
}

at::Tensor AdamW::clip_grad_norm(double max_norm) {
  at::NoGradGuard no_grad;
  auto grads = this->grads();
  if (grads.empty()) return at::zeros({}, at::kDouble);
  auto total = at::stack(at::_foreach_norm(grads, 2)).to(at::kDouble).norm();  // [] on the device
  if (max_norm > 0.0) {
    // As torch.nn.utils.clip_grad_norm_: multiply by the clamped coefficient (1 leaves values unchanged).
    auto coef = at::full({}, max_norm, total.options()).div(total + 1e-6).clamp_max(1.0).to(at::kFloat);
    for (auto& g : grads) g.mul_(coef);
  }
  return total;
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(step_));
  if (fused_step_.defined()) fused_step_.fill_(static_cast<double>(step_));  // LibTorch's kernel's bias correction
  auto update = [&](const std::vector<size_t>& idx, double lr, double weight_decay) {
    std::vector<at::Tensor> p, g, m, v;
    for (size_t i : idx) {
      const auto& grad = params_[i].second.grad();
      if (!grad.defined()) continue;  // skipped, as torch.optim skips it
      p.push_back(params_[i].second);
      g.push_back(grad);
      m.push_back(exp_avg_[i]);
      v.push_back(exp_avg_sq_[i]);
    }
    if (p.empty()) return;
    if (fused_step_.defined()) {
      compat::fused_adamw(p, g, m, v, fused_step_, lr, cfg_.beta1, cfg_.beta2, weight_decay, cfg_.eps);
      return;
    }
    if (cfg_.fused) {
      adamw_cpu(p, g, m, v, AdamWStep{step_, lr, cfg_.beta1, cfg_.beta2, weight_decay, cfg_.eps});
      return;
    }
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
  for (const auto& g : groups_) update(g.idx, lr * g.lr_scale, g.weight_decay);
}

AdamWState AdamW::state() const {
  AdamWState s;
  s.step = step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    s.exp_avg[params_[i].first] = exp_avg_[i];
    s.exp_avg_sq[params_[i].first] = exp_avg_sq_[i];
  }
  return s;
}

std::vector<std::string> AdamW::fit_state_to_params() {
  std::vector<std::string> reset;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    if (p.sizes() == exp_avg_[i].sizes()) continue;
    exp_avg_[i] = at::zeros_like(p, at::MemoryFormat::Contiguous);
    exp_avg_sq_[i] = at::zeros_like(p, at::MemoryFormat::Contiguous);
    reset.push_back(params_[i].first);
  }
  return reset;
}

void AdamW::load_state(const AdamWState& s, const std::string& what) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    auto m = s.exp_avg.find(name), v = s.exp_avg_sq.find(name);
    if (m == s.exp_avg.end() || v == s.exp_avg_sq.end()) {
      throw std::runtime_error(what + ": optimizer state lacks '" + name + "'");
    }
    if (m->second.sizes() != exp_avg_[i].sizes() || v->second.sizes() != exp_avg_sq_[i].sizes()) {
      throw std::runtime_error(what + ": optimizer state of '" + name + "' has shape " + c10::str(m->second.sizes()) +
                               ", the parameter is " + c10::str(exp_avg_[i].sizes()));
    }
    exp_avg_[i].copy_(m->second);
    exp_avg_sq_[i].copy_(v->second);
  }
  step_ = s.step;
}

}  // namespace dbot::train
