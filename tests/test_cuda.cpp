// CUDA: the golden forward/loss/gradients on the GPU in fp32 (TF32 off) against the same golden values as
// the CPU; one training step on CUDA vs the CPU from the same weights and seed; bf16 close to fp32; a
// CPU checkpoint resumed on the GPU; a dist::Group of one on the GPU reducing through NCCL. Skipped (saying so) where
// no GPU is present, unless DBOT_REQUIRE_CUDA=1, which turns the skip into a failure (scripts/gpu-check.sh sets it).
#include <ATen/Context.h>

#include <cstdlib>

#include "dbot/compat.h"
#include "dbot/dist/allreduce_bench.h"
#include "dbot/dist/grad_sync.h"
#include "dbot/dist/process_group.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/trainer.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;
using dbot::test::close_to_scale;
using dbot::test::golden_tensor;

namespace {
const c10::Device kGpu(c10::kCUDA, 0);

bool require_gpu() {  // true: run the test
  if (compat::cuda_device_count() > 0) {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
    return true;
  }
  const char* req = std::getenv("DBOT_REQUIRE_CUDA");
  if (req != nullptr && std::string(req) == "1") {
    ADD_FAILURE() << "DBOT_REQUIRE_CUDA=1 but no CUDA GPU (built with CUDA: " << compat::built_with_cuda() << ")";
  }
  return false;
}
#define DBOT_NEED_GPU() \
  if (!require_gpu()) GTEST_SKIP() << "no CUDA GPU here (set DBOT_REQUIRE_CUDA=1 to make this a failure)"

train::PretrainConfig tiny_pretrain() {
  train::PretrainConfig c;
  c.model = test::tiny_vit();
  c.model.drop_path_rate = 0.1;
  c.mkd = test::tiny_mkd();
  c.mkd.decoder.drop_path_rate = 0.1;
  c.mkd.stage_epochs = {0, 1, 2};
  c.optim.lr = 1e-3;
  c.optim.warmup_epochs = 0.5;
  c.optim.clip_grad = 1.0;
  return c;
}

core::Runtime runtime_on(c10::Device device, core::Amp amp = core::Amp::kNone) {
  core::Runtime rt;
  rt.device = device;
  rt.amp = amp;
  return rt;
}

// Two training steps from the given state; returns the losses and the student's weights after them.
std::pair<std::vector<double>, model::TensorMap> two_steps(const train::PretrainConfig& cfg, const core::Runtime& rt,
                                                           const train::Checkpoint* from = nullptr) {
  train::Trainer trainer(cfg, rt, 4);
  if (from != nullptr) train::restore(trainer.distiller(), nullptr, nullptr, *from, "checkpoint");
  std::vector<double> losses;
  for (int64_t i = 0; i < 2; ++i) {
    train::Batch b;
    b.iteration = b.global = i;
    b.rng = core::derive_generator(cfg.train.seed, core::RngPurpose::kStep, static_cast<uint64_t>(i));
    b.images = at::randn({4, 3, 8, 8}, b.rng);
    losses.push_back(trainer.train_step(b).item<double>());
  }
  model::TensorMap w;
  for (const auto& [k, v] : model::state_dict(*trainer.distiller().student)) w[k] = v.cpu();
  return {losses, w};
}
}  // namespace

TEST(Cuda, GoldenForwardLossAndGradientsInFp32) {
  DBOT_NEED_GPU();
  mkd::Distiller d(test::tiny_vit(), test::tiny_mkd(), 0);
  test::fill_golden(d);
  d.to(kGpu, at::kFloat);
  const auto imgs = test::given_images().to(kGpu);
  auto enc = d.forward_encoder(imgs, test::given_noise().to(kGpu), nullptr);
  auto pred = d.forward_decoder(enc.latent, enc.ids_restore, nullptr);
  auto target = d.forward_teacher(imgs);
  EXPECT_TRUE(all_close(target.cpu(), golden_tensor("teacher_out"), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(pred.cpu(), golden_tensor("pred"), 1e-5, 1e-6));
  auto loss = mkd::forward_loss(target, pred, enc.mask);
  EXPECT_NEAR(loss.item<double>(), golden_tensor("loss", at::kDouble).item<double>(), 1e-6);
  loss.backward();
  for (const auto& [name, p] : d.named_student_parameters()) {
    if (name == "norm.weight" || name == "decoder_predp.bias" || name == "blocks.0.attn.qkv.weight") {
      EXPECT_TRUE(close_to_scale(p.grad().cpu(), golden_tensor("grad." + name), 1e-4)) << name;
    }
  }
}

TEST(Cuda, StepMatchesCpuFromTheSameSeed) {
  DBOT_NEED_GPU();
  const auto cfg = tiny_pretrain();
  const auto cpu = two_steps(cfg, runtime_on(c10::Device(c10::kCPU)));
  const auto gpu = two_steps(cfg, runtime_on(kGpu));
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(gpu.first[i], cpu.first[i], 1e-5 * std::abs(cpu.first[i])) << i;
  for (const auto& [k, v] : cpu.second) EXPECT_TRUE(close_to_scale(gpu.second.at(k), v, 1e-4)) << k;
}

TEST(Cuda, Bf16StepIsCloseToFp32) {
  DBOT_NEED_GPU();
  const auto cfg = tiny_pretrain();
  const auto fp32 = two_steps(cfg, runtime_on(kGpu));
  const auto bf16 = two_steps(cfg, runtime_on(kGpu, core::Amp::kBF16));
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(bf16.first[i], fp32.first[i], 2e-2 * std::abs(fp32.first[i])) << i;
}

TEST(Cuda, CpuCheckpointResumesOnTheGpu) {
  DBOT_NEED_GPU();
  const auto cfg = tiny_pretrain();
  test::TempDir dir;
  mkd::Distiller d(cfg.model, cfg.mkd, cfg.train.seed);
  d.next_stage();  // stage 2: the teacher is the (random) stage-1 student
  train::save_checkpoint(dir.str() + "/c.pt", d, 0, 0, "");
  const auto ckpt = train::load_checkpoint(dir.str() + "/c.pt");
  const auto cpu = two_steps(cfg, runtime_on(c10::Device(c10::kCPU)), &ckpt);
  const auto gpu = two_steps(cfg, runtime_on(kGpu), &ckpt);
  for (size_t i = 0; i < 2; ++i) EXPECT_NEAR(gpu.first[i], cpu.first[i], 1e-5 * std::abs(cpu.first[i])) << i;
}

// NCCL with world size 1 through the code path a multi-GPU run takes (one GPU here): the group says NCCL
// for GPU tensors and Gloo for CPU ones; the sum, mean and broadcast of one rank leave GPU tensors as they
// were (on the GPU); the all-reduce benchmark runs on GPU buffers.
TEST(Cuda, NcclGroupOfOneReducesOnTheGpu) {
  DBOT_NEED_GPU();
  using namespace std::chrono_literals;
  auto g = dist::Group::in_process("cuda-nccl", 0, 1, 60s, kGpu);
  EXPECT_EQ(g->backend(kGpu), "NCCL");
  EXPECT_EQ(g->backend(c10::kCPU), "Gloo");
  const auto a = at::arange(1000, at::TensorOptions(at::kFloat).device(kGpu));
  std::vector<at::Tensor> t = {a.clone(), a.to(at::kBFloat16)};
  g->all_reduce_sum(t);
  g->all_reduce_mean(t);
  g->broadcast(t, 0);
  EXPECT_TRUE(t[0].is_cuda());
  EXPECT_TRUE(t[0].cpu().equal(a.cpu()));
  EXPECT_TRUE(t[1].cpu().equal(a.to(at::kBFloat16).cpu()));
  const auto rows = dist::bench_allreduce(*g, {1 << 20, 16 << 20}, 3, 1, kGpu);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_GT(rows[1].algbw_gbs, 0.0);
  std::printf("%s", dist::format_allreduce_bench(rows, 1, g->backend(kGpu), kGpu).c_str());
}
