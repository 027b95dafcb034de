// Runtime: where and how the tensors of a run are computed, resolved once in the app and passed down.
//   device      cpu | cuda:N           every model tensor and batch lives there
//   amp         none | bf16 | fp16     autocast dtype of the forward passes (fp16 adds dynamic loss scaling)
//   threads     intra-op CPU threads
//   rank, local_rank, world_size       where this process sits in a data-parallel job (dist/launch_env.h)
// Resolution rules (documented in the CLI help): device "auto" = the first GPU when this build and this
// machine have one, else the CPU; precision "auto" = bf16 on GPUs that have it and on CPUs with native bf16
// (AVX512-BF16/AMX), fp32 elsewhere. Errors say why in one line (no GPU found, this build has no CUDA, ...).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace dbot::core {

enum class Amp { kNone, kBF16, kFP16 };

// The recipe keys train.device / train.precision / train.threads (also --device, --precision, --threads).
struct RuntimeConfig {
  std::string device = "auto";     // auto | cpu | cuda | cuda:N
  std::string precision = "auto";  // auto | bf16 | fp16 | fp32
  int64_t threads = 0;             // 0 = all cores
};

struct Runtime {
  c10::Device device{c10::kCPU};
  Amp amp = Amp::kNone;
  int threads = 1;
  int rank = 0, local_rank = 0, world_size = 1;

  bool is_cuda() const { return device.is_cuda(); }
  // The autocast dtype: kBFloat16, kHalf, or kFloat when autocast is off.
  at::ScalarType amp_dtype() const;
  std::string precision_name() const;  // "bf16" | "fp16" | "fp32"
  std::string describe() const;        // e.g. "cuda:0 (NVIDIA H100 80GB HBM3), bf16 autocast"
};

// This process's place in a data-parallel job.
struct Placement {
  int rank = 0, local_rank = 0, world_size = 1;
  int local_world_size = 1;  // processes sharing this machine's CPUs
};

// Resolves a RuntimeConfig on this build and machine and applies the thread count to the process.
// In a job of several processes, device auto/cuda means GPU local_rank (one GPU per process; GPU 0 when the
// process sees one GPU only, as under SLURM's --gpus-per-task 1), and threads 0
// means this process's CPUs (its affinity mask) divided by local_world_size, at least 1.
// Throws std::runtime_error with a one-line reason for an unknown or unavailable device or precision.
Runtime resolve_runtime(const RuntimeConfig& cfg, const Placement& placement = {});

// The CPUs this process may run on (its affinity mask; the core count where that is unknown).
int available_cpus();

// Copies a (small, CPU) tensor to the runtime's device without blocking the host: through pinned memory
// on CUDA, a no-op on CPU. Random draws are made on CPU generators and moved with this, so CPU and GPU runs
// consume identical random numbers.
at::Tensor to_device(const at::Tensor& cpu, c10::Device device);

}  // namespace dbot::core
