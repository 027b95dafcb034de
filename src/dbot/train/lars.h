// LARS as MAE's linear probe uses it (util/lars.py, from MoCo v3): SGD with momentum where a parameter of two
// or more dimensions has its update u = g + weight_decay * p scaled by the trust ratio
// trust_coefficient * |p| / |u| (1 when either norm is 0), and a 1-D parameter (a bias, a norm) gets g as it
// is, without weight decay or scaling. Then mu = momentum * mu + u; p -= lr * mu.
// Not timm's Lars: timm adapts every parameter when weight_decay > 0 and divides by |g| + wd |p| + eps.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace dbot::train {

struct LarsConfig {
  double weight_decay = 0.0;  // MAE's linear probe: 0 (following MoCo v1)
  double momentum = 0.9;
  double trust_coefficient = 0.001;
};

class Lars {
 public:
  Lars(std::vector<std::pair<std::string, at::Tensor>> named_params, LarsConfig cfg);
  void step(double lr);  // one update with the gradients in .grad() (parameters without one are skipped)
  void zero_grad();
  // The momentum buffer of parameter i (undefined before its first step).
  const at::Tensor& momentum_buffer(size_t i) const { return mu_.at(i); }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> mu_;
  LarsConfig cfg_;
};

}  // namespace dbot::train
