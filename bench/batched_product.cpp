// The attention's batched products: model::scaled_bmm (dbot's kernel) against LibTorch's own bmm on the same
// operands, forward and forward + backward, for the shapes of the demo step and of ViT-S/16. LibTorch's form is
// what PyTorch itself runs for `(q @ k.transpose(-2, -1)) * scale` and `attn @ v`: bmm then a multiply on 1.x,
// baddbmm with alpha on 2.x (compat::scaled_bmm). Prints a markdown table of the best of R runs, in ms.
//   build-deb/bench_batched_product [threads=2] [reps=20]
#include "dbot/model/batched_product.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "dbot/compat.h"

namespace {
struct Shape {
  const char* what;
  int64_t batch, n, k, m;
  bool trans_b;  // the scores' k^T: b is a transposed view
};

double best_ms(const std::function<void()>& f, int reps) {
  f();  // warm-up: first-touch allocations
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

using Product = std::function<at::Tensor(const at::Tensor&, const at::Tensor&, double)>;
// Forward alone (no autograd) and forward + backward of sum(product * g).
std::pair<double, double> time_product(const Product& product, const Shape& s, int reps) {
  const auto a = at::randn({s.batch, s.n, s.k});
  const auto b = s.trans_b ? at::randn({s.batch, s.m, s.k}).transpose(1, 2) : at::randn({s.batch, s.k, s.m});
  const auto g = at::randn({s.batch, s.n, s.m});
  const double fwd = best_ms(
      [&] {
        at::NoGradGuard no_grad;
        product(a, b, 0.125);
      },
      reps);
  const auto ag = a.clone().requires_grad_(), bg = b.detach().clone().requires_grad_();
  const double both = best_ms(
      [&] {
        const auto out = product(ag, bg, 0.125);  // bg keeps b's strides (clone preserves them)
        torch::autograd::backward({out}, {g});
      },
      reps);
  return {fwd, both};
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::stoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 20;
  at::set_num_threads(threads);
  const Shape shapes[] = {
      {"demo student scores (N 128, 4 heads, 9 tokens)", 512, 9, 32, 9, true},
      {"demo student attn @ v", 512, 9, 9, 32, false},
      {"demo teacher scores (17 tokens)", 512, 17, 32, 17, true},
      {"demo teacher attn @ v", 512, 17, 17, 32, false},
      {"demo decoder scores (64 wide, 4 heads)", 512, 17, 16, 17, true},
      {"demo decoder attn @ v", 512, 17, 17, 16, false},
      {"ViT-S/16 scores (N 32, 6 heads, 197 tokens)", 192, 197, 64, 197, true},
      {"ViT-S/16 attn @ v", 192, 197, 197, 64, false},
  };
  const Product libtorch = [](const at::Tensor& a, const at::Tensor& b, double alpha) {
    return dbot::compat::scaled_bmm(a, b, alpha);
  };
  const Product dbot = [](const at::Tensor& a, const at::Tensor& b, double alpha) {
    return dbot::model::scaled_bmm(a, b, alpha);
  };
  std::printf(
      "LibTorch %s, %d threads, best of %d; dbot's kernel: %s\n\n", dbot::compat::torch_version().c_str(), threads,
      reps,
      dbot::model::blas_batched_product(at::ones({1, 1, 1}), at::ones({1, 1, 1})) ? "cblas_sgemm loop" : "LibTorch's");
  std::printf(
      "| product [B, n, k] x [B, k, m] | LibTorch fwd ms | dbot fwd ms | ratio | LibTorch fwd+bwd ms | "
      "dbot fwd+bwd ms | ratio |\n|---|---|---|---|---|---|---|\n");
  for (const auto& s : shapes) {
    const auto [lf, lb] = time_product(libtorch, s, reps);
    const auto [df, db] = time_product(dbot, s, reps);
    std::printf("| %s: %lldx%lldx%lldx%lld | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |\n", s.what,
                static_cast<long long>(s.batch), static_cast<long long>(s.n), static_cast<long long>(s.k),
                static_cast<long long>(s.m), lf, df, lf / df, lb, db, lb / db);
  }
}
