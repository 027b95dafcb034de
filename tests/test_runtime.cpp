// Runtime resolution: devices and precisions this build and machine can or cannot provide, with one-line
// reasons; the keyed CPU draws that make CPU and GPU runs consume the same random numbers.
#include <algorithm>

#include "dbot/compat.h"
#include "dbot/core/rng.h"
#include "dbot/core/runtime.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

TEST(Runtime, CpuFp32) {
  core::RuntimeConfig c;
  c.device = "cpu";
  c.precision = "fp32";
  c.threads = 1;
  const auto rt = core::resolve_runtime(c);
  EXPECT_TRUE(rt.device.is_cpu());
  EXPECT_EQ(rt.amp, core::Amp::kNone);
  EXPECT_EQ(rt.amp_dtype(), at::kFloat);
  EXPECT_EQ(rt.threads, 1);
  EXPECT_EQ(rt.world_size, 1);
  EXPECT_NE(rt.describe().find("cpu"), std::string::npos) << rt.describe();
}

TEST(Runtime, ProcessesOfOneMachineShareItsCpus) {
  core::RuntimeConfig c;
  c.device = "cpu";
  c.precision = "fp32";  // threads 0: this process's CPUs over the processes of the machine
  core::Placement p;
  p.rank = 3;
  p.local_rank = 1;
  p.world_size = 4;
  p.local_world_size = 2;
  const auto rt = core::resolve_runtime(c, p);
  EXPECT_EQ(rt.threads, std::max(1, core::available_cpus() / 2));
  EXPECT_EQ(rt.rank, 3);
  EXPECT_EQ(rt.local_rank, 1);
  EXPECT_EQ(rt.world_size, 4);
  EXPECT_NE(rt.describe().find("4 processes"), std::string::npos) << rt.describe();
  p.local_world_size = 1000;
  EXPECT_EQ(core::resolve_runtime(c, p).threads, 1);
  c.threads = 1;
  core::resolve_runtime(c);
}

TEST(Runtime, AutoPicksWhatTheMachineHas) {
  core::RuntimeConfig c;
  c.threads = 1;
  const auto rt = core::resolve_runtime(c);
  EXPECT_EQ(rt.device.is_cuda(), compat::cuda_device_count() > 0);
  if (rt.device.is_cpu()) EXPECT_EQ(rt.amp == core::Amp::kBF16, compat::cpu_has_bf16());
}

TEST(Runtime, UnavailableCudaIsAOneLineReason) {
  if (compat::cuda_device_count() > 0) GTEST_SKIP() << "this machine has a GPU";
  core::RuntimeConfig c;
  c.device = "cuda:1";
  const auto e = error_of([&] { core::resolve_runtime(c); });
  const std::string expected = compat::built_with_cuda() ? "no CUDA GPU found" : "this build of dbot has no CUDA";
  EXPECT_NE(e.find(expected), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(Runtime, BadNamesAreErrors) {
  core::RuntimeConfig c;
  c.device = "tpu";
  EXPECT_NE(error_of([&] { core::resolve_runtime(c); }).find("expected auto, cpu, cuda or cuda:N"), std::string::npos);
  c.device = "cpu";
  c.precision = "fp8";
  EXPECT_NE(error_of([&] { core::resolve_runtime(c); }).find("expected auto, bf16, fp16 or fp32"), std::string::npos);
  c.precision = "fp16";
  const auto e = error_of([&] { core::resolve_runtime(c); });
  if (compat::cpu_autocast_supports_fp16()) {
    EXPECT_EQ(e, "<no error>");
  } else {
    EXPECT_NE(e.find("no fp16 autocast on CPU"), std::string::npos) << e;
  }
}

TEST(Runtime, ToDeviceOnCpuIsTheSameTensor) {
  auto t = at::rand({3});
  EXPECT_TRUE(core::to_device(t, c10::Device(c10::kCPU)).is_same(t));
}

TEST(Rng, DerivedGeneratorsAreKeyed) {
  auto a = at::rand({4}, core::derive_generator(1, core::RngPurpose::kStep, 7));
  auto b = at::rand({4}, core::derive_generator(1, core::RngPurpose::kStep, 7));
  auto c = at::rand({4}, core::derive_generator(1, core::RngPurpose::kStep, 8));
  auto d = at::rand({4}, core::derive_generator(1, core::RngPurpose::kShuffle, 7));
  EXPECT_TRUE(a.equal(b));
  EXPECT_FALSE(a.equal(c));
  EXPECT_FALSE(a.equal(d));
}
