// bench_step: times one dBOT training step of a recipe, by component, and prints a table.
//   bench_step --config recipes/fmnist_vit_tiny.yaml [--set key=value ...] [--iters 20] [--warmup 3]
//              [--threads N] [--precision fp32|bf16]
// Components: data (gather + augmentation), teacher forward, student forward+backward (encoder +
// decoder + loss), AdamW step; "step" is the whole iteration as the engine runs it.
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include "dbot/compat.h"
#include "dbot/data/loader.h"
#include "dbot/io/config.h"
#include "dbot/mkd/distiller.h"
#include "dbot/train/optim.h"

namespace {
double time_ms(const std::function<void()>& f, int iters, int warmup) {
  for (int i = 0; i < warmup; ++i) f();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_step: time one dBOT training step by component"};
  std::string config;
  std::vector<std::string> overrides;
  int iters = 20, warmup = 3;
  int64_t threads = 0;
  std::string precision = "fp32";
  app.add_option("--config", config, "recipe")->required()->check(CLI::ExistingFile);
  app.add_option("--set", overrides, "recipe overrides");
  app.add_option("--iters", iters, "timed iterations");
  app.add_option("--warmup", warmup, "untimed iterations first");
  app.add_option("--threads", threads, "threads (0 = all cores)");
  app.add_option("--precision", precision)->check(CLI::IsMember({"fp32", "bf16"}));
  CLI11_PARSE(app, argc, argv);
  try {
    auto cfg = dbot::io::load_config(config, overrides);
    at::set_num_threads(static_cast<int>(threads > 0 ? threads : std::thread::hardware_concurrency()));
    const bool bf16 = precision == "bf16";
    const int64_t B = cfg.optim.batch_size;
    dbot::data::Dataset ds;  // synthetic images of the recipe's shape (the bench measures compute, not I/O)
    ds.images = at::randint(0, 256, {B * 4, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size}).to(at::kByte);
    ds.labels = at::zeros({B * 4}, at::kLong);
    dbot::data::TrainLoader loader(ds, cfg.data, B, 0);
    dbot::mkd::Distiller d(cfg.model, cfg.mkd, 0);
    dbot::train::AdamW opt(d.named_student_parameters(), cfg.optim.adamw);
    d.train(true);
    const auto perm = loader.permutation(0);
    auto gen = dbot::mkd::derive_generator(0, dbot::mkd::RngPurpose::kStep, 0);
    const at::Tensor imgs = loader.batch(perm, 0, gen);

    const double data_ms = time_ms([&] { loader.batch(perm, 1, gen); }, iters, warmup);
    const double teacher_ms = time_ms(
        [&] {
          dbot::compat::AutocastGuard ac(bf16);
          d.forward_teacher(imgs);
        },
        iters, warmup);
    const double student_ms =
        time_ms(
            [&] {
              at::Tensor loss;
              at::Tensor target = [&] {
                dbot::compat::AutocastGuard ac(bf16);
                return d.forward_teacher(imgs);
              }();
              {
                dbot::compat::AutocastGuard ac(bf16);
                auto noise = at::rand({B, cfg.model.num_patches()}, gen);
                auto enc = d.forward_encoder(imgs, noise, &gen);
                loss = dbot::mkd::forward_loss(target, d.forward_decoder(enc.latent, enc.ids_restore, &gen), enc.mask);
              }
              loss.backward();
            },
            iters, warmup) -
        teacher_ms;
    const double opt_ms = time_ms([&] { opt.step(1e-4); }, iters, warmup);
    const double step_ms = time_ms(
        [&] {
          const at::Tensor x = loader.batch(perm, 2, gen);
          at::Tensor loss;
          {
            dbot::compat::AutocastGuard ac(bf16);
            loss = d.forward(x, gen);
          }
          loss.backward();
          opt.step(1e-4);
          opt.zero_grad();
        },
        iters, warmup);
    int64_t params = 0;
    for (const auto& p : d.named_student_parameters()) params += p.second.numel();
    std::printf("dbot bench_step: LibTorch %s, %s, batch %lld, %s, %d thread(s), %.2fM student params\n",
                dbot::compat::torch_version().c_str(), cfg.model.name.c_str(), static_cast<long long>(B),
                precision.c_str(), at::get_num_threads(), params / 1e6);
    std::printf("| component | ms/step | share |\n|---|---|---|\n");
    for (const auto& [name, ms] : std::vector<std::pair<const char*, double>>{{"data + augmentation", data_ms},
                                                                              {"teacher forward", teacher_ms},
                                                                              {"student fwd+bwd", student_ms},
                                                                              {"AdamW step", opt_ms}}) {
      std::printf("| %s | %.2f | %.0f%% |\n", name, ms, 100 * ms / step_ms);
    }
    std::printf("| whole step | %.2f | images/s %.1f |\n", step_ms, 1000.0 * B / step_ms);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_step: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
