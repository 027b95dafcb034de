// dist/: the launchers' environments (torchrun, SLURM, Open MPI) read into a LaunchEnv, with one-line errors
// for incomplete or inconsistent values; a c10d Gloo group of ranks (threads of this process over an
// in-memory store) whose collectives give hand-checkable results; the gradient all-reduce averaging
// buckets of mixed dtypes to the same bits on every rank, and started from autograd hooks while the
// backward pass runs (the same bits as after it); a rank that never joins a collective makes the
// other fail within the timeout instead of waiting forever.
#include <map>
#include <thread>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "dbot/dist/grad_sync.h"
#include "dbot/dist/launch_env.h"
#include "dbot/dist/nccl.h"
#include "dbot/dist/process_group.h"
#include "test_util.h"

using namespace dbot;
using namespace std::chrono_literals;

namespace {

dist::LaunchEnv env_of(const std::map<std::string, std::string>& vars) {
  return dist::launch_env([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

// Runs f(group) on `world` ranks, one thread each, over a fresh in-memory store.
void on_ranks(int world, const std::function<void(dist::Group&)>& f, std::chrono::milliseconds timeout = 30s) {
  static int runs = 0;
  const std::string key = "test-" + std::to_string(runs++);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto g = dist::Group::in_process(key, r, world, timeout);
        f(*g);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
}

}  // namespace

TEST(LaunchEnv, ReadsTorchrunSlurmAndMpi) {
  EXPECT_FALSE(env_of({}).distributed());
  const auto t = env_of({{"RANK", "3"},
                         {"WORLD_SIZE", "8"},
                         {"LOCAL_RANK", "3"},
                         {"MASTER_ADDR", "10.0.0.1"},
                         {"MASTER_PORT", "29400"},
                         {"SLURM_PROCID", "5"}});  // torchrun wins
  EXPECT_EQ(t.launcher, "torchrun");
  EXPECT_EQ(t.rank, 3);
  EXPECT_EQ(t.world_size, 8);
  EXPECT_EQ(t.describe(), "rank 3 of 8 (local 3), torchrun, store 10.0.0.1:29400");
  EXPECT_EQ(t.local_world_size, 1);  // LOCAL_WORLD_SIZE unset: unknown, taken as 1
  EXPECT_FALSE(t.agent_store);
  const auto agent = env_of({{"RANK", "0"},
                             {"WORLD_SIZE", "2"},
                             {"LOCAL_RANK", "0"},
                             {"MASTER_ADDR", "h"},
                             {"MASTER_PORT", "29400"},
                             {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                             {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_TRUE(agent.agent_store);
  EXPECT_EQ(agent.restart_count, 2);
  const auto s = env_of(
      {{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7"}});
  EXPECT_EQ(s.describe(), "rank 5 of 8 (local 1), slurm, store 10.0.0.7:29500");
  const auto m =
      env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  EXPECT_EQ(m.describe(), "rank 1 of 2 (local 1), mpi, store 127.0.0.1:29500");
  EXPECT_EQ(env_of({{"OMPI_COMM_WORLD_RANK", "1"},
                    {"OMPI_COMM_WORLD_SIZE", "2"},
                    {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}})
                .local_world_size,
            2);
  EXPECT_FALSE(
      env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"SLURM_LOCALID", "0"}, {"SLURM_LAUNCH_NODE_IPADDR", "x"}})
          .distributed());
}

TEST(LaunchEnv, IncompleteOrInconsistentIsAnError) {
  const std::map<std::string, std::string> ok = {
      {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "29500"}};
  auto without = [&](const std::string& key) {
    auto v = ok;
    v.erase(key);
    return test::error_of([&] { env_of(v); });
  };
  auto with = [&](const std::string& key, const std::string& value) {
    auto v = ok;
    v[key] = value;
    return test::error_of([&] { env_of(v); });
  };
  EXPECT_EQ(without("WORLD_SIZE"), "distributed launch (torchrun): WORLD_SIZE is not set");
  EXPECT_EQ(without("MASTER_PORT"), "distributed launch (torchrun): MASTER_PORT is not set");
  EXPECT_EQ(without("MASTER_ADDR"), "distributed launch (torchrun): MASTER_ADDR is not set");
  EXPECT_EQ(with("RANK", "2"), "distributed launch (torchrun): RANK=2: expected a whole number in [0, 1]");
  EXPECT_EQ(with("MASTER_PORT", "http"),
            "distributed launch (torchrun): MASTER_PORT=http: expected a whole number "
            "in [1, 65535]");
  EXPECT_EQ(with("LOCAL_RANK", "1x"),
            "distributed launch (torchrun): LOCAL_RANK=1x: expected a whole number in [0, 1]");
  EXPECT_EQ(with("RANK", "0"), "distributed launch (torchrun): LOCAL_RANK=1 exceeds RANK=0");
  EXPECT_EQ(with("LOCAL_WORLD_SIZE", "1"),
            "distributed launch (torchrun): LOCAL_RANK=1 is not below LOCAL_WORLD_SIZE=1");
  EXPECT_EQ(with("LOCAL_WORLD_SIZE", "3"),
            "distributed launch (torchrun): LOCAL_WORLD_SIZE=3: expected a whole number in [1, 2]");
  EXPECT_EQ(test::error_of([] {
              env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}});
            }),
            "distributed launch (slurm): SLURM_LAUNCH_NODE_IPADDR is not set");
}

TEST(Group, CollectivesGiveHandCheckedResults) {
  on_ranks(3, [](dist::Group& g) {
    const double r = g.rank();
    std::vector<at::Tensor> t = {at::full({4}, r + 1.0), at::full({2}, 10.0 * (r + 1.0))};
    g.all_reduce_mean(t);  // (1 + 2 + 3) / 3 = 2, (10 + 20 + 30) / 3 = 20
    EXPECT_TRUE(t[0].equal(at::full({4}, 2.0)));
    EXPECT_TRUE(t[1].equal(at::full({2}, 20.0)));
    std::vector<at::Tensor> b = {at::full({3}, r)};
    g.broadcast(b, 2);
    EXPECT_TRUE(b[0].equal(at::full({3}, 2.0)));
    EXPECT_EQ(g.max(g.rank() == 1 ? 15 : 0), 15);  // e.g. SIGTERM seen by rank 1 only
    g.barrier();
  });
}

// CPU tensors go through Gloo; a group on a GPU reduces GPU tensors with NCCL where the build has it
// (tests/test_cuda.cpp runs that side where there is a GPU), else with Gloo through host memory; the
// Nccl class alone refuses in a build without it.
TEST(Group, CpuTensorsUseGlooAndGpuTensorsNcclWhereBuilt) {
  on_ranks(1, [](dist::Group& g) { EXPECT_EQ(g.backend(c10::kCPU), "Gloo"); });
  if (dist::Nccl::built()) GTEST_SKIP() << "this build has NCCL: the GPU side is Cuda.NcclGroupOfOneReducesOnTheGpu";
  const auto g = dist::Group::in_process("no-nccl", 0, 1, 5s, c10::Device(c10::kCUDA, 0));
  EXPECT_EQ(g->backend(c10::Device(c10::kCUDA, 0)), "Gloo");
  try {
    dist::Nccl nccl(c10::intrusive_ptr<c10d::Store>(), 0, 1, 5s, c10::Device(c10::kCUDA, 0));
    ADD_FAILURE() << "an NCCL group was made in a build without NCCL";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no NCCL"), std::string::npos) << e.what();
  }
}

TEST(Group, GradientAllReduceAveragesBucketsToTheSameBits) {
  const int world = 2;
  std::vector<std::vector<at::Tensor>> grads(world);
  for (int r = 0; r < world; ++r) {
    auto gen = core::derive_generator(7, core::RngPurpose::kInit, static_cast<uint64_t>(r));
    grads[r] = {at::randn({5, 3}, gen), at::Tensor(), at::randn({7}, gen), at::randn({4}, gen).to(at::kDouble),
                at::randn({2, 2}, gen)};
  }
  std::vector<at::Tensor> expected;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    expected.push_back(grads[0][i].defined() ? (grads[0][i] + grads[1][i]) / 2 : at::Tensor());
  }
  on_ranks(world, [&](dist::Group& g) {
    dist::AllReduceGradSync sync(g, /*bucket_bytes=*/64);  // several buckets: 60 B, 28 B, then the double one
    sync.synchronize(grads[static_cast<size_t>(g.rank())]);
  });
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!expected[i].defined()) continue;
    EXPECT_TRUE(test::all_close(grads[0][i], expected[i], 1e-6, 1e-7)) << i;
    EXPECT_TRUE(grads[0][i].equal(grads[1][i])) << i;  // every rank applies the same update
  }
}

namespace {

// A 3-layer MLP [6, 3] -> 4 -> 5 -> 2 whose parameters, in forward order, are w1 [4, 3], b1, w2 [5, 4], b2,
// w3 [2, 5], b3 (48, 16, 80, 20, 40, 8 bytes); the same weights on every rank.
std::vector<at::Tensor> mlp_params() {
  auto gen = core::derive_generator(3, core::RngPurpose::kInit, 0);
  std::vector<at::Tensor> p;
  for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 3}, {4}, {5, 4}, {5}, {2, 5}, {2}}) {
    p.push_back(at::randn(shape, gen).requires_grad_());
  }
  return p;
}

// Accumulates the gradient of one micro-batch (rank r's input number `micro`) into p's .grad.
void mlp_backward(const std::vector<at::Tensor>& p, int r, int micro) {
  auto gen = core::derive_generator(3, core::RngPurpose::kInit, static_cast<uint64_t>(10 + 2 * r + micro));
  auto h = at::tanh(at::linear(at::randn({6, 3}, gen), p[0], p[1]));
  h = at::tanh(at::linear(h, p[2], p[3]));
  at::linear(h, p[4], p[5]).pow(2).mean().backward();
}

std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& p) {
  std::vector<at::Tensor> g;
  for (const auto& t : p) g.push_back(t.grad());
  return g;
}

}  // namespace

TEST(Group, GradientAllReduceOverlapsTheBackwardPassAndMatchesTheReduceAfterIt) {
  const int world = 3;
  std::vector<at::Tensor> expected(6);  // the mean over ranks of each rank's window of two micro-batches
  for (int r = 0; r < world; ++r) {
    const auto p = mlp_params();
    mlp_backward(p, r, 0);
    mlp_backward(p, r, 1);
    for (size_t i = 0; i < p.size(); ++i) expected[i] = r == 0 ? p[i].grad().clone() : expected[i] + p[i].grad();
  }
  for (auto& e : expected) e /= world;
  std::vector<std::vector<at::Tensor>> overlapped(world), after(world), resized(world);
  std::vector<std::vector<int64_t>> started(world);
  std::vector<int64_t> buckets(world);
  on_ranks(world, [&](dist::Group& g) {
    const int r = g.rank();
    const auto p = mlp_params();
    // Caps of 32 B (first) and 64 B, in reverse order: {b3}, {w3, b2}, {w2} (alone over the cap), {b1, w1}.
    dist::AllReduceGradSync sync(g, /*bucket_bytes=*/64, /*first_bucket_bytes=*/32);
    for (int window = 0; window < 2; ++window) {  // the second window re-hooks the next graph's accumulators
      for (const auto& t : p) t.mutable_grad() = at::Tensor();
      mlp_backward(p, r, 0);  // inside the window: nothing is reduced
      sync.before_last_backward(p);
      mlp_backward(p, r, 1);
      started[r].push_back(sync.started_in_backward());
      sync.synchronize(grads_of(p));
    }
    buckets[r] = sync.buckets();
    for (const auto& t : p) overlapped[r].push_back(t.grad().clone());

    const auto q = mlp_params();  // the same window reduced after backward (a checkpoint's path)
    mlp_backward(q, r, 0);
    mlp_backward(q, r, 1);
    sync.synchronize(grads_of(q));
    for (const auto& t : q) after[r].push_back(t.grad().clone());

    // A stage switch resizes the last layer with set_data (decoder_predp for a teacher of another width):
    // the next window hooks the accumulators of the new shapes and plans its buckets again.
    {
      at::NoGradGuard no_grad;
      p[4].set_data(at::full({3, 5}, 0.1 * (r + 1)));
      p[5].set_data(at::zeros({3}));
    }
    for (const auto& t : p) t.mutable_grad() = at::Tensor();
    sync.before_last_backward(p);
    mlp_backward(p, r, 0);
    started[r].push_back(sync.started_in_backward());
    sync.synchronize(grads_of(p));
    for (const auto& t : p) resized[r].push_back(t.grad().clone());
  });
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(buckets[r], 4);
    // Every bucket started while backward ran (the last from w1's hook), in every window; after the resize
    // (b3 12 B, w3 60 B) the plan is {b3}, {w3}, {b2}, {w2}, {b1, w1}.
    EXPECT_EQ(started[r], (std::vector<int64_t>{4, 4, 5}));
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(test::all_close(overlapped[0][i], expected[i], 1e-6, 1e-7)) << i;
    EXPECT_TRUE(test::all_close(after[0][i], expected[i], 1e-6, 1e-7)) << i;
    for (int r = 1; r < world; ++r) {  // the same bits on every rank
      EXPECT_TRUE(overlapped[r][i].equal(overlapped[0][i])) << i;
      EXPECT_TRUE(resized[r][i].equal(resized[0][i])) << i;
    }
  }
  EXPECT_EQ(resized[0][4].sizes(), (at::IntArrayRef{3, 5}));
}

TEST(Group, ARankThatNeverComesFailsTheOthersWithinTheTimeout) {
  std::vector<std::string> errors(2);
  double waited_s = 0;
  on_ranks(
      2,
      [&](dist::Group& g) {
        if (g.rank() == 1) {  // alive but hung: never joins the all-reduce
          std::this_thread::sleep_for(3s);
          return;
        }
        std::vector<at::Tensor> t = {at::ones({2})};
        const auto start = std::chrono::steady_clock::now();
        errors[0] = test::error_of([&] { g.all_reduce_sum(t); });
        waited_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      },
      500ms);
  EXPECT_NE(errors[0].find("all-reduce across 2 processes failed (a process died or hung?)"), std::string::npos)
      << errors[0];
  EXPECT_LT(waited_s, 2.5);  // the 500 ms timeout, not the hung rank's return after 3 s
}
