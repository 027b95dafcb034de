#include "dbot/dist/grad_sync.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <stdexcept>

#include "dbot/dist/process_group.h"

namespace dbot::dist {

namespace {

// The defined gradients of `grads`, concatenated into one flat buffer (a copy).
at::Tensor flatten(const std::vector<at::Tensor>& grads) {
  std::vector<at::Tensor> parts;
  parts.reserve(grads.size());
  for (const auto& g : grads) {
    if (g.defined()) parts.push_back(g.reshape({-1}));
  }
  return parts.empty() ? at::Tensor() : at::cat(parts);
}

// flatten's inverse: copies flat's consecutive pieces back into the defined gradients, in place.
void copy_back(const at::Tensor& flat, const std::vector<at::Tensor>& grads) {
  int64_t offset = 0;
  for (const auto& g : grads) {
    if (!g.defined()) continue;
    g.copy_(flat.slice(0, offset, offset + g.numel()).view(g.sizes()));
    offset += g.numel();
  }
}

// The gradients of params[k] for k in members (undefined where there is none).
std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& params, const std::vector<size_t>& members) {
  std::vector<at::Tensor> grads;
  grads.reserve(members.size());
  for (const size_t k : members) grads.push_back(params[k].grad());
  return grads;
}

}  // namespace

// One post hook per parameter's gradient accumulator, from before_last_backward to synchronize: only for
// that window, because a held accumulator outlives its graph, and the next forward pass would reuse it
// with the shape it was made for (a stage switch resizes decoder_predp with set_data).
struct AllReduceGradSync::Hooks {
  std::vector<decltype(torch::autograd::impl::grad_accumulator(std::declval<at::Tensor>()))> accumulators;
  std::vector<uintptr_t> keys;

  ~Hooks() {
    for (size_t i = 0; i < keys.size(); ++i) accumulators[i]->del_post_hook(keys[i]);
  }
};

AllReduceGradSync::AllReduceGradSync(Group& group, int64_t bucket_bytes, int64_t first_bucket_bytes)
    : group_(group), bucket_bytes_(bucket_bytes), first_bucket_bytes_(first_bucket_bytes) {}

AllReduceGradSync::~AllReduceGradSync() = default;

void AllReduceGradSync::plan(const std::vector<at::Tensor>& params) {
  params_ = params;
  planned_numel_.clear();
  buckets_.clear();
  bucket_of_.assign(params.size(), 0);
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {  // reverse order: backward produces the last layers' first
    const auto& p = params[k];
    const int64_t n = p.numel() * static_cast<int64_t>(p.element_size());
    const int64_t cap = buckets_.size() == 1 ? first_bucket_bytes_ : bucket_bytes_;
    const bool fits = !buckets_.empty() && params[buckets_.back().members.front()].scalar_type() == p.scalar_type() &&
                      bytes + n <= cap;
    if (!fits) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().members.push_back(k);
    bytes += n;
    bucket_of_[k] = buckets_.size() - 1;
  }
  for (const auto& p : params) planned_numel_.push_back(p.numel());
}

void AllReduceGradSync::before_last_backward(const std::vector<at::Tensor>& params) {
  if (group_.world_size() == 1) return;
  hooks_.reset();  // left by a window whose backward pass threw: its reductions are dropped
  for (auto& b : buckets_) {
    b.wait = nullptr;
    b.flat = at::Tensor();
  }
  armed_ = false;
  for (const auto& p : params) {
    if (!p.is_cpu()) return;  // GPU gradients: reduced after backward, through host memory
  }
  bool same = params.size() == params_.size();
  for (size_t k = 0; same && k < params.size(); ++k) {
    same =
        params[k].unsafeGetTensorImpl() == params_[k].unsafeGetTensorImpl() && params[k].numel() == planned_numel_[k];
  }
  if (!same) plan(params);
  for (auto& b : buckets_) b.missing = 0;
  hooks_ = std::make_unique<Hooks>();
  for (size_t k = 0; k < params_.size(); ++k) {
    // The accumulator of the graph that the forward pass just built (it holds it until backward frees it).
    auto acc = torch::autograd::impl::grad_accumulator(params_[k]);
    if (!acc) continue;  // requires no gradient: not waited for
    using torch::autograd::variable_list;
    hooks_->keys.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const variable_list& outputs, const variable_list& /*inputs*/) {
          ready(k);
          return outputs;
        })));
    hooks_->accumulators.push_back(std::move(acc));
    ++buckets_[bucket_of_[k]].missing;  // only hooked gradients are waited for
  }
  next_ = 0;
  started_in_backward_ = 0;
  armed_ = true;
}

void AllReduceGradSync::ready(size_t param) {
  if (!armed_) return;  // hooks live only while armed; this is a guard
  auto& b = buckets_[bucket_of_[param]];
  if (b.missing == 0 || --b.missing > 0) return;
  while (next_ < buckets_.size() && buckets_[next_].missing == 0) {
    start(buckets_[next_++]);
    ++started_in_backward_;
  }
}

void AllReduceGradSync::start(Bucket& b) {
  b.flat = flatten(grads_of(params_, b.members));
  if (!b.flat.defined()) return;  // no member got a gradient, on every rank alike
  b.wait = group_.start_all_reduce_sum(b.flat);
}

void AllReduceGradSync::synchronize(const std::vector<at::Tensor>& grads) {
  if (group_.world_size() == 1) return;
  if (!armed_) {
    reduce_after_backward(grads);
    return;
  }
  armed_ = false;
  size_t defined = 0;
  for (const auto& p : params_) defined += p.grad().defined() ? 1 : 0;
  if (defined != grads.size()) {
    throw std::logic_error("AllReduceGradSync: the gradients are not those of before_last_backward's parameters");
  }
  while (next_ < buckets_.size()) start(buckets_[next_++]);
  for (auto& b : buckets_) {
    if (!b.wait) continue;
    b.wait();
    b.wait = nullptr;
    copy_back(b.flat.div_(group_.world_size()), grads_of(params_, b.members));
    b.flat = at::Tensor();
  }
  hooks_.reset();
}

void AllReduceGradSync::reduce_after_backward(const std::vector<at::Tensor>& grads) {
  // Consecutive gradients of one dtype, up to bucket_bytes each, flattened into one buffer per bucket.
  size_t i = 0;
  while (i < grads.size()) {
    if (!grads[i].defined()) {
      ++i;
      continue;
    }
    std::vector<at::Tensor> bucket;
    int64_t bytes = 0;
    const auto dtype = grads[i].scalar_type();
    auto nbytes = [&](size_t k) { return static_cast<int64_t>(grads[k].numel() * grads[k].element_size()); };
    while (i < grads.size() && grads[i].defined() && grads[i].scalar_type() == dtype &&
           (bucket.empty() || bytes + nbytes(i) <= bucket_bytes_)) {
      bytes += nbytes(i);
      bucket.push_back(grads[i++]);
    }
    std::vector<at::Tensor> flat = {flatten(bucket)};
    group_.all_reduce_mean(flat);
    copy_back(flat[0], bucket);
  }
}

}  // namespace dbot::dist
