// GradSync: the gradient-synchronization hook the Trainer calls once per optimizer step: before_last_backward()
// before the backward pass that ends an accumulation window, synchronize() after it, before unscaling,
// clipping and the update. In one process both do nothing.
//
// AllReduceGradSync: gradients averaged across the ranks of a dist::Group (c10d) by an all-reduce of flat
// buckets of one dtype, so that every rank applies the same update. On the CPU the reduction overlaps the
// backward pass, as DDP's Reducer does: the buckets are laid out over the parameters in reverse order (the
// order in which backward produces their gradients; the first about 1 MB so that it fills early, then about
// 25 MB each); a post hook on each parameter's gradient accumulator counts it ready, and each bucket whose
// gradients are all accumulated is copied into its flat buffer and its all-reduce started, in bucket order
// (collectives must start in the same order on every rank), while backward goes on. synchronize() starts
// what is left (parameters that got no gradient), waits, and writes the means back. Gradients on a GPU are
// reduced after the backward pass (Gloo reduces host memory). Without before_last_backward() (a checkpoint
// inside an accumulation window), synchronize() reduces the given gradients in buckets of their own order.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace dbot::dist {

class Group;

class GradSync {
 public:
  virtual ~GradSync() = default;
  // Before the backward pass that ends an accumulation window, with the parameters whose gradients the next
  // synchronize() gets: an implementation may start reducing them while that backward pass runs.
  virtual void before_last_backward(const std::vector<at::Tensor>& params) {}
  // Makes every process's gradients the average over processes (in place). One process: no-op.
  virtual void synchronize(const std::vector<at::Tensor>& grads) {}
};

class AllReduceGradSync : public GradSync {
 public:
  explicit AllReduceGradSync(Group& group, int64_t bucket_bytes = 25 << 20, int64_t first_bucket_bytes = 1 << 20);
  ~AllReduceGradSync() override;
  void before_last_backward(const std::vector<at::Tensor>& params) override;
  // After before_last_backward(params): `grads` must be those parameters' defined gradients.
  void synchronize(const std::vector<at::Tensor>& grads) override;
  // Buckets whose all-reduce started inside the last backward pass, and all buckets (tests, benchmarks).
  int64_t started_in_backward() const { return started_in_backward_; }
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Hooks;  // the accumulators' post hooks (the autograd headers stay in the .cpp)
  struct Bucket {
    std::vector<size_t> members;  // indices into params_, in the order backward produces them
    size_t missing = 0;           // gradients not yet accumulated in this backward pass
    at::Tensor flat;              // the members' gradients, concatenated, while their all-reduce runs
    std::function<void()> wait;   // set while the all-reduce runs
  };
  void plan(const std::vector<at::Tensor>& params);
  void ready(size_t param);  // param's gradient is accumulated (its hook)
  void start(Bucket& b);
  void reduce_after_backward(const std::vector<at::Tensor>& grads);

  Group& group_;
  int64_t bucket_bytes_, first_bucket_bytes_;
  std::vector<at::Tensor> params_;
  std::vector<int64_t> planned_numel_;  // params_'s sizes when planned (a stage switch may resize one)
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // per parameter
  size_t next_ = 0;                // the next bucket to start
  bool armed_ = false;             // between before_last_backward and synchronize
  int64_t started_in_backward_ = 0;
  std::unique_ptr<Hooks> hooks_;
};

}  // namespace dbot::dist
