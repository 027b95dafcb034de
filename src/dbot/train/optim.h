// AdamW with the weight-decay groups of MAE/dBOT, written for this project so that its state is plain named
// tensors (checkpointed by parameter name, readable from Python) and each step is a handful of multi-tensor
// ops (the _foreach form, which the golden tests pin), or fused: one pass per element, by dbot's kernel for
// fp32 CPU parameters (adamw_cpu, on every LibTorch) and elsewhere by torch.optim.AdamW's fused kernel where
// LibTorch has one (CUDA on 2.x). The Trainer and fine-tuning build it by make_training_adamw (fused where it can);
// AdamW.FusedKernelMatchesForeach holds it to the _foreach form. Same update as torch.optim.AdamW (decoupled
// decay, bias correction from one step count).
//
// Groups (pretraining's default rule): no weight decay for 1-D parameters and names ending in ".bias";
// everything else decayed (cls_token and mask_token, [1, 1, D], are decayed as in the official code). Another
// rule can give each parameter an lr scale and its decay (fine-tuning's layer-wise lr decay, finetune/).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dbot/model/vit.h"

namespace dbot::train {

struct AdamWConfig {
  double weight_decay = 0.05;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  bool fused = false;  // one pass per element (only where fused_adamw_available)
};

// The recipe's optim section: batch, accumulation, lr rule, clipping and AdamW's hyper-parameters.
struct OptimConfig {
  int64_t batch_size = 256;  // per process
  int64_t accum_iter = 1;
  double blr = 1.5e-4;  // base lr: peak lr = blr * effective batch / 256 (unless lr > 0)
  double lr = 0.0;      // absolute peak lr; 0 = derive from blr
  double min_lr = 0.0;
  double warmup_epochs = 40;
  double clip_grad = 0.0;  // global-norm clipping; 0 = off
  AdamWConfig adamw;
  double peak_lr(int64_t world_size = 1) const;
};

// True when the parameter is excluded from weight decay.
bool no_weight_decay(const std::string& name, const at::Tensor& param);

// Whether AdamW's fused form takes these parameters: dbot's CPU kernel (fp32, contiguous), or LibTorch's kernel
// for their device (contiguous).
bool fused_adamw_available(const std::vector<std::pair<std::string, at::Tensor>>& named_params);

// A parameter's group: its lr is lr * lr_scale, its decoupled weight decay weight_decay * (decay ? 1 : 0).
struct ParamGroup {
  double lr_scale = 1.0;
  bool decay = true;
};
using ParamGroupRule = std::function<ParamGroup(const std::string& name, const at::Tensor& param)>;

// The optimizer's state by parameter name (what a checkpoint stores).
struct AdamWState {
  int64_t step = 0;
  model::TensorMap exp_avg, exp_avg_sq;
};

class AdamW {
 public:
  // rule: empty = no_weight_decay's groups, lr scale 1.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> named_params, AdamWConfig cfg, const ParamGroupRule& rule = {});

  void step(double lr);  // one update with the gradients currently in .grad()
  void zero_grad();      // sets gradients to zero (keeps the buffers)
  // The defined gradients, in parameter order.
  std::vector<at::Tensor> grads() const;
  // Global L2 norm of all gradients as a 0-dim device tensor (no host synchronization); when max_norm > 0,
  // scales them by min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_.
  at::Tensor clip_grad_norm(double max_norm);

  // After a parameter changed shape (the decoder's last layer when the teacher's width changes at a stage
  // switch): its moments restart at zero in the new shape. Returns the names of the parameters reset.
  std::vector<std::string> fit_state_to_params();

  AdamWState state() const;
  // Restores a state() taken from an optimizer over the same parameter names and shapes; errors name `what`.
  void load_state(const AdamWState& state, const std::string& what);

  int64_t step_count() const { return step_; }
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  at::Tensor fused_step_;  // the fused kernel's step count: fp32 scalar on the parameters' device
  struct Group {
    std::vector<size_t> idx;
    double lr_scale, weight_decay;
  };
  std::vector<Group> groups_;  // parameters of equal (lr scale, weight decay), in order of first appearance
  AdamWConfig cfg_;
  int64_t step_ = 0;
};

// The AdamW that training builds: cfg with the fused form wherever fused_adamw_available (one pass per element
// instead of ten: dbot's kernel on the CPU, LibTorch's on CUDA; the demo's update 2.0-3.2 -> 0.2 ms on the CPU,
// docs/PERFORMANCE.md), else the _foreach form.
std::unique_ptr<AdamW> make_training_adamw(std::vector<std::pair<std::string, at::Tensor>> named_params,
                                           AdamWConfig cfg, const ParamGroupRule& rule = {});

}  // namespace dbot::train
