#include "dbot/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/interrupt.h"
#include "dbot/train/schedule.h"

namespace dbot::train {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_duration(double s) {
  char buf[32];
  const auto total = static_cast<long>(s);
  std::snprintf(buf, sizeof(buf), "%ldh%02ldm%02lds", total / 3600, (total / 60) % 60, total % 60);
  return buf;
}

std::vector<double> make_schedule(const PretrainConfig& cfg, int64_t iters_per_epoch, int64_t world_size) {
  ScheduleConfig sched;
  sched.peak_lr = cfg.optim.peak_lr(world_size);
  sched.min_lr = cfg.optim.min_lr;
  sched.warmup_epochs = cfg.optim.warmup_epochs;
  sched.stage_epochs = cfg.mkd.stage_epochs;
  sched.iters_per_epoch = iters_per_epoch;
  sched.accum_iter = cfg.optim.accum_iter;
  return lr_schedule(sched);
}
}  // namespace

struct Trainer::Progress {
  Clock::time_point start = Clock::now(), last_status = start;
  int64_t iterations = 0;  // run by this call
  int64_t bad = 0;         // images replaced (data.skip_bad)
  int stopped_by = 0;      // the signal that stopped the run
  double images_per_s(int64_t batch) const {
    const double dt = since(start);
    return dt > 0 ? static_cast<double>(iterations * batch) / dt : 0.0;
  }
  // On a terminal: one line rewritten in place (at most 4 times a second); nothing otherwise.
  void status_line(int64_t stage, int64_t epoch, int64_t it, int64_t ipe, int64_t images, double seconds, double wait_s,
                   int64_t images_left) {
    static const bool tty = isatty(fileno(stdout)) != 0;
    if (!tty || since(last_status) < 0.25 || seconds <= 0) return;
    last_status = Clock::now();
    const double ips = static_cast<double>(images) / seconds;
    std::printf("\r\033[Kstage %lld epoch %lld [%lld/%lld] %.0f img/s data %.0f%% eta %s",
                static_cast<long long>(stage), static_cast<long long>(epoch), static_cast<long long>(it),
                static_cast<long long>(ipe), ips, 100.0 * wait_s / seconds,
                format_duration(static_cast<double>(images_left) / ips).c_str());
    std::fflush(stdout);
  }
  static void clear_status_line() {
    static const bool tty = isatty(fileno(stdout)) != 0;
    if (tty) std::printf("\r\033[K");
  }
};

Trainer::Trainer(const PretrainConfig& cfg, const core::Runtime& runtime, int64_t iters_per_epoch, dist::Group* group,
                 const mkd::StartWeights& start)
    : cfg_(cfg),
      runtime_(runtime),
      iters_per_epoch_(iters_per_epoch),
      distiller_(cfg.model, cfg.mkd, cfg.train.seed, start),
      scaler_(runtime.amp == core::Amp::kFP16),
      group_(group),
      grad_sync_(group != nullptr ? std::make_unique<dist::AllReduceGradSync>(*group)
                                  : std::make_unique<dist::GradSync>()),
      lrs_(make_schedule(cfg, iters_per_epoch, runtime.world_size)) {
  if (runtime.world_size != world_size() || (group != nullptr && group->rank() != runtime.rank)) {
    throw std::logic_error("Trainer: the runtime's rank/world size differ from the process group's");
  }
  distiller_.to(runtime_.device, runtime_.amp_dtype());  // before the optimizer takes the parameters
  optimizer_ = make_training_adamw(distiller_.named_student_parameters(), cfg.optim.adamw);
  const auto acc = at::TensorOptions().dtype(at::kDouble).device(runtime_.device);
  unchecked_loss_sum_ = at::zeros({}, acc);
  epoch_loss_sum_ = at::zeros({}, acc);
  distiller_.train(true);
}

int64_t Trainer::global_batch() const { return cfg_.optim.batch_size * cfg_.optim.accum_iter * world_size(); }

std::string Trainer::resume(const std::string& path, bool accept_global_batch_change) {
  const Checkpoint ckpt = load_checkpoint(path);
  const int64_t global = global_batch();
  if (ckpt.global_batch > 0 && ckpt.global_batch != global && !accept_global_batch_change) {
    throw std::runtime_error(
        path + ": was trained with a global batch of " + std::to_string(ckpt.global_batch) + " images (" +
        std::to_string(ckpt.world_size) + " process(es)); this run's is " + std::to_string(global) + " (" +
        std::to_string(world_size()) + " x optim.batch_size " + std::to_string(cfg_.optim.batch_size) +
        " x optim.accum_iter " + std::to_string(cfg_.optim.accum_iter) +
        "): keep the product, or pass --accept-recipe-change to continue with the new global batch (the lr and the "
        "iterations per epoch follow it)");
  }
  restore(distiller_, optimizer_.get(), &scaler_, ckpt, path);
  start_epoch_ = ckpt.epoch;
  start_iteration_ = ckpt.iteration;
  if (start_iteration_ >= iters_per_epoch_) {  // fewer iterations per epoch now: that epoch is done
    ++start_epoch_;
    start_iteration_ = 0;
  }
  if (ckpt.world_size == world_size()) return "";
  return "resuming a run of " + std::to_string(ckpt.world_size) + " process(es) with " + std::to_string(world_size()) +
         " (global batch " + std::to_string(ckpt.global_batch) + " -> " + std::to_string(global) + ")";
}

double Trainer::sum_over_ranks(double value) {
  if (world_size() == 1) return value;
  const auto t0 = Clock::now();
  std::vector<at::Tensor> t = {at::full({1}, value, at::kDouble)};
  group_->all_reduce_sum(t);
  comm_s_ += since(t0);
  return t[0].item<double>();
}

int Trainer::agreed_stop_signal() {
  const int local = stop_requested();
  if (world_size() == 1) return local;
  const auto t0 = Clock::now();
  const int any = static_cast<int>(group_->max(local));
  comm_s_ += since(t0);
  return any;
}

void Trainer::broadcast_state(bool everything) {
  if (world_size() == 1) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> tensors;
  auto add = [&](const torch::nn::Module& m) {
    for (const auto& p : m.parameters()) tensors.push_back(p);
    for (const auto& b : m.buffers()) tensors.push_back(b);
  };
  add(*distiller_.student);
  if (everything) {
    add(*distiller_.teacher);
    const AdamWState st = optimizer_->state();
    for (const auto* moments : {&st.exp_avg, &st.exp_avg_sq})
      for (const auto& [name, t] : *moments) tensors.push_back(t);
    for (const auto& g : optimizer_->grads()) tensors.push_back(g);
  }
  group_->broadcast(tensors, 0);
  if (everything) distiller_.teacher->set_compute_dtype(distiller_.teacher->compute_dtype());
}

at::Tensor Trainer::train_step(const Batch& batch) {
  at::Tensor imgs = core::to_device(batch.images, runtime_.device);
  if (imgs.scalar_type() == at::kByte) imgs = data::normalize(imgs, cfg_.data.mean, cfg_.data.std);
  at::Generator gen = batch.rng;
  at::Tensor loss;
  {
    compat::AutocastGuard autocast(runtime_.device.type(), runtime_.amp_dtype());
    loss = distiller_.forward(imgs, gen, runtime_.rank, runtime_.world_size);
  }
  const bool window_ends = (batch.iteration + 1) % cfg_.optim.accum_iter == 0;
  if (window_ends) {  // the all-reduce may start as backward produces the gradients
    std::vector<at::Tensor> params;
    for (const auto& [name, p] : optimizer_->params()) params.push_back(p);
    grad_sync_->before_last_backward(params);
  }
  (scaler_.scale_loss(loss) / static_cast<double>(cfg_.optim.accum_iter)).backward();
  if (window_ends) optimizer_update(lrs_.at(static_cast<size_t>(batch.global)));
  return loss.detach();
}

void Trainer::optimizer_update(double lr) {
  const auto grads = optimizer_->grads();
  const auto t0 = Clock::now();
  grad_sync_->synchronize(grads);
  if (world_size() > 1) comm_s_ += since(t0);
  const bool finite = scaler_.unscale_and_check(grads);  // always true unless fp16
  if (finite) {
    if (cfg_.optim.clip_grad > 0.0) optimizer_->clip_grad_norm(cfg_.optim.clip_grad);
    optimizer_->step(lr);
  }
  scaler_.update(finite);
  optimizer_->zero_grad();
}

void Trainer::check_losses(int64_t stage, int64_t epoch, int64_t up_to, const std::string& last_path) {
  const double sum = sum_over_ranks(unchecked_loss_sum_.item<double>());  // a NaN anywhere stops every rank
  if (!std::isfinite(sum)) {
    throw std::runtime_error("loss is not finite at stage " + std::to_string(stage) + ", epoch " +
                             std::to_string(epoch) + ", iterations " + std::to_string(first_unchecked_) + ".." +
                             std::to_string(up_to - 1) + "; stopping (last good checkpoint: " + last_path + ")");
  }
  unchecked_loss_sum_.zero_();
  first_unchecked_ = up_to;
}

void Trainer::save(const std::string& path, int64_t epoch, int64_t iteration, const std::string& config_yaml) {
  TrainingState state;
  state.optimizer = optimizer_.get();
  state.loss_scaler = &scaler_;
  state.partial_grads = iteration % cfg_.optim.accum_iter != 0;
  state.world_size = world_size();
  state.global_batch = global_batch();
  // The ranks' partial sums become their mean: the window's final all-reduce gives the same average, and
  // the file holds what any number of processes can resume from.
  if (state.partial_grads) grad_sync_->synchronize(optimizer_->grads());
  if (rank0()) save_checkpoint(path, distiller_, epoch, iteration, config_yaml, state);
}

// What the rest of the run writes beside the files it replaces: one checkpoint-last.pt temporary (the
// student, its two AdamW moments and partial gradients, the teacher) and the stage files to come (student
// and teacher each). A full disk is then an error before training, not after hours of it.
uint64_t Trainer::bytes_to_write() const {
  uint64_t student = 0, teacher = 0;
  for (const auto& [name, t] : distiller_.named_student_parameters()) student += t.numel() * t.element_size();
  for (const auto& t : distiller_.teacher->parameters()) teacher += t.numel() * t.element_size();
  const auto stages_left = static_cast<uint64_t>(cfg_.mkd.stage_epochs.size()) - distiller_.stage();
  return 4 * student + teacher + stages_left * (student + teacher);
}

PretrainSummary Trainer::run(data::Loader& loader, RunFolder& folder, const PretrainOptions& opts) {
  dist::agree(group_, [&] {
    if (!rank0()) return;
    folder.check_free_space(bytes_to_write(), "checkpoint-last.pt written beside the old one, and the stage files");
    folder.write_config(opts.config_yaml);
  });
  broadcast_state(/*everything=*/true);
  const auto& stage_epochs = cfg_.mkd.stage_epochs;
  const int64_t images_per_iteration = cfg_.optim.batch_size * world_size();
  if (rank0() && !opts.quiet) {
    const std::string reduced_by = group_ ? " (" + group_->backend(runtime_.device) + " all-reduce)" : "";
    std::printf("dbot pretrain: %s, %lld stage(s) %s, %lld images, %lld it/epoch, peak lr %.3g, %s\n",
                cfg_.model.name.c_str(), static_cast<long long>(stage_epochs.size() - 1),
                c10::str(stage_epochs).c_str(), static_cast<long long>(loader.size()),
                static_cast<long long>(iters_per_epoch_), cfg_.optim.peak_lr(runtime_.world_size),
                (runtime_.describe() + reduced_by).c_str());
    std::fflush(stdout);
  }
  Progress progress;
  auto finish = [&](int64_t stages_done, bool finished) {
    PretrainSummary s;
    s.iterations = progress.iterations;
    s.seconds = since(progress.start);
    s.images_per_s = progress.images_per_s(images_per_iteration);
    s.stages_done = stages_done;
    s.finished = finished;
    s.stopped_by = progress.stopped_by;
    return s;
  };
  auto save_stage = [&](int64_t stage) {
    if (!rank0()) return;
    save_checkpoint(folder.stage_checkpoint(stage), distiller_, stage_epochs[static_cast<size_t>(stage)], 0,
                    opts.config_yaml);
  };
  for (int64_t epoch = start_epoch_; epoch < stage_epochs.back(); ++epoch) {
    const int64_t stage = stage_of_epoch(stage_epochs, epoch);
    while (distiller_.stage() < stage) {  // stage boundary: keep the finished student, then switch
      save_stage(distiller_.stage());
      distiller_.next_stage();
      optimizer_->fit_state_to_params();  // decoder_predp changes shape when the teacher's width does
      broadcast_state(/*everything=*/false);
      if (opts.observe) opts.observe(*this, true);
    }
    if (!run_epoch(epoch, loader, folder, opts, progress)) return finish(distiller_.stage() - 1, false);
  }
  save_stage(distiller_.stage());
  return finish(distiller_.stage(), true);
}

// Counters between two log lines: images, time, and the share of it spent waiting for the data loader.
struct Trainer::Window {
  Clock::time_point start = Clock::now();
  int64_t images = 0, bad = 0;
  double data_wait_s = 0;
  double comm_at_start = 0;  // Trainer::comm_s_ when the window began
  double seconds() const { return since(start); }
};

bool Trainer::run_epoch(int64_t epoch, data::Loader& loader, RunFolder& folder, const PretrainOptions& opts,
                        Progress& progress) {
  const int64_t ipe = iters_per_epoch_, stage = distiller_.stage();
  const int64_t first = epoch == start_epoch_ ? start_iteration_ : 0;
  const std::string last_path = folder.last_checkpoint();
  loader.start_epoch(epoch, first);
  if (first == 0) optimizer_->zero_grad();  // (a mid-epoch resume keeps the restored partial gradients)
  epoch_loss_sum_.zero_();
  first_unchecked_ = first;
  Window window;
  window.comm_at_start = comm_s_;
  for (int64_t it = first; it < ipe; ++it) {
    const int64_t global = epoch * ipe + it;
    const int signal = agreed_stop_signal();
    if ((opts.stop_after >= 0 && progress.iterations >= opts.stop_after) || signal != 0) {
      check_losses(stage, epoch, it, last_path);
      save(last_path, epoch, it, opts.config_yaml);
      progress.stopped_by = signal;
      return false;
    }
    data::LoadedBatch loaded = loader.next();
    window.data_wait_s += loaded.wait_s;
    window.bad += loaded.bad;
    progress.bad += loaded.bad;
    Batch batch;
    batch.epoch = epoch;
    batch.iteration = it;
    batch.global = global;
    batch.rng = core::derive_generator(cfg_.train.seed, core::RngPurpose::kStep, static_cast<uint64_t>(global));
    batch.images = std::move(loaded.images);
    const at::Tensor loss = train_step(batch).to(at::kDouble);
    unchecked_loss_sum_.add_(loss);
    epoch_loss_sum_.add_(loss);
    ++progress.iterations;
    if (opts.observe) opts.observe(*this, false);
    window.images += batch.images.size(0) * world_size();
    if (rank0() && !opts.quiet) {
      const int64_t left = (cfg_.mkd.stage_epochs.back() * ipe - global - 1) * cfg_.optim.batch_size * world_size();
      progress.status_line(stage, epoch, it + 1, ipe, window.images, window.seconds(), window.data_wait_s, left);
    }

    const bool log_now = cfg_.train.log_every > 0 && ((it + 1) % cfg_.train.log_every == 0 || it + 1 == ipe);
    if (log_now) {
      check_losses(stage, epoch, it + 1, last_path);
      const double mean_loss = sum_over_ranks(loss.item<double>()) / static_cast<double>(world_size());
      if (rank0()) log_step(mean_loss, stage, epoch, it, global, window, folder, opts);
      window = Window();
      window.comm_at_start = comm_s_;
    }
    if (cfg_.train.checkpoint_every > 0 && (global + 1) % cfg_.train.checkpoint_every == 0 && it + 1 < ipe) {
      check_losses(stage, epoch, it + 1, last_path);
      save(last_path, epoch, it + 1, opts.config_yaml);
    }
  }
  // The next epoch's first batches decode while this one's checkpoint is written.
  if (epoch + 1 < cfg_.mkd.stage_epochs.back()) loader.start_epoch(epoch + 1, 0);
  check_losses(stage, epoch, ipe, last_path);
  const auto count = static_cast<double>((ipe - first) * world_size());
  const double loss_sum = sum_over_ranks(epoch_loss_sum_.item<double>());
  const int64_t bad = static_cast<int64_t>(sum_over_ranks(static_cast<double>(progress.bad)));
  if (rank0()) {
    folder.metrics().write({{"type", "epoch"},
                            {"stage", stage},
                            {"epoch", epoch},
                            {"loss", count > 0 ? loss_sum / count : 0.0},
                            {"lr", lrs_[static_cast<size_t>((epoch + 1) * ipe - 1)]},
                            {"images_per_s", progress.images_per_s(cfg_.optim.batch_size * world_size())},
                            {"bad_images", bad}});
  }
  save(last_path, epoch + 1, 0, opts.config_yaml);
  return true;
}

void Trainer::log_step(double loss, int64_t stage, int64_t epoch, int64_t it, int64_t global, const Window& w,
                       RunFolder& folder, const PretrainOptions& opts) {
  const double lr = lrs_[static_cast<size_t>(global)], dt = w.seconds();
  const double ips = dt > 0 ? static_cast<double>(w.images) / dt : 0.0;
  const double wait = dt > 0 ? w.data_wait_s / dt : 0.0;
  nlohmann::json line = {{"type", "step"},
                         {"stage", stage},
                         {"epoch", epoch},
                         {"iteration", it + 1},
                         {"global_iteration", global + 1},
                         {"loss", loss},
                         {"lr", lr},
                         {"images_per_s", ips},
                         {"data_wait", wait},
                         {"bad_images", w.bad}};
  if (scaler_.enabled()) line["loss_scale"] = scaler_.scale();
  const double comm = dt > 0 ? (comm_s_ - w.comm_at_start) / dt : 0.0;
  if (world_size() > 1) line["comm"] = comm;
  folder.metrics().write(line);
  if (opts.quiet) return;
  const int64_t left = cfg_.mkd.stage_epochs.back() * iters_per_epoch_ - global - 1;
  const double eta = ips > 0 ? static_cast<double>(left * cfg_.optim.batch_size * world_size()) / ips : 0;
  Progress::clear_status_line();
  const std::string comm_part = world_size() > 1 ? " comm " + std::to_string(std::lround(100.0 * comm)) + "%" : "";
  std::printf("stage %lld epoch %lld [%lld/%lld] loss %.4f lr %.3e %.0f img/s data %.0f%%%s eta %s\n",
              static_cast<long long>(stage), static_cast<long long>(epoch), static_cast<long long>(it + 1),
              static_cast<long long>(iters_per_epoch_), loss, lr, ips, 100.0 * wait, comm_part.c_str(),
              format_duration(eta).c_str());
  std::fflush(stdout);
}

}  // namespace dbot::train
