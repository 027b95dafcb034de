#include "dbot/dist/process_group.h"

#include <ATen/ATen.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "dbot/compat.h"
#include "dbot/dist/nccl.h"

namespace dbot::dist {

namespace {

// The first line of an error from c10d or Gloo (c10::Error without its backtrace; Gloo throws its own).
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string msg = c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
  return msg.substr(0, msg.find('\n'));
}

}  // namespace

struct Group::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::unique_ptr<Nccl> nccl;  // runs on a GPU only
  std::chrono::milliseconds timeout;

  using Collective = std::function<c10::intrusive_ptr<c10d::Work>(std::vector<at::Tensor>&)>;
  // A one-tensor collective on t, in place: by NCCL for a GPU tensor when the group has it, else by Gloo,
  // which reduces host memory (a GPU tensor travels there and back).
  void in_place(const std::string& what, at::Tensor& t, const Collective& on_nccl, const Collective& on_gloo) const {
    if (nccl && t.is_cuda()) {
      std::vector<at::Tensor> one = {t};
      run(what + " (NCCL)", [&] { return on_nccl(one); });
      return;
    }
    std::vector<at::Tensor> one = {t.is_cpu() ? t : t.cpu()};
    run(what, [&] { return on_gloo(one); });
    if (!t.is_cpu()) t.copy_(one[0]);
  }
  // The GPU side, when the run is on a GPU: after Gloo, so that a failed NCCL setup is the only error. A CUDA
  // build made without NCCL's headers (CMake warned) reduces GPU tensors through host memory, and says so.
  void join_nccl(int rank, int world_size, c10::Device device) {
    if (!device.is_cuda()) return;
    if (Nccl::built()) {
      nccl = std::make_unique<Nccl>(store, rank, world_size, timeout, device);
    } else if (rank == 0) {
      std::fprintf(stderr,
                   "dbot: warning: this build has no NCCL: GPU gradients are reduced through host memory "
                   "by Gloo (slower); rebuild with the pip package nvidia-nccl present\n");
    }
  }

  // c10d's errors (a peer gone, a timeout) as one line with `what`.
  [[noreturn]] void fail(const std::string& what, const std::exception& e) const {
    throw std::runtime_error(what + " across " + std::to_string(pg->getSize()) +
                             " processes failed (a process died or hung?): " + first_line(e));
  }
  void wait(const std::string& what, const c10::intrusive_ptr<c10d::Work>& work) const {
    try {
      work->wait(timeout);
    } catch (const std::exception& e) {
      fail(what, e);
    }
  }
  // Starts a collective (f returns its c10d::Work); run() also waits for it.
  template <typename F>
  c10::intrusive_ptr<c10d::Work> start(const std::string& what, F&& f) const {
    try {
      return f();
    } catch (const std::exception& e) {
      fail(what, e);
    }
  }
  template <typename F>
  void run(const std::string& what, F&& f) const {
    wait(what, start(what, std::forward<F>(f)));
  }
};

namespace {

c10::intrusive_ptr<c10d::ProcessGroupGloo> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                     int world_size, std::chrono::milliseconds timeout) {
  // Gloo's TCP transport can raise SIGPIPE when it writes to a peer that is gone (seen: a rank killed while
  // an all-reduce started during backward was sending took its peer down with status 141). Python ignores
  // SIGPIPE, and torch.distributed relies on that; ignored here too, a dead peer becomes the error
  // "all-reduce across N processes failed" on the others instead of killing them in the middle of a write.
  std::signal(SIGPIPE, SIG_IGN);
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, opts);
}

}  // namespace

Group::Group(std::unique_ptr<Impl> impl, int rank, int world_size)
    : impl_(std::move(impl)), rank_(rank), world_size_(world_size) {}

Group::Group(const LaunchEnv& env, std::chrono::milliseconds timeout, c10::Device device)
    : rank_(env.rank), world_size_(env.world_size) {
  impl_ = std::make_unique<Impl>();
  impl_->timeout = timeout;
  // Under torchrun's agent its store serves MASTER_PORT and every rank is a client; a LibTorch 1.x client
  // cannot speak to a torchrun >= 2 store, so such a build keeps its own store (rank 0) one port above.
  const bool agent = env.agent_store && compat::agent_store_usable();
  const int port = env.agent_store && !agent ? env.master_port + 1 : env.master_port;
  const std::string where = env.master_addr + ":" + std::to_string(port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.isServer = env.rank == 0 && !agent;
    so.numWorkers = static_cast<size_t>(env.world_size);
    so.waitWorkers = !agent;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    if (agent) {  // the keys of this restart attempt, as torch.distributed names them
      impl_->store =
          c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(env.restart_count), impl_->store);
    }
    impl_->pg = make_gloo(impl_->store, env.rank, env.world_size, timeout);
    impl_->join_nccl(env.rank, env.world_size, device);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous at " + where + " (rank " + std::to_string(env.rank) + " of " +
                             std::to_string(env.world_size) + ") failed: " + first_line(e));
  }
}

std::unique_ptr<Group> Group::in_process(const std::string& store_key, int rank, int world_size,
                                         std::chrono::milliseconds timeout, c10::Device device) {
  static std::mutex mu;
  static std::map<std::string, c10::intrusive_ptr<c10d::Store>> stores;
  auto impl = std::make_unique<Impl>();
  {
    std::lock_guard<std::mutex> lock(mu);
    auto& store = stores[store_key];
    if (!store) store = c10::make_intrusive<c10d::HashStore>();
    impl->store = store;
  }
  impl->timeout = timeout;
  impl->pg = make_gloo(impl->store, rank, world_size, timeout);
  impl->join_nccl(rank, world_size, device);
  return std::unique_ptr<Group>(new Group(std::move(impl), rank, world_size));
}

Group::~Group() = default;

std::string Group::backend(const c10::Device& device) const {
  return impl_->nccl && device.is_cuda() ? "NCCL" : "Gloo";
}

void Group::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  for (auto& t : tensors) {  // one tensor per call, as both backends take them
    impl_->in_place(
        "all-reduce", t, [&](std::vector<at::Tensor>& one) { return impl_->nccl->all_reduce_sum(one); },
        [&](std::vector<at::Tensor>& one) { return impl_->pg->allreduce(one); });
  }
}

std::function<void()> Group::start_all_reduce_sum(const at::Tensor& t) {
  if (!t.is_cpu() || !t.is_contiguous()) throw std::logic_error("start_all_reduce_sum: a contiguous CPU tensor");
  std::vector<at::Tensor> one = {t};
  auto work = impl_->start("all-reduce", [&] { return impl_->pg->allreduce(one); });
  return [impl = impl_.get(), work] { impl->wait("all-reduce", work); };
}

void Group::all_reduce_mean(std::vector<at::Tensor>& tensors) {
  all_reduce_sum(tensors);
  for (auto& t : tensors) t.div_(world_size_);
}

void Group::broadcast(std::vector<at::Tensor>& tensors, int root) {
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  for (auto& t : tensors) {
    impl_->in_place(
        "broadcast", t, [&](std::vector<at::Tensor>& one) { return impl_->nccl->broadcast(one, root); },
        [&](std::vector<at::Tensor>& one) { return impl_->pg->broadcast(one, opts); });
  }
}

int64_t Group::max(int64_t value) {
  std::vector<at::Tensor> one = {at::full({1}, value, at::kLong)};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::MAX;
  impl_->run("all-reduce (max)", [&] { return impl_->pg->allreduce(one, opts); });
  return one[0].item<int64_t>();
}

void Group::barrier() {
  impl_->run("barrier", [&] { return impl_->pg->barrier(); });
}

void agree(Group* group, const std::function<void()>& f) {
  std::exception_ptr error;
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
  if (group == nullptr || group->world_size() == 1) {
    if (error) std::rethrow_exception(error);
    return;
  }
  const int64_t failed = group->max(error ? group->rank() + 1 : 0);  // the highest failing rank, plus one
  if (error) std::rethrow_exception(error);
  if (failed > 0) {
    throw std::runtime_error("rank " + std::to_string(failed - 1) + " of " + std::to_string(group->world_size()) +
                             " failed (its error is in its output); stopping this rank too");
  }
}

}  // namespace dbot::dist
