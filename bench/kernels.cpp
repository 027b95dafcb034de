// dbot's CPU kernels against the LibTorch operations they replace, on the same operands, forward (no autograd) and
// forward + backward, at the shapes of the demo step, ViT-Tiny/4 and ViT-S/16. Prints two markdown tables of the
// best of R runs, in ms:
// - the attention's batched products, model::scaled_bmm against what PyTorch itself runs for
//   `(q @ k.transpose(-2, -1)) * scale` and `attn @ v`: bmm then a multiply on 1.x, baddbmm with alpha on 2.x
//   (compat::scaled_bmm);
// - the attention from the packed qkv output to proj's input, model::explicit_attention against timm 0.4.12's
//   composition in LibTorch's operations (reshape, permute, matmul, softmax, matmul, transpose, reshape);
// - the MLP's fc1 + GELU, model::linear_gelu against at::gelu(at::linear(x, W, b)) (timm's Mlp), in fp32 and, where
//   the CPU has native bf16 or the third argument is "bf16", under bf16 autocast;
// - the attention maps' softmax and its backward, LibTorch's softmax and _softmax_backward_data against
//   model::softmax_rows_ and softmax_backward_rows_ (in place, as explicit_attention runs them), fp32;
// - LayerNorm over [rows, D], model::layer_norm's kernel against at::layer_norm (dbot takes it on 1.x only), forward
// and forward + backward, fp32;
// - fc1 + GELU's backward pass (dz = g GELU'(z) and the bias gradient), LibTorch's multiply and sum against
//   model::detail::gelu_grad, in fp32 and bf16 (hot operands: the step reads them cold, see docs/PERFORMANCE.md);
// - one AdamW update of a student's parameters (the demo's and ViT-S/16's with MAE's decoder): train::AdamW's
//   _foreach form, LibTorch's fused CPU kernel (2.4+) and dbot's train::adamw_cpu (the Trainer's), fp32.
//   build-deb/bench_kernels [threads=2] [reps=20] [bf16]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "dbot/compat.h"
#include "dbot/core/vector_clones.h"
#include "dbot/mkd/distiller.h"
#include "dbot/model/batched_product.h"
#include "dbot/model/explicit_attention.h"
#include "dbot/model/layer_norm.h"
#include "dbot/model/linear_gelu.h"
#include "dbot/model/registry.h"
#include "dbot/model/softmax_rows.h"
#include "dbot/train/optim.h"

namespace {
struct Shape {
  const char* what;
  int64_t batch, n, k, m;
  bool trans_b;  // the scores' k^T: b is a transposed view
};

// A [rows, cols] operand of a row-wise pass, and which layer it stands for.
struct Matrix {
  const char* what;
  int64_t rows, cols;
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

// Forward alone (no autograd) and forward + backward of sum(f(inputs) * g), inputs as leaves needing gradients
// (clone keeps a transposed view's strides).
using Op = std::function<at::Tensor(const std::vector<at::Tensor>&)>;
std::pair<double, double> time_op(const Op& f, const std::vector<at::Tensor>& inputs, const at::Tensor& g, int reps) {
  const double fwd = best_ms(
      [&] {
        at::NoGradGuard no_grad;
        f(inputs);
      },
      reps);
  std::vector<at::Tensor> leaves;
  for (const auto& x : inputs) leaves.push_back(x.detach().clone().requires_grad_());
  const double both = best_ms([&] { torch::autograd::backward({f(leaves)}, {g}); }, reps);
  return {fwd, both};
}

void row(const std::string& what, const Op& libtorch, const Op& dbot, const std::vector<at::Tensor>& inputs,
         const at::Tensor& g, int reps) {
  const auto [lf, lb] = time_op(libtorch, inputs, g, reps);
  const auto [df, db] = time_op(dbot, inputs, g, reps);
  std::printf("| %s | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |\n", what.c_str(), lf, df, lf / df, lb, db, lb / db);
}
const char* kHeader =
    " | LibTorch fwd ms | dbot fwd ms | ratio | LibTorch fwd+bwd ms | dbot fwd+bwd ms | ratio |\n"
    "|---|---|---|---|---|---|---|\n";

std::string sizes(std::initializer_list<int64_t> dims) {
  std::string s;
  for (const auto d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

void batched_products(int reps) {
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
  const Op libtorch = [](const std::vector<at::Tensor>& x) { return dbot::compat::scaled_bmm(x[0], x[1], 0.125); };
  const Op dbot = [](const std::vector<at::Tensor>& x) { return dbot::model::scaled_bmm(x[0], x[1], 0.125); };
  std::printf("dbot's batched product: %s\n\n| product [B, n, k] x [B, k, m]%s",
              dbot::model::blas_batched_product(at::ones({1, 1, 1}), at::ones({1, 1, 1})) ? "sgemm loop" : "LibTorch's",
              kHeader);
  for (const auto& s : shapes) {
    const auto a = at::randn({s.batch, s.n, s.k});
    const auto b = s.trans_b ? at::randn({s.batch, s.m, s.k}).transpose(1, 2) : at::randn({s.batch, s.k, s.m});
    row(std::string(s.what) + ": " + sizes({s.batch, s.n, s.k, s.m}), libtorch, dbot, {a, b},
        at::randn({s.batch, s.n, s.m}), reps);
  }
}

// softmax(q k^T * hd^-0.5) v from qkv [N, T, 3D] to [N, T, D], at the shapes that take the explicit form on the CPU
// (fewer than 128 tokens, model/vit.cpp): the demo's student, teacher and decoder, ViT-Tiny/4's teacher, ViT-S/16's
// student.
void attention(int reps) {
  struct Attn {
    const char* what;
    int64_t N, T, D, h;
  };
  const Attn shapes[] = {{"demo student", 128, 9, 128, 4},
                         {"demo teacher", 128, 17, 128, 4},
                         {"demo decoder", 128, 17, 64, 4},
                         {"ViT-Tiny/4 teacher", 128, 65, 192, 3},
                         {"ViT-S/16 student", 32, 50, 384, 6}};
  for (const auto& s : shapes) {
    const Op libtorch = [s](const std::vector<at::Tensor>& x) {  // timm 0.4.12's Attention.forward, between the Linears
      const auto qkv = x[0].reshape({s.N, s.T, 3, s.h, s.D / s.h}).permute({2, 0, 3, 1, 4});
      const auto probs = (at::matmul(qkv[0], qkv[1].transpose(-2, -1)) * (1.0 / std::sqrt(s.D / s.h))).softmax(-1);
      return at::matmul(probs, qkv[2]).transpose(1, 2).reshape({s.N, s.T, s.D});
    };
    const Op dbot = [s](const std::vector<at::Tensor>& x) { return dbot::model::explicit_attention(x[0], s.h); };
    if (&s == shapes)
      std::printf("\ndbot's attention: %s\n\n| attention [N, T, D], heads%s",
                  dbot::model::blas_attention(at::ones({1, 1, 3})) ? "in place, sgemm loop" : "LibTorch's operations",
                  kHeader);
    row(std::string(s.what) + ": " + sizes({s.N, s.T, s.D, s.h}), libtorch, dbot, {at::randn({s.N, s.T, 3 * s.D})},
        at::randn({s.N, s.T, s.D}), reps);
  }
}

// The maps [N h T, T] of the demo's student (9 tokens) and teacher (17), ViT-Tiny/4's teacher (65, 3 heads) and
// ViT-S/16's student (50 of 197, 6 heads, batch 32). dbot's run in place, repeatedly on the same buffer.
void softmax(int reps) {
  const Matrix shapes[] = {{"demo student", 128 * 4 * 9, 9},
                           {"demo teacher", 128 * 4 * 17, 17},
                           {"ViT-Tiny/4 teacher", 128 * 3 * 65, 65},
                           {"ViT-S/16 student", 32 * 6 * 50, 50}};
  std::printf(
      "\nthe attention maps' softmax, fp32\n\n| maps [rows, T] | LibTorch softmax ms | dbot softmax_rows_ ms | ratio | "
      "LibTorch backward ms | dbot copy + backward ms | ratio |\n|---|---|---|---|---|---|---|\n");
  for (const auto& s : shapes) {
    auto scores = at::randn({s.rows, s.cols}) * 3.0, grad = at::randn({s.rows, s.cols});
    const auto probs = scores.softmax(-1);
    const double lf = best_ms([&] { scores.softmax(-1); }, reps);
    const double df = best_ms([&] { dbot::model::softmax_rows_(scores); }, reps);
    const double lb = best_ms([&] { at::_softmax_backward_data(grad, probs, -1, at::kFloat); }, reps);
    auto work = grad.clone();  // refilled every run: repeated in place, the gradient would shrink to denormals
    const double db = best_ms([&] { dbot::model::softmax_backward_rows_(work.copy_(grad), probs); }, reps);
    std::printf("| %s: %s | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |\n", s.what, sizes({s.rows, s.cols}).c_str(), lf,
                df, lf / df, lb, db, lb / db);
  }
}

// The blocks' norm1 / norm2 inputs [N T, D]: the demo's student (9 tokens) and teacher (17), ViT-Tiny/4's teacher
// (65, 192 wide), ViT-S/16's student (50 of 197, 384 wide, batch 32).
void layer_norm(int reps) {
  if (!dbot::core::cpu_has_avx2_fma()) {
    std::printf("\nLayerNorm: dbot's kernel needs AVX2 + FMA\n");
    return;
  }
  const Matrix shapes[] = {{"demo student", 128 * 9, 128},
                           {"demo teacher", 128 * 17, 128},
                           {"ViT-Tiny/4 teacher", 128 * 65, 192},
                           {"ViT-S/16 student", 32 * 50, 384}};
  const Op libtorch = [](const std::vector<at::Tensor>& x) {
    return at::layer_norm(x[0], {x[0].size(1)}, x[1], x[2], 1e-6);
  };
  const Op dbot = [](const std::vector<at::Tensor>& x) {
    return dbot::model::detail::layer_norm_kernel(x[0], x[1], x[2], 1e-6);
  };
  std::printf("\nLayerNorm, fp32\n\n| [M, D]%s", kHeader);
  for (const auto& s : shapes)
    row(std::string(s.what) + ": " + sizes({s.rows, s.cols}), libtorch, dbot,
        {at::randn({s.rows, s.cols}) + 3.0, 1.0 + 0.1 * at::randn({s.cols}), 0.1 * at::randn({s.cols})},
        at::randn({s.rows, s.cols}), reps);
}

// fc1 + GELU at [N, T, D] -> [N, T, 4D]: the demo's teacher (17 tokens) and student (9), ViT-Tiny/4's teacher
// (65) and student (17), ViT-S/16's student (50 of 197), batch 128 (ViT-S: 32). fp32 inputs; under bf16 autocast
// (amp = kBFloat16) both sides cast them as the training step does.
void fc1_gelu(int reps, at::ScalarType amp) {
  struct Mlp {
    const char* what;
    int64_t N, T, D;
  };
  const Mlp shapes[] = {{"demo teacher", 128, 17, 128},
                        {"demo student", 128, 9, 128},
                        {"ViT-Tiny/4 teacher", 128, 65, 192},
                        {"ViT-Tiny/4 student", 128, 17, 192},
                        {"ViT-S/16 student", 32, 50, 384}};
  const Op libtorch = [amp](const std::vector<at::Tensor>& x) {
    dbot::compat::AutocastGuard autocast(c10::kCPU, amp);
    return at::gelu(at::linear(x[0], x[1], x[2]));
  };
  const Op dbot = [amp](const std::vector<at::Tensor>& x) {
    dbot::compat::AutocastGuard autocast(c10::kCPU, amp);
    return dbot::model::linear_gelu(x[0], x[1], x[2]);
  };
  std::printf("\ndbot's fc1 + GELU, %s: %s\n\n| fc1 + GELU [N, T, D] -> [N, T, 4D]%s",
              amp == at::kBFloat16 ? "bf16 autocast" : "fp32",
              dbot::core::cpu_has_avx2_fma() ? "fused pass, AVX2" : "LibTorch's operations", kHeader);
  for (const auto& s : shapes) {
    const auto x = at::randn({s.N, s.T, s.D}), w = at::randn({4 * s.D, s.D}) * 0.05, b = at::randn({4 * s.D});
    row(std::string(s.what) + ": " + sizes({s.N, s.T, s.D}), libtorch, dbot, {x, w, b},
        at::randn({s.N, s.T, 4 * s.D}).to(amp), reps);
  }
}

// fc1 + GELU's backward pass: dz = g GELU'(z) and the bias gradient, LibTorch's multiply and sum against
// model::detail::gelu_grad, at the demo's and ViT-Tiny/4's [M, hidden].
void gelu_grad(int reps, at::ScalarType dtype) {
  const Matrix shapes[] = {{"demo student", 128 * 9, 512},
                           {"demo decoder", 128 * 17, 256},
                           {"ViT-Tiny/4 student", 128 * 17, 768},
                           {"ViT-Tiny/4 decoder", 128 * 65, 512}};
  std::printf(
      "\nfc1 + GELU backward's pass, %s\n\n| [M, hidden] | LibTorch mul + sum ms | dbot gelu_grad ms | ratio "
      "|\n|---|---|---|---|\n",
      dtype == at::kBFloat16 ? "bf16" : "fp32");
  for (const auto& s : shapes) {
    const auto g = at::randn({s.rows, s.cols}).to(dtype), d = at::rand({s.rows, s.cols}).to(dtype);
    const double lt = best_ms([&] { (g * d).sum(0, false, at::kFloat); }, reps);
    const double db = best_ms([&] { dbot::model::detail::gelu_grad(g, d, dbot::core::cpu_has_avx2_fma()); }, reps);
    std::printf("| %s: %s | %.3f | %.3f | %.2f |\n", s.what, sizes({s.rows, s.cols}).c_str(), lt, db, lt / db);
  }
}

// One update at lr 1e-3 (MAE's two weight-decay groups in train::AdamW; LibTorch's kernel in one call over all
// tensors, decay 0.05, as a lower bound on torch.optim's two calls), gradients ~1e-3, fp32 on the CPU.
void adamw(int reps) {
  struct Student {
    const char* what;
    dbot::model::VitConfig vit;
    dbot::mkd::DecoderConfig decoder;
  };
  auto demo = dbot::model::vit_config("vit_tiny_patch7_28");  // recipes/fmnist_vit_tiny.yaml
  demo.in_chans = 1;
  demo.embed_dim = 128;
  demo.depth = 3;
  demo.num_heads = 4;
  const Student students[] = {{"demo (ViT 128 x 3, decoder 64 x 2)", demo, {64, 2, 4}},
                              {"ViT-S/16 (decoder 512 x 8)", dbot::model::vit_config("vit_small_patch16_224"), {}}};
  const bool libtorch_fused = dbot::compat::has_fused_adamw(c10::kCPU);
  std::printf(
      "\nAdamW, one update, fp32%s\n\n| student parameters | _foreach ms | LibTorch fused ms | dbot adamw_cpu ms | "
      "_foreach / dbot | LibTorch fused / dbot |\n|---|---|---|---|---|---|\n",
      dbot::core::cpu_has_avx2_fma() ? " (adamw_cpu: AVX2)" : " (adamw_cpu: plain loop)");
  for (const auto& s : students) {
    dbot::mkd::MkdConfig mkd;
    mkd.decoder = s.decoder;
    dbot::mkd::Distiller d(s.vit, mkd, 0);
    const auto params = d.named_student_parameters();
    std::vector<at::Tensor> p, g, m, v;
    int64_t elements = 0;
    for (const auto& [name, t] : params) {
      t.mutable_grad() = at::randn_like(t) * 1e-3;
      p.push_back(t);
      g.push_back(t.grad());
      m.push_back(at::zeros_like(t));
      v.push_back(at::zeros_like(t));
      elements += t.numel();
    }
    dbot::train::AdamWConfig cfg;
    dbot::train::AdamW foreach_opt(params, cfg);
    cfg.fused = true;
    dbot::train::AdamW dbot_opt(params, cfg);
    const double foreach_ms = best_ms([&] { foreach_opt.step(1e-3); }, reps);
    const double dbot_ms = best_ms([&] { dbot_opt.step(1e-3); }, reps);
    double fused_ms = NAN;
    if (libtorch_fused) {
      const auto step = at::full({}, 1.0);
      fused_ms = best_ms([&] { dbot::compat::fused_adamw(p, g, m, v, step, 1e-3, 0.9, 0.95, 0.05, 1e-8); }, reps);
    }
    const auto fused = [&](const char* format, double x) {
      char text[32];
      std::snprintf(text, sizeof text, format, x);
      return libtorch_fused ? std::string(text) : std::string("none in this LibTorch");
    };
    std::printf("| %s: %zu tensors, %.2fM elements | %.3f | %s | %.3f | %.2f | %s |\n", s.what, params.size(),
                elements / 1e6, foreach_ms, fused("%.3f", fused_ms).c_str(), dbot_ms, foreach_ms / dbot_ms,
                fused("%.2f", fused_ms / dbot_ms).c_str());
  }
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::stoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 20;
  at::set_num_threads(threads);
  std::printf("LibTorch %s, %d threads, best of %d\n\n", dbot::compat::torch_version().c_str(), threads, reps);
  batched_products(reps);
  attention(reps);
  softmax(reps);
  layer_norm(reps);
  fc1_gelu(reps, at::kFloat);
  if (dbot::compat::cpu_has_bf16() || (argc > 3 && std::string(argv[3]) == "bf16")) fc1_gelu(reps, at::kBFloat16);
  gelu_grad(reps, at::kFloat);
  gelu_grad(reps, at::kBFloat16);
  adamw(reps);
}
