// compat: the only place that knows which LibTorch we build against.
// Debian's libtorch-dev is 1.13 (CPU only); the PyPI wheel is 2.x (CUDA, SDPA kernels).
// Everything version-specific (autocast switches, fused attention, generators) goes through here.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <cstdint>
#include <string>

namespace dbot::compat {

// "1.13.0", "2.15.0"...
std::string torch_version();

// True when this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX-BF16).
bool cpu_has_bf16();

// RAII: enables bf16 autocast on CPU for its lifetime (no-op when enabled == false),
// restores the previous state on exit and drops the autocast weight cache at the outermost exit.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  bool previous_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

// softmax(q k^T * head_dim^-0.5) v for q, k, v: [N, H, T, Dh]. Uses the fused kernel where LibTorch has it.
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// A CPU generator with a fixed seed (all randomness in dbot comes from explicit generators).
at::Generator make_cpu_generator(uint64_t seed);

}  // namespace dbot::compat
