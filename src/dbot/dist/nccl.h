// Nccl: NCCL collectives on CUDA tensors, through c10d's ProcessGroupNCCL, for the dist::Group of a run on
// GPUs (one GPU per process). Built only against a LibTorch with CUDA (the PyPI wheel, which carries
// libnccl, and nccl.h found beside it); elsewhere built() is false, the constructor throws, and the Group
// reduces GPU tensors through host memory with Gloo, saying so. The Group keeps Gloo beside NCCL for CPU
// tensors and control messages (stop requests, barriers).
// The c10d NCCL headers stay in nccl.cpp, the one file compiled with the CUDA and NCCL defines.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <memory>
#include <vector>

namespace c10d {
class Store;
class Work;
}  // namespace c10d

namespace dbot::dist {

class Nccl {
 public:
  // Whether this build has NCCL.
  static bool built();
  // The group's NCCL side on `device` (this process's GPU); its keys in the store live under "nccl/".
  // Every collective has `timeout`; past it NCCL's watchdog aborts the communicator and the wait throws.
  Nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world_size, std::chrono::milliseconds timeout,
       c10::Device device);
  ~Nccl();
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;

  // One CUDA tensor per call, in place, as c10d's Work: wait(timeout) blocks until it is done.
  c10::intrusive_ptr<c10d::Work> all_reduce_sum(std::vector<at::Tensor>& one);
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& one, int root);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dbot::dist
