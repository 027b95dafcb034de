// compat: the only place that knows which LibTorch we build against, and whether it has CUDA.
// Debian's libtorch-dev is 1.13 (CPU only); the PyPI wheel is 2.x (CUDA, SDPA kernels, fused AdamW).
// Everything version- or CUDA-specific (autocast switches, fused kernels, generators, device queries,
// memory statistics) goes through here; the rest of dbot is device-generic ATen.
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
// Whether this LibTorch's TCPStore client can join the store torchrun's agent serves (torchrun >= 2 speaks
// a newer store protocol, which LibTorch 1.x clients time out on).
bool agent_store_usable();
// True when this LibTorch's CPU autocast accepts fp16 (2.x).
bool cpu_autocast_supports_fp16();

// CUDA: whether this binary was built against a LibTorch with CUDA, the number of visible GPUs (0 without),
// a GPU's name, whether it computes in bf16 natively (compute capability >= 8.0).
bool built_with_cuda();
int cuda_device_count();
std::string cuda_device_name(int index);
bool cuda_supports_bf16(int index);

// Waits for the device's queued work (timing); no-op on CPU.
void synchronize(c10::Device device);
// Peak memory since the last reset: the caching allocator's peak on CUDA, the process's peak RSS on CPU.
void reset_peak_memory(c10::Device device);
int64_t peak_memory_bytes(c10::Device device);

// Whether autocast is on for the device type (kCPU, kCUDA) in this thread, and the dtype it casts to.
bool autocast_enabled(c10::DeviceType device);
at::ScalarType autocast_dtype(c10::DeviceType device);

// RAII: enables autocast on `device` with `dtype` for its lifetime (no-op when dtype == kFloat), restores
// the previous state on exit and drops the autocast weight cache at the outermost exit.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, at::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool enabled_;
  bool previous_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

// Whether LibTorch's own CPU LayerNorm (forward and backward) is as fast as model::layer_norm's one-pass kernel: on
// 2.x it is (0.83-1.18x of dbot's at the models' shapes, docs/PERFORMANCE.md), on 1.13 it is 1.1-1.8x slower.
bool has_fast_cpu_layer_norm();
// Whether this LibTorch has the fused attention kernel (at::scaled_dot_product_attention, 2.x).
bool has_fused_attention();
// softmax(q k^T * head_dim^-0.5) v for q, k, v: [N, H, T, Dh] by the fused kernel. Only where has_fused_attention().
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// alpha * (a b) for batched a [B, n, k], b [B, k, m] -> [B, n, m] by LibTorch's kernels (model::scaled_bmm is the
// entry point), the scale folded into the product where that is safe: LibTorch 2.x's baddbmm with beta = 0 ignores
// its input; 1.13's small-matrix CPU kernel still reads the (uninitialized) output times 0 there, which gave NaN,
// so 1.13 takes bmm then a multiply.
at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double alpha);

// torch.optim.AdamW's fused kernel (one pass per tensor) where this LibTorch has it for the device.
bool has_fused_adamw(c10::Device device);
// One AdamW update (decoupled decay) of every parameter at the step count `step` (an fp32 scalar tensor on the
// parameters' device, already counting this step, read by the kernel for every parameter). Only where
// has_fused_adamw(device).
void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                 const at::Tensor& step, double lr, double beta1, double beta2, double weight_decay, double eps);

// A CPU generator with a fixed seed (all randomness in dbot comes from explicit generators).
at::Generator make_cpu_generator(uint64_t seed);

}  // namespace dbot::compat
