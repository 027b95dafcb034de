#include "dbot/core/runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <sched.h>

#include <stdexcept>
#include <thread>

#include "dbot/compat.h"

namespace dbot::core {

at::ScalarType Runtime::amp_dtype() const {
  switch (amp) {
    case Amp::kBF16:
      return at::kBFloat16;
    case Amp::kFP16:
      return at::kHalf;
    default:
      return at::kFloat;
  }
}

std::string Runtime::precision_name() const { return amp == Amp::kBF16 ? "bf16" : amp == Amp::kFP16 ? "fp16" : "fp32"; }

namespace {
// Which malloc serves this process (linked or LD_PRELOADed): the CPU step's speed depends on it
// (docs/PERFORMANCE.md, "the allocator").
std::string heap_allocator() {
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr) return "tcmalloc";
  if (dlsym(RTLD_DEFAULT, "mallctl") != nullptr) return "jemalloc";
  return "glibc malloc";
}
}  // namespace

std::string Runtime::describe() const {
  std::string where = device.str();
  where += " (" +
           (is_cuda() ? compat::cuda_device_name(device.index())
                      : std::to_string(threads) + " thread(s), " + heap_allocator()) +
           ")";
  where += ", " + (amp == Amp::kNone ? std::string("fp32") : precision_name() + " autocast");
  if (world_size > 1) where += ", " + std::to_string(world_size) + " processes";
  return where;
}

namespace {

c10::Device resolve_device(const std::string& name, const Placement& p) {
  if (p.world_size > 1 && (name == "cuda" || (name == "auto" && compat::cuda_device_count() > 0))) {
    const int count = compat::cuda_device_count();
    if (count == 1) return c10::Device(c10::kCUDA, 0);  // the launcher showed each process its own GPU (SLURM)
    if (p.local_rank >= count) {
      throw std::runtime_error("rank " + std::to_string(p.rank) + " (local rank " + std::to_string(p.local_rank) +
                               ") needs GPU " + std::to_string(p.local_rank) + ": this machine has " +
                               std::to_string(count) + "; start at most one process per GPU");
    }
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(p.local_rank));
  }
  if (name == "auto") return compat::cuda_device_count() > 0 ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name.rfind("cuda", 0) != 0) {
    throw std::runtime_error("--device '" + name + "': expected auto, cpu, cuda or cuda:N");
  }
  c10::Device dev(c10::kCUDA, 0);
  try {
    dev = c10::Device(name);
  } catch (const std::exception&) {
    throw std::runtime_error("--device '" + name + "': expected auto, cpu, cuda or cuda:N");
  }
  if (!compat::built_with_cuda()) {
    throw std::runtime_error("--device " + name + ": this build of dbot has no CUDA (LibTorch " +
                             compat::torch_version() +
                             " is CPU-only); build against the PyPI torch wheel: scripts/build.sh pypi");
  }
  const int count = compat::cuda_device_count();
  if (count == 0) throw std::runtime_error("--device " + name + ": no CUDA GPU found on this machine");
  const int index = dev.has_index() ? dev.index() : 0;
  if (index >= count) {
    throw std::runtime_error("--device " + name + ": this machine has " + std::to_string(count) + " CUDA GPU(s)");
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

Amp resolve_amp(const std::string& precision, c10::Device device) {
  if (precision == "fp32") return Amp::kNone;
  if (precision == "bf16") return Amp::kBF16;
  if (precision == "fp16") {
    if (device.is_cpu() && !compat::cpu_autocast_supports_fp16()) {
      throw std::runtime_error("--precision fp16: LibTorch " + compat::torch_version() +
                               " has no fp16 autocast on CPU; use bf16 or fp32");
    }
    return Amp::kFP16;
  }
  if (precision == "auto") {
    const bool bf16 = device.is_cuda() ? compat::cuda_supports_bf16(device.index()) : compat::cpu_has_bf16();
    return bf16 ? Amp::kBF16 : Amp::kNone;
  }
  throw std::runtime_error("--precision '" + precision + "': expected auto, bf16, fp16 or fp32");
}

}  // namespace

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

Runtime resolve_runtime(const RuntimeConfig& cfg, const Placement& placement) {
  Runtime rt;
  rt.device = resolve_device(cfg.device, placement);
  rt.amp = resolve_amp(cfg.precision, rt.device);
  rt.rank = placement.rank;
  rt.local_rank = placement.local_rank;
  rt.world_size = placement.world_size;
  const int64_t threads =
      cfg.threads > 0 ? cfg.threads : std::max(1, available_cpus() / std::max(1, placement.local_world_size));
  rt.threads = static_cast<int>(threads);
  at::set_num_threads(rt.threads);
  return rt;
}

at::Tensor to_device(const at::Tensor& cpu, c10::Device device) {
  if (device.is_cpu() || cpu.device() == device) return cpu;
  return cpu.pin_memory().to(device, /*non_blocking=*/true);
}

}  // namespace dbot::core
