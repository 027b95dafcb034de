#include "dbot/train/engine.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/data/loader.h"
#include "dbot/io/files.h"
#include "dbot/io/metrics.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/schedule.h"

namespace dbot::train {

namespace fs = std::filesystem;

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_duration(double s) {
  char buf[32];
  const auto total = static_cast<long>(s);
  std::snprintf(buf, sizeof(buf), "%ldh%02ldm%02lds", total / 3600, (total / 60) % 60, total % 60);
  return buf;
}
}  // namespace

PretrainSummary pretrain(const io::RunConfig& cfg, const PretrainOptions& opts) {
  const std::string last_path = opts.run_dir + "/checkpoint-last.pt";
  fs::create_directories(opts.run_dir);
  const bool have_last = fs::exists(last_path);
  if (have_last && !opts.resume) {
    throw std::runtime_error(last_path + " exists: pass --resume to continue that run, or choose another --output");
  }
  if (opts.resume && !have_last && fs::exists(opts.run_dir + "/stage-1.pt")) {
    throw std::runtime_error(opts.run_dir + ": has stage files but no checkpoint-last.pt to resume from");
  }

  data::Dataset train_set = data::load_dataset(cfg.data, "train");
  if (train_set.images.size(1) != cfg.model.in_chans || train_set.images.size(2) != cfg.model.img_size) {
    throw std::runtime_error(cfg.data.root + ": images are " + c10::str(train_set.images.sizes().slice(1)) +
                             " but model " + cfg.model.name + " expects " + std::to_string(cfg.model.in_chans) + "x" +
                             std::to_string(cfg.model.img_size) + "x" + std::to_string(cfg.model.img_size));
  }
  const uint64_t seed = cfg.train.seed;
  data::TrainLoader loader(train_set, cfg.data, cfg.optim.batch_size, seed);
  const int64_t ipe = loader.iters_per_epoch();

  mkd::Distiller distiller(cfg.model, cfg.mkd, seed);
  AdamW optimizer(distiller.named_student_parameters(), cfg.optim.adamw);

  ScheduleConfig sched;
  sched.peak_lr = cfg.optim.peak_lr();
  sched.min_lr = cfg.optim.min_lr;
  sched.warmup_epochs = cfg.optim.warmup_epochs;
  sched.stage_epochs = cfg.stage_epochs;
  sched.iters_per_epoch = ipe;
  sched.accum_iter = cfg.optim.accum_iter;
  const std::vector<double> lrs = lr_schedule(sched);

  int64_t start_epoch = 0, start_iter = 0;
  if (have_last) {
    const Checkpoint ckpt = load_checkpoint(last_path);
    if (ckpt.seed != seed) {
      throw std::runtime_error(last_path + ": was written with seed " + std::to_string(ckpt.seed) +
                               ", this run has seed " + std::to_string(seed));
    }
    restore(distiller, &optimizer, ckpt, last_path);
    start_epoch = ckpt.epoch;
    start_iter = ckpt.iteration;
  }
  const std::string config_yaml = cfg.to_yaml();
  io::write_atomic(opts.run_dir + "/config.yaml", config_yaml);
  io::JsonlWriter metrics(opts.run_dir + "/metrics.jsonl");

  const int64_t last_epoch = cfg.stage_epochs.back();
  const int64_t total_iters = last_epoch * ipe;
  if (!opts.quiet) {
    std::printf("dbot pretrain: %s, %lld stage(s) %s, %lld images, %lld it/epoch, peak lr %.3g, %s, %d thread(s)\n",
                cfg.model.name.c_str(), static_cast<long long>(cfg.stage_epochs.size() - 1),
                c10::str(cfg.stage_epochs).c_str(), static_cast<long long>(train_set.size()),
                static_cast<long long>(ipe), sched.peak_lr, opts.bf16 ? "bf16 autocast" : "fp32",
                at::get_num_threads());
    std::fflush(stdout);
  }

  PretrainSummary summary;
  const auto t_start = Clock::now();
  auto images_per_s = [&] {
    const double dt = since(t_start);
    return dt > 0 ? static_cast<double>(summary.iterations * cfg.optim.batch_size) / dt : 0.0;
  };
  auto finish = [&](int64_t stages_done, bool finished) {
    summary.seconds = since(t_start);
    summary.images_per_s = images_per_s();
    summary.stages_done = stages_done;
    summary.finished = finished;
    return summary;
  };
  auto save_stage = [&](int64_t stage) {
    save_checkpoint(opts.run_dir + "/stage-" + std::to_string(stage) + ".pt", distiller, nullptr,
                    cfg.stage_epochs[static_cast<size_t>(stage)], 0, config_yaml);
  };
  distiller.train(true);
  for (int64_t epoch = start_epoch; epoch < last_epoch; ++epoch) {
    const int64_t stage = stage_of_epoch(cfg.stage_epochs, epoch);
    while (distiller.stage() < stage) {  // stage boundary: keep the finished student, then switch
      save_stage(distiller.stage());
      distiller.next_stage();
    }
    const at::Tensor perm = loader.permutation(epoch);
    optimizer.zero_grad();
    double epoch_loss = 0.0;
    int64_t epoch_count = 0;
    auto t_log = Clock::now();
    int64_t log_images = 0;
    for (int64_t it = (epoch == start_epoch ? start_iter : 0); it < ipe; ++it) {
      const int64_t global = epoch * ipe + it;
      if (opts.stop_after >= 0 && summary.iterations >= opts.stop_after) {
        save_checkpoint(last_path, distiller, &optimizer, epoch, it, config_yaml);
        return finish(distiller.stage() - 1, false);
      }
      at::Generator gen = mkd::derive_generator(seed, mkd::RngPurpose::kStep, static_cast<uint64_t>(global));
      const at::Tensor imgs = loader.batch(perm, it, gen);
      at::Tensor loss;
      {
        compat::AutocastGuard autocast(opts.bf16);
        loss = distiller.forward(imgs, gen);
      }
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value)) {
        throw std::runtime_error("loss is " + std::to_string(loss_value) + " at stage " + std::to_string(stage) +
                                 ", epoch " + std::to_string(epoch) + ", iteration " + std::to_string(it) +
                                 "; stopping (last good checkpoint: " + last_path + ")");
      }
      (loss / static_cast<double>(cfg.optim.accum_iter)).backward();
      const double lr = lrs[static_cast<size_t>(global)];
      if ((it + 1) % cfg.optim.accum_iter == 0) {
        if (cfg.optim.clip_grad > 0.0) optimizer.clip_grad_norm(cfg.optim.clip_grad);
        optimizer.step(lr);
        optimizer.zero_grad();
      }
      epoch_loss += loss_value;
      ++epoch_count;
      ++summary.iterations;
      log_images += imgs.size(0);

      const bool log_now = cfg.train.log_every > 0 && ((it + 1) % cfg.train.log_every == 0 || it + 1 == ipe);
      if (log_now) {
        const double dt = since(t_log);
        const double ips = dt > 0 ? static_cast<double>(log_images) / dt : 0.0;
        metrics.write({{"type", "step"},
                       {"stage", stage},
                       {"epoch", epoch},
                       {"iteration", it + 1},
                       {"global_iteration", global + 1},
                       {"loss", loss_value},
                       {"lr", lr},
                       {"images_per_s", ips}});
        if (!opts.quiet) {
          const double eta = ips > 0 ? static_cast<double>((total_iters - global - 1) * cfg.optim.batch_size) / ips : 0;
          std::printf("stage %lld epoch %lld [%lld/%lld] loss %.4f lr %.3e %.0f img/s eta %s\n",
                      static_cast<long long>(stage), static_cast<long long>(epoch), static_cast<long long>(it + 1),
                      static_cast<long long>(ipe), loss_value, lr, ips, format_duration(eta).c_str());
          std::fflush(stdout);
        }
        t_log = Clock::now();
        log_images = 0;
      }
      if (cfg.train.checkpoint_every > 0 && (global + 1) % cfg.train.checkpoint_every == 0 && it + 1 < ipe) {
        save_checkpoint(last_path, distiller, &optimizer, epoch, it + 1, config_yaml);
      }
    }
    metrics.write({{"type", "epoch"},
                   {"stage", stage},
                   {"epoch", epoch},
                   {"loss", epoch_count > 0 ? epoch_loss / static_cast<double>(epoch_count) : 0.0},
                   {"lr", lrs[static_cast<size_t>((epoch + 1) * ipe - 1)]},
                   {"images_per_s", images_per_s()}});
    save_checkpoint(last_path, distiller, &optimizer, epoch + 1, 0, config_yaml);
  }
  save_stage(distiller.stage());
  return finish(distiller.stage(), true);
}

}  // namespace dbot::train
