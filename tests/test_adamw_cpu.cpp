// adamw_cpu, dbot's one-pass AdamW for fp32 CPU tensors: against the formula in fp64 and against torch.optim.AdamW's
// fused CPU kernel (where LibTorch has one). AdamW.FusedKernelMatchesForeach (test_optim.cpp) runs it inside the
// optimizer against the _foreach form.
#include <cmath>

#include "dbot/compat.h"
#include "dbot/train/adamw_cpu.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;

namespace {
constexpr int64_t kStep = 3;
constexpr double kLr = 1e-2, kBeta1 = 0.9, kBeta2 = 0.95, kDecay = 0.05, kEps = 1e-8;

// Parameters ~1, gradients and first moments ~1e-3, second moments ~1e-6, in tensors whose sizes cross the kernel's
// 8-lane vectors and its 4096-element task blocks (1, 13, 4100, 9000, and an empty one).
struct State {
  std::vector<at::Tensor> p, g, m, v;
};
State state(uint64_t seed) {
  at::manual_seed(seed);
  State s;
  for (const int64_t n : {1, 13, 0, 4100, 9000}) {
    s.p.push_back(at::randn({n}));
    s.g.push_back(at::randn({n}) * 1e-3);
    s.m.push_back(at::randn({n}) * 1e-3);
    s.v.push_back(at::rand({n}) * 1e-6);
  }
  return s;
}

// fp32 rounds each operand to ~6e-8 relative: p (~1) to ~1e-7 absolute; m sums terms of opposite sign of size
// ~1e-3, so its error is ~1e-10 absolute however small the sum; v's terms share a sign.
void expect_close(const State& actual, const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& m,
                  const std::vector<at::Tensor>& v, const std::string& what) {
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_TRUE(all_close(actual.p[i].to(at::kDouble), p[i], 1e-6, 1e-7)) << i << " " << what;
    EXPECT_TRUE(all_close(actual.m[i].to(at::kDouble), m[i], 1e-6, 1e-9)) << i << " " << what;
    EXPECT_TRUE(all_close(actual.v[i].to(at::kDouble), v[i], 1e-6, 1e-15)) << i << " " << what;
  }
}
}  // namespace

TEST(AdamWCpu, MatchesTheFormulaInDouble) {
  // dbot's CPU kernel against AdamW's formula evaluated in fp64, in both its loops.
  const train::AdamWStep s{kStep, kLr, kBeta1, kBeta2, kDecay, kEps};
  const double bc1 = 1 - std::pow(kBeta1, kStep), bc2 = 1 - std::pow(kBeta2, kStep);
  for (const bool vec : test::simd_choices()) {
    auto st = state(5);
    std::vector<at::Tensor> p, m, v;
    for (size_t i = 0; i < st.p.size(); ++i) {
      const auto g64 = st.g[i].to(at::kDouble);
      m.push_back(st.m[i].to(at::kDouble) * kBeta1 + g64 * (1 - kBeta1));
      v.push_back(st.v[i].to(at::kDouble) * kBeta2 + g64 * g64 * (1 - kBeta2));
      p.push_back(st.p[i].to(at::kDouble) * (1 - kLr * kDecay) -
                  kLr / bc1 * m.back() / (v.back().sqrt() / std::sqrt(bc2) + kEps));
    }
    train::adamw_cpu(st.p, st.g, st.m, st.v, s, vec);
    expect_close(st, p, m, v, vec ? "AVX2" : "plain");
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
  auto st = state(6), torch_st = state(6);
  train::adamw_cpu(st.p, st.g, st.m, st.v, train::AdamWStep{kStep, kLr, kBeta1, kBeta2, kDecay, kEps});
  compat::fused_adamw(torch_st.p, torch_st.g, torch_st.m, torch_st.v, at::full({}, static_cast<double>(kStep)), kLr,
                      kBeta1, kBeta2, kDecay, kEps);
  const auto as_double = [](const std::vector<at::Tensor>& ts) {
    std::vector<at::Tensor> out;
    for (const auto& t : ts) out.push_back(t.to(at::kDouble));
    return out;
  };
  expect_close(st, as_double(torch_st.p), as_double(torch_st.m), as_double(torch_st.v), "against LibTorch");
}
