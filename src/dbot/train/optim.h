// AdamW with the weight-decay groups of MAE/dBOT, written for this project so that its state is plain named
// tensors (checkpointed by parameter name, readable from Python) and each step is a handful of multi-tensor
// ops. Same update as torch.optim.AdamW (decoupled decay, bias correction from one step count).
//
// Groups: no weight decay for 1-D parameters and names ending in ".bias"; everything else decayed
// (cls_token and mask_token, [1, 1, D], are decayed as in the official code).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

namespace dbot::train {

struct AdamWConfig {
  double weight_decay = 0.05;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
};

// True when the parameter is excluded from weight decay.
bool no_weight_decay(const std::string& name, const at::Tensor& param);

class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, at::Tensor>> named_params, AdamWConfig cfg);

  void step(double lr);  // one update with the gradients currently in .grad()
  void zero_grad();      // sets gradients to zero (keeps the buffers)
  // Global L2 norm of all gradients; when max_norm > 0, scales them so it is at most max_norm.
  double clip_grad_norm(double max_norm);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  std::vector<at::Tensor>& exp_avg() { return exp_avg_; }        // same order as params()
  std::vector<at::Tensor>& exp_avg_sq() { return exp_avg_sq_; }  // same order as params()
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<size_t> decay_idx_, no_decay_idx_;
  AdamWConfig cfg_;
  int64_t step_ = 0;
};

}  // namespace dbot::train
