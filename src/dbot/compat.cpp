#include "dbot/compat.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <sys/resource.h>
#include <torch/cuda.h>

#include <fstream>
#include <stdexcept>

#ifdef DBOT_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#define DBOT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace dbot::compat {

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

bool cpu_has_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) {
      return line.find(" avx512_bf16") != std::string::npos || line.find(" amx_bf16") != std::string::npos;
    }
  }
  return false;
}

bool agent_store_usable() { return DBOT_TORCH_AT_LEAST(2, 0); }

bool cpu_autocast_supports_fp16() { return DBOT_TORCH_AT_LEAST(2, 4); }

bool built_with_cuda() {
#ifdef DBOT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() { return built_with_cuda() ? static_cast<int>(torch::cuda::device_count()) : 0; }

std::string cuda_device_name(int index) {
#ifdef DBOT_WITH_CUDA
  return at::cuda::getDeviceProperties(index)->name;
#else
  return "no CUDA";
#endif
}

bool cuda_supports_bf16(int index) {
#ifdef DBOT_WITH_CUDA
  return at::cuda::getDeviceProperties(index)->major >= 8;
#else
  return false;
#endif
}

void synchronize(c10::Device device) {
#ifdef DBOT_WITH_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
#endif
}

void reset_peak_memory(c10::Device device) {
#ifdef DBOT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
}

int64_t peak_memory_bytes(c10::Device device) {
#ifdef DBOT_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[0].peak;  // StatType::AGGREGATE
  }
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

bool autocast_enabled(c10::DeviceType device) {
#if DBOT_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

at::ScalarType autocast_dtype(c10::DeviceType device) {
#if DBOT_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

namespace {
void set_autocast(c10::DeviceType device, bool enabled, at::ScalarType dtype) {
#if DBOT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::kCUDA) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}
}  // namespace

AutocastGuard::AutocastGuard(c10::DeviceType device, at::ScalarType dtype)
    : device_(device), enabled_(dtype != at::kFloat) {
  if (!enabled_) return;
  previous_ = autocast_enabled(device_);
  previous_dtype_ = autocast_dtype(device_);
  set_autocast(device_, true, dtype);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(device_, previous_, previous_dtype_);
}

bool has_fast_cpu_layer_norm() { return DBOT_TORCH_AT_LEAST(2, 0); }

bool has_fused_attention() { return DBOT_TORCH_AT_LEAST(2, 0); }

at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if DBOT_TORCH_AT_LEAST(2, 0)
  return at::scaled_dot_product_attention(q, k, v);
#else
  throw std::logic_error("fused attention needs LibTorch >= 2.0");
#endif
}

at::Tensor scaled_bmm(const at::Tensor& a, const at::Tensor& b, double alpha) {
  if (alpha == 1.0) return at::bmm(a, b);
#if DBOT_TORCH_AT_LEAST(2, 0)
  const auto ignored = at::empty({1, 1, 1}, a.options());  // beta = 0: neither read nor differentiated
  return at::baddbmm(ignored, a, b, /*beta=*/0.0, alpha);
#else
  return at::bmm(a, b).mul_(alpha);
#endif
}

bool has_fused_adamw(c10::Device device) {
#if DBOT_TORCH_AT_LEAST(2, 4)
  return device.is_cuda() || device.is_cpu();
#elif DBOT_TORCH_AT_LEAST(2, 0)
  return device.is_cuda();
#else
  return false;
#endif
}

void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                 const at::Tensor& step, double lr, double beta1, double beta2, double weight_decay, double eps) {
#if DBOT_TORCH_AT_LEAST(2, 0)
  // torch.optim keeps one count per parameter and increments them all (_foreach_add_: one add_ per tensor on the
  // CPU, 0.5 ms per demo step); they are always equal, so every parameter reads the one count.
  const std::vector<at::Tensor> steps(params.size(), step);
  at::_fused_adamw_(params, grads, exp_avg, exp_avg_sq, /*max_exp_avg_sqs=*/{}, steps, lr, beta1, beta2, weight_decay,
                    eps, /*amsgrad=*/false, /*maximize=*/false);
#else
  throw std::logic_error("fused AdamW needs LibTorch >= 2.0");
#endif
}

at::Generator make_cpu_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

}  // namespace dbot::compat
