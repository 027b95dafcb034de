#include "dbot/dist/nccl.h"

#include <stdexcept>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef DBOT_WITH_NCCL
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dbot::dist {

#ifdef DBOT_WITH_NCCL

struct Nccl::Impl {
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg;
};

bool Nccl::built() { return true; }

Nccl::Nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size, std::chrono::milliseconds timeout,
           c10::Device device)
    : impl_(std::make_unique<Impl>()) {
  if (!device.is_cuda() || !device.has_index()) throw std::invalid_argument("Nccl: a CUDA device with an index");
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  // Its own key space: Gloo's group shares the store.
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("nccl", store);
  impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world_size, opts);
  // Bound to this process's GPU, as torch.distributed.init_process_group(device_id=...) does: the
  // communicator is made for it (no guess from the current device) and a bad setup fails here.
  impl_->pg->setBoundDeviceId(device);
  impl_->pg->eagerConnectSingleDevice(device);
}

c10::intrusive_ptr<c10d::Work> Nccl::all_reduce_sum(std::vector<at::Tensor>& one) { return impl_->pg->allreduce(one); }

c10::intrusive_ptr<c10d::Work> Nccl::broadcast(std::vector<at::Tensor>& one, int root) {
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  return impl_->pg->broadcast(one, opts);
}

#else

struct Nccl::Impl {};

bool Nccl::built() { return false; }

Nccl::Nccl(const c10::intrusive_ptr<c10d::Store>&, int, int, std::chrono::milliseconds, c10::Device) {
  throw std::runtime_error("this build of dbot has no NCCL (it is built against a LibTorch without CUDA)");
}

c10::intrusive_ptr<c10d::Work> Nccl::all_reduce_sum(std::vector<at::Tensor>&) {
  throw std::logic_error("Nccl: not built");
}

c10::intrusive_ptr<c10d::Work> Nccl::broadcast(std::vector<at::Tensor>&, int) {
  throw std::logic_error("Nccl: not built");
}

#endif

Nccl::~Nccl() = default;

}  // namespace dbot::dist
