// Group: the processes of a data-parallel run, on PyTorch's own distributed engine (c10d): a TCPStore for
// the rendezvous (rank 0 serves it at MASTER_ADDR:MASTER_PORT), a Gloo process group for CPU tensors and
// control messages, and, when the run is on GPUs, an NCCL one (nccl.h) for CUDA tensors, as
// torch.distributed's default group holds both. Every collective has the group's timeout, so a rank that
// dies or hangs makes the others fail with an error naming the operation instead of waiting forever.
// The Trainer's gradient all-reduce over such a group is dist::AllReduceGradSync (grad_sync.h).
//
// The c10d and Gloo headers stay in process_group.cpp (Debian's libgloo-dev provides Gloo's headers, which
// the PyPI wheel does not ship; dbot only holds Gloo objects through c10d's pointers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dbot/dist/launch_env.h"

namespace dbot::dist {

class Group {
 public:
  // The job's group: connects to (rank 0: serves) the store, then joins the Gloo group, and the NCCL one on
  // `device` when it is a GPU. Throws naming the store's address when the rendezvous fails within `timeout`.
  Group(const LaunchEnv& env, std::chrono::milliseconds timeout, c10::Device device = c10::kCPU);
  // Ranks as threads of one process over an in-memory store (tests): `store_key` names the shared store.
  static std::unique_ptr<Group> in_process(const std::string& store_key, int rank, int world_size,
                                           std::chrono::milliseconds timeout, c10::Device device = c10::kCPU);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // The backend that reduces tensors on `device`: "NCCL" (CUDA, when the group has it) or "Gloo".
  std::string backend(const c10::Device& device) const;

  // In place: every rank's tensors become the elementwise sum / the mean over ranks (contiguous; CUDA
  // tensors through NCCL when the group has it, else through host memory, as Gloo reduces CPU tensors).
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  void all_reduce_mean(std::vector<at::Tensor>& tensors);
  // Starts the in-place sum over ranks of one contiguous CPU tensor and returns the wait for it (errors and
  // timeout as all_reduce_sum's). Every rank must start its collectives in the same order.
  std::function<void()> start_all_reduce_sum(const at::Tensor& t);
  // In place: every rank's tensors become rank `root`'s.
  void broadcast(std::vector<at::Tensor>& tensors, int root = 0);
  // The largest of the ranks' values (e.g. a stop request that all ranks must honour at the same step).
  int64_t max(int64_t value);
  void barrier();

 private:
  struct Impl;
  Group(std::unique_ptr<Impl> impl, int rank, int world_size);
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_size_ = 1;
};

// Runs f on every rank (group null: just runs it). When it throws on some rank, every rank throws: that rank
// its own error, the others "rank R failed ...", so that no rank waits in a later collective for a rank that
// is gone. Setup steps that can fail on one rank only (a file one node cannot read) run through it.
void agree(Group* group, const std::function<void()>& f);

}  // namespace dbot::dist
