// adamw_cpu, dbot's one-pass AdamW for fp32 CPU tensors: against the formula in fp64 and against torch.optim.AdamW's
// fused CPU kernel (where LibTorch has one). AdamW.FusedKernelMatchesForeach (test_optim.cpp) runs it inside the
// optimizer against the _foreach form.
#include <cmath>

#include "dbot/compat.h"
#include "dbot/core/vector_clones.h"
#include "dbot/train/adamw_cpu.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;

TEST(AdamWCpu, MatchesTheFormulaInDouble) {
  // dbot's CPU kernel (the fused form where LibTorch has none) against AdamW's formula evaluated in fp64, on
  // tensors whose sizes cross its 8-lane vectors and its 4096-element task blocks (1, 13, 4100, 9000, and an
  // empty one), in both its loops.
  std::vector<bool> simd{false};
  if (core::cpu_has_avx2_fma()) simd.push_back(true);
  const train::AdamWStep s{3, 1e-2, 0.9, 0.95, 0.05, 1e-8};
  const double bc1 = 1 - std::pow(0.9, 3), bc2 = 1 - std::pow(0.95, 3);
  for (const bool vec : simd) {
    at::manual_seed(5);
    std::vector<at::Tensor> p, g, m, v, expected;
    for (const int64_t n : {1, 13, 0, 4100, 9000}) {
      p.push_back(at::randn({n}));
      g.push_back(at::randn({n}) * 1e-3);
      m.push_back(at::randn({n}) * 1e-3);
      v.push_back(at::rand({n}) * 1e-6);
      const auto p64 = p.back().to(at::kDouble), g64 = g.back().to(at::kDouble);
      const auto m64 = m.back().to(at::kDouble) * 0.9 + g64 * 0.1;
      const auto v64 = v.back().to(at::kDouble) * 0.95 + g64 * g64 * 0.05;
      expected.push_back(p64 * (1 - 1e-2 * 0.05) - 1e-2 / bc1 * m64 / (v64.sqrt() / std::sqrt(bc2) + 1e-8));
      expected.push_back(m64);
      expected.push_back(v64);
    }
    train::adamw_cpu(p, g, m, v, s, vec);
    // fp32 rounds each operand to ~6e-8 relative: p (~1) to ~1e-7 absolute; m sums terms of opposite sign of
    // size ~1e-3, so its error is ~1e-10 absolute however small the sum; v's terms share a sign.
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(all_close(p[i].to(at::kDouble), expected[3 * i], 1e-6, 1e-7)) << i << " simd " << vec;
      EXPECT_TRUE(all_close(m[i].to(at::kDouble), expected[3 * i + 1], 1e-6, 1e-9)) << i << " simd " << vec;
      EXPECT_TRUE(all_close(v[i].to(at::kDouble), expected[3 * i + 2], 1e-6, 1e-15)) << i << " simd " << vec;
    }
  }
  // Tensors it cannot walk are refused by name, before anything is written.
  auto p = at::zeros({4, 2}), g = at::ones({2, 4}).t(), m = at::zeros({4, 2}), v = at::zeros({4, 2});
  const auto e = test::error_of([&] { train::adamw_cpu({p}, {g}, {m}, {v}, s); });
  EXPECT_NE(e.find("adamw_cpu: gradient 0 is not a contiguous fp32 CPU tensor"), std::string::npos) << e;
  EXPECT_TRUE(m.eq(0).all().item<bool>());
  EXPECT_THROW(train::adamw_cpu({p}, {g.contiguous().to(at::kDouble)}, {m}, {v}, s), std::invalid_argument);
  EXPECT_THROW(train::adamw_cpu({p}, {}, {m}, {v}, s), std::invalid_argument);
}

TEST(AdamWCpu, MatchesLibTorchsFusedKernel) {
  // The same update by torch.optim.AdamW's fused CPU kernel, where this LibTorch has one (2.4+).
  if (!compat::has_fused_adamw(at::kCPU))
    GTEST_SKIP() << "LibTorch " << compat::torch_version() << ": no fused CPU AdamW";
  at::manual_seed(6);
  std::vector<at::Tensor> p, g, m, v;
  for (const int64_t n : {1, 13, 0, 4100, 9000}) {
    p.push_back(at::randn({n}));
    g.push_back(at::randn({n}) * 1e-3);
    m.push_back(at::randn({n}) * 1e-3);
    v.push_back(at::rand({n}) * 1e-6);
  }
  auto clones = [](const std::vector<at::Tensor>& ts) {
    std::vector<at::Tensor> out;
    for (const auto& t : ts) out.push_back(t.clone());
    return out;
  };
  auto p2 = clones(p), m2 = clones(m), v2 = clones(v);
  train::adamw_cpu(p, g, m, v, train::AdamWStep{3, 1e-2, 0.9, 0.95, 0.05, 1e-8});
  compat::fused_adamw(p2, g, m2, v2, at::full({}, 3.0), 1e-2, 0.9, 0.95, 0.05, 1e-8);
  for (size_t i = 0; i < p.size(); ++i) {  // the tolerances of MatchesTheFormulaInDouble
    EXPECT_TRUE(all_close(p[i], p2[i], 1e-6, 1e-7)) << i;
    EXPECT_TRUE(all_close(m[i], m2[i], 1e-6, 1e-9)) << i;
    EXPECT_TRUE(all_close(v[i], v2[i], 1e-6, 1e-15)) << i;
  }
}
