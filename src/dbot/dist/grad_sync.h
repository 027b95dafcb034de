// GradSync: the gradient-synchronization hook the Trainer calls once per optimizer step, after the last
// backward of an accumulation window and before unscaling, clipping and the update. In one process it does
// nothing; the data-parallel issue plugs in a bucketed all-reduce of flat gradients over c10d here.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace dbot::dist {

class GradSync {
 public:
  virtual ~GradSync() = default;
  // Makes every process's gradients the average over processes (in place). One process: no-op.
  virtual void synchronize(const std::vector<at::Tensor>& grads) {}
};

}  // namespace dbot::dist
