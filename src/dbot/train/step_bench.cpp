#include "dbot/train/step_bench.h"

#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <tuple>

#include "dbot/compat.h"
#include "dbot/data/loader.h"
#include "dbot/mkd/student.h"
#include "dbot/model/batched_product.h"

namespace dbot::train {

namespace {

// A block on T tokens whose output is wanted at R of them (R < T: the last block before the loss).
double block_flops(double T, double R, double D, double mlp_ratio) {
  return 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * R * D * D + 2 * 2 * R * D * mlp_ratio * D;
}

// depth blocks on T tokens, the last one's output wanted at R of them.
double blocks_flops(int64_t depth, double T, double R, double D, double mlp_ratio) {
  return depth > 0 ? static_cast<double>(depth - 1) * block_flops(T, T, D, mlp_ratio) + block_flops(T, R, D, mlp_ratio)
                   : 0.0;
}

// Milliseconds per call of f, after `warmup` calls, with the device drained before and after.
double time_ms(const std::function<void()>& f, int64_t iters, int64_t warmup, c10::Device device) {
  for (int64_t i = 0; i < warmup; ++i) f();
  compat::synchronize(device);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) f();
  compat::synchronize(device);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
         static_cast<double>(iters);
}

// Builds the list of a step's products layer by layer.
struct GemmList {
  std::vector<Gemm> out;
  // A Linear on M rows, in -> out_features: y = x W^T, and when trained dx = dy W (unless the input needs no
  // gradient) and dW = dy^T x.
  void linear(int64_t M, int64_t in, int64_t out_features, bool backward, bool input_grad = true) {
    out.push_back({1, M, out_features, in, false, true});
    if (!backward) return;
    if (input_grad) out.push_back({1, M, in, out_features, false, false});
    out.push_back({1, out_features, in, M, true, false});
  }
  // softmax(q k^T) v over B = N h sequences of T tokens of width hd: s = q k^T, o = p v; backward dp = do v^T,
  // dv = p^T do, dq = ds k, dk = ds^T q.
  void attention(int64_t B, int64_t T, int64_t hd, bool backward) {
    out.push_back({B, T, T, hd, false, true});
    out.push_back({B, T, hd, T, false, false});
    if (!backward) return;
    out.push_back({B, T, T, hd, false, true});
    out.push_back({B, T, hd, T, true, false});
    out.push_back({B, T, hd, T, false, false});
    out.push_back({B, T, hd, T, true, false});
  }
  // depth blocks on T tokens, the last one's output wanted at R of them (model::BlockImpl::forward_rows).
  void blocks(int64_t depth, int64_t N, int64_t T, int64_t R, int64_t D, int64_t heads, double mlp_ratio,
              bool backward) {
    const int64_t hidden = static_cast<int64_t>(static_cast<double>(D) * mlp_ratio);
    for (int64_t i = 0; i < depth; ++i) {
      const int64_t rows = N * (i + 1 == depth ? R : T);
      linear(N * T, D, 3 * D, backward);  // qkv
      attention(N * heads, T, D / heads, backward);
      linear(rows, D, D, backward);       // proj
      linear(rows, D, hidden, backward);  // fc1
      linear(rows, hidden, D, backward);  // fc2
    }
  }
};

int64_t kept_patches(const PretrainConfig& cfg) { return mkd::kept_count(cfg.model.num_patches(), cfg.mkd.mask_ratio); }

int64_t teacher_depth(const PretrainConfig& cfg) {  // mkd.teacher_depth, -1 = the student's
  return cfg.mkd.teacher_depth >= 0 ? cfg.mkd.teacher_depth : cfg.model.depth;
}

// The tokens the loss weighs (mkd::loss_rows): the masked patches, and CLS for a teacher target (this benchmark's
// teacher is the student's shape, never a CLIP tower).
int64_t loss_token_count(const PretrainConfig& cfg) {
  return cfg.model.num_patches() - kept_patches(cfg) + (cfg.mkd.target == "pixels" ? 0 : 1);
}

int64_t target_dim(const PretrainConfig& cfg) {  // what decoder_predp predicts (a teacher of the student's width)
  const auto& m = cfg.model;
  return cfg.mkd.target == "pixels" ? m.in_chans * m.patch_size * m.patch_size : m.embed_dim;
}

}  // namespace

std::vector<Gemm> step_gemms(const PretrainConfig& cfg) {
  const auto& m = cfg.model;
  const auto& dec = cfg.mkd.decoder;
  const int64_t N = cfg.optim.batch_size, L = m.num_patches(), K = kept_patches(cfg), R = loss_token_count(cfg);
  const int64_t patch = m.in_chans * m.patch_size * m.patch_size;
  GemmList g;
  if (cfg.mkd.target != "pixels") {  // the teacher: full image, forward only
    g.linear(N * L, patch, m.embed_dim, false);
    g.blocks(teacher_depth(cfg), N, 1 + L, R, m.embed_dim, m.num_heads, m.mlp_ratio, false);
  }
  g.linear(N * L, patch, m.embed_dim, true, /*input_grad=*/false);  // the student: patches, then CLS + kept
  g.blocks(m.depth, N, 1 + K, 1 + K, m.embed_dim, m.num_heads, m.mlp_ratio, true);
  g.linear(N * (1 + K), m.embed_dim, dec.embed_dim, true);  // decoder_embed, blocks on 1 + L, decoder_predp on R
  g.blocks(dec.depth, N, 1 + L, R, dec.embed_dim, dec.num_heads, dec.mlp_ratio, true);
  g.linear(N * R, dec.embed_dim, target_dim(cfg), true);
  return g.out;
}

double total_flops(const std::vector<Gemm>& gemms) {
  double f = 0;
  for (const auto& g : gemms) f += g.flops();
  return f;
}

double gemm_floor_ms(const std::vector<Gemm>& gemms, const core::Runtime& runtime, at::ScalarType dtype, int64_t reps,
                     int64_t warmup) {
  at::NoGradGuard no_grad;
  const auto opts = at::TensorOptions().dtype(dtype).device(runtime.device);
  struct Operands {
    at::Tensor a, b, c;  // [batch, m, k], [batch, k, n] (possibly transposed views), [batch, m, n]; 2-D for batch 1
  };
  // Blocks repeat their shapes: one set of operands per distinct product keeps memory at a few layers' worth.
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, bool, bool>, Operands> by_shape;
  std::vector<Operands*> sequence;
  for (const auto& g : gemms) {
    auto& o = by_shape[{g.batch, g.m, g.n, g.k, g.trans_a, g.trans_b}];
    if (!o.c.defined()) {
      o.a = g.trans_a ? at::randn({g.batch, g.k, g.m}, opts).transpose(1, 2) : at::randn({g.batch, g.m, g.k}, opts);
      o.b = g.trans_b ? at::randn({g.batch, g.n, g.k}, opts).transpose(1, 2) : at::randn({g.batch, g.k, g.n}, opts);
      o.c = at::empty({g.batch, g.m, g.n}, opts);
      if (g.batch == 1) {
        o.a = o.a[0];
        o.b = o.b[0];
        o.c = o.c[0];
      }
    }
    sequence.push_back(&o);
  }
  return time_ms(
      [&] {
        for (Operands* o : sequence) {
          if (o->c.dim() == 2) {
            at::mm_out(o->c, o->a, o->b);
          } else {
            model::bmm_out(o->c, o->a, o->b);  // the attention's kernel
          }
        }
      },
      reps, warmup, runtime.device);
}

StepFlops step_flops(const PretrainConfig& cfg) {
  const auto& m = cfg.model;
  const auto& dec = cfg.mkd.decoder;
  const double L = static_cast<double>(m.num_patches());
  const double K = static_cast<double>(kept_patches(cfg)), R = static_cast<double>(loss_token_count(cfg));
  const double D = static_cast<double>(m.embed_dim), Dd = static_cast<double>(dec.embed_dim), Dt = D;
  const double patch = 2 * L * static_cast<double>(m.in_chans * m.patch_size * m.patch_size);
  StepFlops f;
  if (cfg.mkd.target != "pixels") f.teacher = patch * Dt + blocks_flops(teacher_depth(cfg), 1 + L, R, Dt, m.mlp_ratio);
  f.student = patch * D + blocks_flops(m.depth, 1 + K, 1 + K, D, m.mlp_ratio);
  f.decoder = 2 * (1 + K) * D * Dd + blocks_flops(dec.depth, 1 + L, R, Dd, dec.mlp_ratio) +
              2 * R * Dd * static_cast<double>(target_dim(cfg));
  return f;
}

double matmul_peak_flops(const core::Runtime& runtime, at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  const int64_t n = runtime.is_cuda() ? 8192 : 1024;
  const auto opts = at::TensorOptions().dtype(dtype).device(runtime.device);
  const auto a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  at::Tensor c;
  const double ms = time_ms([&] { c = at::mm(a, b); }, runtime.is_cuda() ? 50 : 5, 2, runtime.device);
  return 2.0 * static_cast<double>(n * n * n) / (ms * 1e-3);
}

StepBenchResult bench_step(const PretrainConfig& cfg, const core::Runtime& runtime, const StepBenchOptions& opts) {
  const int64_t B = cfg.optim.batch_size, total = opts.steps + opts.warmup;
  const int64_t epochs = cfg.mkd.stage_epochs.back();
  Trainer trainer(cfg, runtime, (total + epochs - 1) / epochs + 1);
  const auto& m = cfg.model;
  // Synthetic uint8 images on the host, as the loader hands them over (train_step normalizes on the device).
  const at::Tensor images = at::randint(0, 256, {B, m.in_chans, m.img_size, m.img_size}, at::kByte);
  int64_t global = 0;
  auto step = [&] {
    Batch batch;
    batch.images = images;
    batch.global = global % static_cast<int64_t>(trainer.lr_schedule().size());
    batch.iteration = batch.global;
    batch.rng = core::derive_generator(cfg.train.seed, core::RngPurpose::kStep, static_cast<uint64_t>(global));
    ++global;
    trainer.train_step(batch);
  };
  compat::reset_peak_memory(runtime.device);
  StepBenchResult r;
  r.ms_per_step = time_ms(step, opts.steps, opts.warmup, runtime.device);
  r.peak_memory_gib = static_cast<double>(compat::peak_memory_bytes(runtime.device)) / (1024.0 * 1024 * 1024);
  const at::Tensor device_images =
      data::normalize(core::to_device(images, runtime.device), cfg.data.mean, cfg.data.std);
  // The teacher as the step runs it: its last block on the loss's tokens only (a random mask's, with CLS).
  const auto ids_masked =
      mkd::random_masking(at::empty({B, m.num_patches(), 1}), at::rand({B, m.num_patches()}), cfg.mkd.mask_ratio)
          .ids_masked;
  const auto rows = core::to_device(mkd::loss_rows(ids_masked, /*cls=*/true), runtime.device);
  r.teacher_ms = time_ms(
      [&] {
        compat::AutocastGuard autocast(runtime.device.type(), runtime.amp_dtype());
        trainer.distiller().forward_target(device_images, rows);
      },
      opts.steps, 1, runtime.device);
  r.optimizer_ms = time_ms([&] { trainer.optimizer().step(1e-6); }, opts.steps, 1, runtime.device);
  if (!opts.profile.empty()) {
    if (!std::ofstream(opts.profile)) throw std::runtime_error(opts.profile + ": cannot write the profile there");
    torch::autograd::profiler::RecordProfile trace(opts.profile);
    time_ms(step, opts.steps, 0, runtime.device);
  }

  r.model = m.name;
  r.img_size = m.img_size;
  r.batch = B;
  for (const auto& p : trainer.distiller().named_student_parameters()) r.param_count_m += p.second.numel() / 1e6;
  r.samples_per_s = 1000.0 * static_cast<double>(B) / r.ms_per_step;
  const double flops = step_flops(cfg).per_image();
  r.gflop_per_image = flops / 1e9;
  r.achieved_tflops = flops * r.samples_per_s / 1e12;
  const at::ScalarType peak_dtype = runtime.amp == core::Amp::kNone ? at::kFloat : runtime.amp_dtype();
  const auto gemms = step_gemms(cfg);
  // As many runs as timed steps: at ViT-B/16 size on a 2-core CPU one run of the products takes about a minute.
  r.gemm_floor_ms = gemm_floor_ms(gemms, runtime, peak_dtype, std::max<int64_t>(opts.steps, 1),
                                  std::clamp<int64_t>(opts.warmup, 1, 2));
  // A large square product is not every BLAS's fastest shape: the PyPI wheel's MKL on a Zen 1 ran 1024^3 at 0.029
  // TFLOP/s and ViT-Tiny/4's own products at 0.030 (an MFU of 105%). The peak is the faster of the two.
  r.peak_tflops =
      std::max(matmul_peak_flops(runtime, peak_dtype), total_flops(gemms) / (r.gemm_floor_ms * 1e-3)) / 1e12;
  r.mfu = r.achieved_tflops / r.peak_tflops;
  r.device = runtime.describe();
  r.precision = runtime.precision_name();
  r.torch_version = compat::torch_version();
  return r;
}

std::string format_step_bench(const StepBenchResult& r) {
  char buf[2048];
  const double rest = r.ms_per_step - r.teacher_ms - r.optimizer_ms;
  std::snprintf(buf, sizeof(buf),
                "dbot bench step: LibTorch %s, %s\n\n"
                "| model | img_size | batch | param_count (M) | samples/s | ms/step | GFLOP/img | TFLOP/s | "
                "peak TFLOP/s (%s matmul) | MFU | peak mem (GiB) |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n"
                "| %s | %lld | %lld | %.2f | %.1f | %.2f | %.3f | %.3f | %.3f | %.1f%% | %.2f |\n\n"
                "| part of the step | ms | share |\n|---|---|---|\n"
                "| teacher forward | %.2f | %.0f%% |\n"
                "| student forward + backward (rest) | %.2f | %.0f%% |\n"
                "| AdamW update | %.2f | %.0f%% |\n\n"
                "GEMM floor (the step's matrix products back to back, %s): %.2f ms; ms/step / floor = %.2f\n\n"
                "dbot-bench: ms_per_step=%.4f images_per_s=%.2f gemm_floor_ms=%.4f\n",
                r.torch_version.c_str(), r.device.c_str(), r.precision.c_str(), r.model.c_str(),
                static_cast<long long>(r.img_size), static_cast<long long>(r.batch), r.param_count_m, r.samples_per_s,
                r.ms_per_step, r.gflop_per_image, r.achieved_tflops, r.peak_tflops, 100.0 * r.mfu, r.peak_memory_gib,
                r.teacher_ms, 100.0 * r.teacher_ms / r.ms_per_step, rest, 100.0 * rest / r.ms_per_step, r.optimizer_ms,
                100.0 * r.optimizer_ms / r.ms_per_step, r.precision.c_str(), r.gemm_floor_ms,
                r.ms_per_step / r.gemm_floor_ms, r.ms_per_step, r.samples_per_s, r.gemm_floor_ms);
  return buf;
}

}  // namespace dbot::train
