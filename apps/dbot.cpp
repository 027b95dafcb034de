// dbot: the command line. Thin: each subcommand (apps/cli.h) parses nothing itself (CLI11 does), builds a
// Recipe and a Runtime, calls the library; main turns every error into one line on stderr and exit code 1.
// Here: main, the runtime flags, pretrain and the benchmarks; eval/extract/analyze/export: weights_commands.cpp.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>

#include "cli.h"
#include "dbot/compat.h"
#include "dbot/data/data_bench.h"
#include "dbot/dist/allreduce_bench.h"
#include "dbot/dist/launch_env.h"
#include "dbot/dist/process_group.h"
#include "dbot/dist/spawn.h"
#include "dbot/eval/evaluate.h"
#include "dbot/model/registry.h"
#include "dbot/train/interrupt.h"
#include "dbot/train/step_bench.h"
#include "dbot/train/trainer.h"
#include "dbot/version.h"

namespace dbot::cli {

void add_runtime_flags(CLI::App* cmd, RuntimeFlags& f) {
  cmd->add_option("--device", f.device,
                  "auto | cpu | cuda | cuda:N (default: train.device = auto: the first GPU when this build and "
                  "machine have one, else the CPU)");
  cmd->add_option("--precision", f.precision,
                  "auto | bf16 | fp16 | fp32: autocast dtype of the forward passes; fp16 adds dynamic loss scaling "
                  "(default: train.precision = auto: bf16 on GPUs that have it and on CPUs with native bf16, else "
                  "fp32)")
      ->check(CLI::IsMember({"auto", "bf16", "fp16", "fp32"}));
  cmd->add_option("--threads", f.threads, "intra-op CPU threads (default: train.threads, 0 there = all cores)");
  cmd->add_option("--seed", f.seed, "seed for every random draw (default: train.seed = 0)");
}

core::Runtime apply_runtime(Recipe& r, const RuntimeFlags& f, const core::Placement& placement) {
  using dbot::recipe::set_key;
  if (!f.device.empty()) set_key(r.tree, "train.device", r.runtime.device = f.device);
  if (!f.precision.empty()) set_key(r.tree, "train.precision", r.runtime.precision = f.precision);
  if (f.threads >= 0) set_key(r.tree, "train.threads", r.runtime.threads = f.threads);
  if (f.seed >= 0) {
    r.train.seed = r.eval.seed = static_cast<uint64_t>(f.seed);
    set_key(r.tree, "train.seed", f.seed);
  }
  const auto rt = dbot::core::resolve_runtime(r.runtime, placement);
  if (rt.rank == 0 && rt.amp == dbot::core::Amp::kBF16 && rt.device.is_cpu() && !dbot::compat::cpu_has_bf16()) {
    std::fprintf(stderr,
                 "dbot: note: this CPU has no native bf16 (AVX512-BF16/AMX); bf16 autocast will be slower than "
                 "fp32 here\n");
  }
  return rt;
}

std::string resolve_recorded_config(const std::string& yaml, const std::string& path) {
  return dbot::recipe::config_from_yaml(yaml, path).to_yaml();
}

void add_run_flags(CLI::App* cmd, RunFlags& f, const std::string& output_help) {
  cmd->add_option("--output", f.output, output_help)->required();
  cmd->add_flag("--resume", f.resume, "continue the run in --output from its checkpoint-last.pt");
  cmd->add_flag("--overwrite", f.overwrite,
                "delete the run in --output (config, metrics, checkpoints, results) and start again")
      ->excludes("--resume");
  cmd->add_flag("--accept-recipe-change", f.accept_recipe_change,
                "with --resume: continue although the recipe differs from the folder's config.yaml (recorded anew)")
      ->needs("--resume");
  cmd->add_option("--stop-after", f.stop_after,
                  "stop after this many iterations (checkpoint written; continue with --resume)");
}

train::RunRequest run_request(const RunFlags& f, const Recipe& r) {
  train::RunRequest req;
  req.run_dir = f.output;
  req.config_yaml = r.to_yaml();
  req.resume = f.resume;
  req.overwrite = f.overwrite;
  req.accept_recipe_change = f.accept_recipe_change;
  req.stop_after = f.stop_after;
  req.resolve_recorded_config = resolve_recorded_config;
  return req;
}

namespace {

struct PretrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  RunFlags run;
  bool no_eval = false;
  int nproc = 0;
  double dist_timeout = 600;
  RuntimeFlags runtime;
  std::vector<std::string> child_args;  // this command line without --nproc (what --nproc's processes run)
};

// The command line after the program name, without --nproc and its value.
std::vector<std::string> without_nproc(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--nproc") {
      ++i;
    } else if (arg.rfind("--nproc=", 0) != 0) {
      out.push_back(arg);
    }
  }
  return out;
}

// --nproc N: this command line (without --nproc) as N local processes; an error under a launcher.
int run_local_job(int nproc, const dbot::dist::LaunchEnv& env, const std::vector<std::string>& args) {
  if (env.launcher != "none") {
    throw std::runtime_error("--nproc starts its own processes: leave it out under " + env.launcher + " (" +
                             env.describe() + ")");
  }
  return dbot::dist::run_local_job(nproc, args, std::chrono::seconds(30));
}

// The job's process group (--dist-timeout seconds for every collective; NCCL beside Gloo when `device` is a
// GPU), or null for one process.
std::unique_ptr<dbot::dist::Group> join_group(const dbot::dist::LaunchEnv& env, double timeout_s, c10::Device device) {
  if (!env.distributed()) return nullptr;
  return std::make_unique<dbot::dist::Group>(env, std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)),
                                             device);
}

int run_pretrain(const PretrainArgs& a) {
  const auto env = dbot::dist::launch_env();
  if (a.nproc > 0) {
    dbot::recipe::load_config(a.config, a.overrides);  // a bad recipe is one error here, not one per process
    return run_local_job(a.nproc, env, a.child_args);
  }
  const dbot::train::StopOnSignal stop_on_signal;  // SIGINT/SIGTERM: stop after this step, with a checkpoint
  auto r = dbot::recipe::load_config(a.config, a.overrides);
  auto rt = apply_runtime(r, a.runtime, {env.rank, env.local_rank, env.world_size, env.local_world_size});
  auto group = join_group(env, a.dist_timeout, rt.device);
  dbot::train::PretrainOptions opts;
  static_cast<dbot::train::RunRequest&>(opts) = run_request(a.run, r);
  const auto summary = dbot::train::pretrain(r, rt, opts, group.get());
  const int sig = summary.stopped_by ? summary.stopped_by : dbot::train::stop_requested();
  if (rt.rank != 0) return sig ? 128 + sig : 0;  // rank 0 reports and evaluates
  std::printf("pretraining: %lld iterations in %.1f s, %.1f images/s\n", static_cast<long long>(summary.iterations),
              summary.seconds, summary.images_per_s);
  if (sig != 0) {
    std::fflush(stdout);
    std::fprintf(stderr, "dbot pretrain: stopped by %s; %s/checkpoint-last.pt is written: continue with --resume\n",
                 dbot::train::signal_name(sig), a.run.output.c_str());
    return 128 + sig;  // as a shell reports a process ended by the signal
  }
  if (summary.finished && !a.no_eval) {
    group.reset();  // the other ranks are done: evaluation has this machine's CPUs
    if (env.distributed() && rt.device.is_cpu() && r.runtime.threads == 0) {
      rt.threads = dbot::core::available_cpus();
      at::set_num_threads(rt.threads);
    }
    const auto rows = dbot::eval::evaluate_run(a.run.output, r.model, r.data, r.eval, rt, false);
    if (rows.empty()) return 0;  // no labeled evaluation data (evaluate_run said so)
    std::printf("\n%s\nwritten: %s/results.md, %s/results.json\n",
                dbot::eval::results_markdown(rows, "per-stage evaluation: " + r.model.name).c_str(),
                a.run.output.c_str(), a.run.output.c_str());
  }
  return 0;
}

Command add_pretrain(CLI::App& app, int argc, char** argv) {
  auto a = std::make_shared<PretrainArgs>();
  a->child_args = without_nproc(argc, argv);
  auto* pre =
      app.add_subcommand("pretrain", "multi-stage dBOT pretraining, then per-stage k-NN and linear-probe evaluation");
  pre->add_option("--config", a->config, "YAML recipe (keys and defaults: README.md, 'Recipes')")
      ->required()
      ->check(CLI::ExistingFile);
  add_run_flags(pre, a->run,
                "run folder: config.yaml, metrics.jsonl, checkpoint-last.pt, stage-<k>.pt, results.{md,json}");
  pre->add_option("--set", a->overrides, "override a recipe key, e.g. --set optim.blr=1e-3 (repeatable)");
  pre->add_flag("--no-eval", a->no_eval, "skip the per-stage evaluation at the end");
  pre->add_option("--nproc", a->nproc,
                  "start this many data-parallel processes on this machine (one per GPU, else CPU processes "
                  "sharing the cores), as torchrun --nproc-per-node would; without it, torchrun, srun or mpirun "
                  "may start dbot (their variables are read: README.md, 'Many processes')")
      ->check(CLI::Range(1, 1024));
  pre->add_option("--dist-timeout", a->dist_timeout,
                  "seconds a process waits in a collective (or for the others to start) before failing with an "
                  "error (default 600)")
      ->check(CLI::PositiveNumber);
  add_runtime_flags(pre, a->runtime);
  return {pre, [a] { return run_pretrain(*a); }};
}

struct BenchArgs {
  std::string config, model;
  std::vector<std::string> overrides;
  int64_t batch = 0, steps = 20, warmup = 5;
  std::string profile;
  RuntimeFlags runtime;
};

int run_bench_step(const BenchArgs& a) {
  std::vector<std::string> overrides;
  if (!a.model.empty()) {  // the registry model on 3-channel images, as timm's benchmark
    overrides = {"model.name=" + a.model,
                 "model.embed_dim=0",
                 "model.depth=0",
                 "model.num_heads=0",
                 "model.in_chans=3",
                 "data.mean=[0.485, 0.456, 0.406]",
                 "data.std=[0.229, 0.224, 0.225]"};
  }
  if (a.batch > 0) overrides.push_back("optim.batch_size=" + std::to_string(a.batch));
  overrides.insert(overrides.end(), a.overrides.begin(), a.overrides.end());
  auto r = dbot::recipe::load_config(a.config, overrides);
  const auto rt = apply_runtime(r, a.runtime);
  dbot::train::StepBenchOptions opts;
  opts.steps = a.steps;
  opts.warmup = a.warmup;
  opts.profile = a.profile;
  std::printf("%s", dbot::train::format_step_bench(dbot::train::bench_step(r, rt, opts)).c_str());
  return 0;
}

Command add_bench_step(CLI::App& bench) {
  auto a = std::make_shared<BenchArgs>();
  auto* bstep = bench.add_subcommand(
      "step",
      "time the real training step (Trainer::train_step: teacher forward, student forward + backward, AdamW) on "
      "synthetic images after warm-up steps; prints timm's benchmark columns, FLOPs per image, TFLOP/s, MFU "
      "against a measured matmul peak, peak memory, and the step's breakdown");
  bstep->add_option("--config", a->config, "YAML recipe (default: the built-in defaults)")->check(CLI::ExistingFile);
  bstep->add_option("--set", a->overrides, "override a recipe key (repeatable)");
  bstep->add_option("--model", a->model,
                    "a registry model on 3-channel images, e.g. vit_base_patch16_224 (sets model.name, in_chans 3, "
                    "ImageNet mean/std)");
  bstep->add_option("--batch", a->batch, "per-step batch (optim.batch_size)");
  bstep->add_option("--steps", a->steps, "timed steps (default 20); the GEMM floor is timed as many times");
  bstep->add_option("--warmup", a->warmup, "untimed steps first (default 5)");
  bstep->add_option("--profile", a->profile,
                    "also run --steps steps under LibTorch's profiler and write their trace to this file "
                    "(chrome://tracing JSON; bench/profile_summary.py tabulates it per operator)");
  add_runtime_flags(bstep, a->runtime);
  return {bstep, [a] { return run_bench_step(*a); }};
}

struct BenchDataArgs {
  std::string path, dct_scale = "on";
  int64_t size = 224, workers = 0, images = 1000, batch = 64;
};

int run_bench_data(const BenchDataArgs& a) {
  dbot::data::DataBenchOptions opts;
  opts.path = a.path;
  opts.size = a.size;
  opts.images = a.images;
  opts.batch = a.batch;
  opts.dct_scale = a.dct_scale == "on";
  const int64_t max_workers = a.workers > 0 ? a.workers : std::max<int64_t>(1, std::thread::hardware_concurrency());
  for (int64_t w = 1; w <= max_workers; ++w) opts.workers.push_back(w);
  std::printf("%s", dbot::data::format_data_bench(dbot::data::bench_data(opts)).c_str());
  return 0;
}

Command add_bench_data(CLI::App& bench) {
  auto a = std::make_shared<BenchDataArgs>();
  auto* bdata = bench.add_subcommand(
      "data",
      "time the data loader alone: decode + training transform (RandomResizedCrop to --size with data.crop_scale's "
      "default [0.2, 1], bicubic, flip) of the JPEGs under DIR/train into uint8 batches, for 1, 2, ... --workers "
      "worker threads; prints images/s in total and per worker (bench/compare_data.sh runs torchvision beside it)");
  bdata
      ->add_option("--path", a->path, "an ImageFolder root (DIR/train/<class>/<image>; bench/make_photos.py makes one)")
      ->required()
      ->check(CLI::ExistingDirectory);
  bdata->add_option("--size", a->size, "output side (default 224)");
  bdata->add_option("--workers", a->workers, "the largest worker count: rows for 1 .. N (default: the core count)");
  bdata->add_option("--images", a->images,
                    "timed images per row (default 1000; rounded up to whole rounds of one batch per worker)");
  bdata->add_option("--batch", a->batch, "batch size (default 64)");
  bdata
      ->add_option("--dct-scale", a->dct_scale,
                   "on | off: data.dct_scale, JPEGs decoded at 1/2, 1/4, 1/8 scale when the crop is that many times "
                   "the output, or always at full size (default on)")
      ->check(CLI::IsMember({"on", "off"}));
  return {bdata, [a] { return run_bench_data(*a); }};
}

struct BenchAllreduceArgs {
  std::vector<double> mb = {1, 16, 64, 448};
  int iters = 10, warmup = 2, nproc = 0;
  double dist_timeout = 600;
  std::string device = "cpu";
  std::vector<std::string> child_args;
};

int run_bench_allreduce(const BenchAllreduceArgs& a) {
  const auto env = dbot::dist::launch_env();
  if (a.nproc > 0) return run_local_job(a.nproc, env, a.child_args);
  dbot::core::RuntimeConfig rc;
  rc.device = a.device;
  const auto rt = dbot::core::resolve_runtime(rc, {env.rank, env.local_rank, env.world_size, env.local_world_size});
  std::unique_ptr<dbot::dist::Group> group;
  if (env.distributed()) {
    group = join_group(env, a.dist_timeout, rt.device);
  } else if (rt.device.is_cuda()) {  // one process on one GPU: NCCL with world size 1, the same code path
    group = dbot::dist::Group::in_process(
        "bench-allreduce", 0, 1, std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000)), rt.device);
  } else {
    throw std::runtime_error("bench allreduce on the CPU needs several processes: --nproc N, or a launcher");
  }
  std::vector<int64_t> sizes;
  for (const double mb : a.mb) sizes.push_back(static_cast<int64_t>(mb * 1e6));
  const auto rows = dbot::dist::bench_allreduce(*group, sizes, a.iters, a.warmup, rt.device);
  if (env.rank == 0) {
    std::printf(
        "%s",
        dbot::dist::format_allreduce_bench(rows, group->world_size(), group->backend(rt.device), rt.device).c_str());
  }
  return 0;
}

Command add_bench_allreduce(CLI::App& bench, int argc, char** argv) {
  auto a = std::make_shared<BenchAllreduceArgs>();
  a->child_args = without_nproc(argc, argv);
  auto* cmd = bench.add_subcommand(
      "allreduce",
      "time the gradient all-reduce (fp32 buffers; Gloo on CPU, NCCL on GPUs) across processes started by --nproc "
      "N or a launcher (torchrun --no-python, srun, mpirun), or on one GPU alone; prints ms per call and "
      "algbw/busbw as nccl-tests");
  cmd->add_option("--device", a->device,
                  "cpu | cuda | cuda:N: where the buffers live (default cpu; cuda: each process its local rank's GPU)");
  cmd->add_option("--mb", a->mb, "buffer sizes in MB (default 1 16 64 448: 448 MB = ViT-B + decoder fp32 gradients)");
  cmd->add_option("--iters", a->iters, "timed calls per size (default 10; the median is reported)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--warmup", a->warmup, "untimed calls first (default 2)");
  cmd->add_option("--nproc", a->nproc, "start this many local processes")->check(CLI::Range(2, 1024));
  cmd->add_option("--dist-timeout", a->dist_timeout, "seconds before a collective fails (default 600)");
  return {cmd, [a] { return run_bench_allreduce(*a); }};
}

std::string models_help() {
  std::string s;
  for (const auto& n : dbot::model::registered_models()) s += "  " + n + "\n";
  return s;
}

}  // namespace

}  // namespace dbot::cli

int main(int argc, char** argv) {
  using namespace dbot::cli;
  CLI::App app{
      "dbot: self-supervised ViT pretraining by multi-stage masked knowledge distillation (dBOT, "
      "arXiv 2209.03917), on LibTorch " +
      dbot::compat::torch_version() + (dbot::compat::built_with_cuda() ? " with CUDA" : " (CPU only)")};
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       std::string("dbot ") + dbot::kVersion + ", LibTorch " + dbot::compat::torch_version());
  app.footer("Models (vit_<tiny|small|base|large|huge>_patch<p>_<img>):\n" + models_help() +
             "\nExample: dbot pretrain --config recipes/fmnist_vit_tiny.yaml --output runs/demo");
  std::vector<Command> commands = {add_pretrain(app, argc, argv),
                                   add_eval(app),
                                   add_extract(app),
                                   add_analyze(app),
                                   add_export(app),
                                   add_finetune(app)};
  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  commands.push_back(add_bench_step(*bench));
  commands.push_back(add_bench_data(*bench));
  commands.push_back(add_bench_allreduce(*bench, argc, argv));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& c : commands) {
      if (c.app->parsed()) return c.run();
    }
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "dbot: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dbot: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
