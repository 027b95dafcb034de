// dbot: the command line. Thin: parses options, calls the library, turns every error into one line on
// stderr and a non-zero exit code.
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "dbot/compat.h"
#include "dbot/data/dataset.h"
#include "dbot/eval/evaluate.h"
#include "dbot/io/config.h"
#include "dbot/model/registry.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/engine.h"

namespace {

struct RuntimeFlags {
  int64_t threads = -1;   // -1 = from the recipe (train.threads; 0 there = all cores)
  int64_t seed = -1;      // -1 = from the recipe
  std::string precision;  // empty = from the recipe
};

void add_runtime_flags(CLI::App* cmd, RuntimeFlags& f) {
  cmd->add_option("--threads", f.threads, "intra-op CPU threads (default: train.threads, 0 there = all cores)");
  cmd->add_option("--seed", f.seed, "seed for every random draw (default: train.seed = 0)");
  cmd->add_option("--precision", f.precision,
                  "bf16 | fp32: bf16 autocast for forward passes (default: bf16 where the CPU has native bf16)")
      ->check(CLI::IsMember({"bf16", "fp32"}));
}

// Applies the flags to the config and the process; returns whether bf16 autocast is on.
bool apply_runtime(dbot::io::RunConfig& cfg, const RuntimeFlags& f) {
  if (f.threads >= 0) cfg.train.threads = f.threads;
  if (f.seed >= 0) cfg.train.seed = static_cast<uint64_t>(f.seed);
  if (!f.precision.empty()) cfg.train.precision = f.precision;
  cfg.tree["train"]["threads"] = cfg.train.threads;
  cfg.tree["train"]["seed"] = cfg.train.seed;
  cfg.tree["train"]["precision"] = cfg.train.precision;
  const int64_t threads =
      cfg.train.threads > 0 ? cfg.train.threads : static_cast<int64_t>(std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(std::max<int64_t>(1, threads)));
  if (cfg.train.precision == "auto") return dbot::compat::cpu_has_bf16();
  if (cfg.train.precision == "bf16" && !dbot::compat::cpu_has_bf16()) {
    std::fprintf(stderr,
                 "dbot: note: this CPU has no native bf16 (AVX512-BF16/AMX); bf16 autocast will be slower "
                 "than fp32 here\n");
  }
  return cfg.train.precision == "bf16";
}

std::string models_help() {
  std::string s;
  for (const auto& n : dbot::model::registered_models()) s += "  " + n + "\n";
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dbot: self-supervised ViT pretraining by multi-stage masked knowledge distillation (dBOT, "
      "arXiv 2209.03917), on LibTorch " +
      dbot::compat::torch_version()};
  app.require_subcommand(1);
  app.footer("Models (vit_<tiny|small|base|large|huge>_patch<p>_<img>):\n" + models_help() +
             "\nExample: dbot pretrain --config recipes/fmnist_vit_tiny.yaml --output runs/demo");

  RuntimeFlags pre_flags, eval_flags;
  std::string config_path, output_dir;
  std::vector<std::string> overrides;
  bool resume = false, no_eval = false;
  int64_t stop_after = -1;
  auto* pre =
      app.add_subcommand("pretrain", "multi-stage dBOT pretraining, then per-stage k-NN and linear-probe evaluation");
  pre->add_option("--config", config_path, "YAML recipe (keys and defaults: README.md, 'Recipes')")
      ->required()
      ->check(CLI::ExistingFile);
  pre->add_option("--output", output_dir,
                  "run folder: config.yaml, metrics.jsonl, checkpoint-last.pt, stage-<k>.pt, results.{md,json}")
      ->required();
  pre->add_option("--set", overrides, "override a recipe key, e.g. --set optim.blr=1e-3 (repeatable)");
  pre->add_flag("--resume", resume, "continue the run in --output from its checkpoint-last.pt");
  pre->add_flag("--no-eval", no_eval, "skip the per-stage evaluation at the end");
  pre->add_option("--stop-after", stop_after,
                  "stop after this many iterations (checkpoint written; continue with --resume)");
  add_runtime_flags(pre, pre_flags);

  std::string protocol, checkpoint, which = "model", data_root, eval_config;
  int64_t train_limit = -1, test_limit = -1;
  auto* ev = app.add_subcommand(
      "eval",
      "evaluate a frozen encoder from a checkpoint. Features: the final-norm output on the full image, CLS "
      "concatenated with the mean of the patch tokens. knn: cosine similarity, k = eval.knn_k (20), votes weighted "
      "by exp(sim / eval.knn_temperature (0.07)) (DINO's protocol). linprobe: a linear classifier trained with AdamW "
      "on cached features standardized by the training mean/std (eval.linprobe_* keys)");
  ev->add_option("protocol", protocol, "knn | linprobe")->required()->check(CLI::IsMember({"knn", "linprobe"}));
  ev->add_option("--checkpoint", checkpoint, "a dbot checkpoint (stage-<k>.pt or checkpoint-last.pt)")
      ->required()
      ->check(CLI::ExistingFile);
  ev->add_option("--which", which, "model (the student) | teacher (stage-1.pt:teacher is the stage-0 network)")
      ->check(CLI::IsMember({"model", "teacher"}));
  ev->add_option("--data", data_root, "dataset folder (default: data.root of the checkpoint's config)");
  ev->add_option("--train-limit", train_limit, "use the first N training images (0 = all)");
  ev->add_option("--test-limit", test_limit, "use the first N test images (0 = all)");
  ev->add_option("--set", overrides, "override a key of the checkpoint's config, e.g. --set eval.knn_k=10");
  add_runtime_flags(ev, eval_flags);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (pre->parsed()) {
      auto cfg = dbot::io::load_config(config_path, overrides);
      const bool bf16 = apply_runtime(cfg, pre_flags);
      dbot::train::PretrainOptions opts;
      opts.run_dir = output_dir;
      opts.resume = resume;
      opts.bf16 = bf16;
      opts.stop_after = stop_after;
      const auto summary = dbot::train::pretrain(cfg, opts);
      std::printf("pretraining: %lld iterations in %.1f s, %.1f images/s\n", static_cast<long long>(summary.iterations),
                  summary.seconds, summary.images_per_s);
      if (summary.finished && !no_eval) {
        const auto rows = dbot::eval::evaluate_run(output_dir, cfg, bf16, false);
        std::printf("\n%s\nwritten: %s/results.md, %s/results.json\n",
                    dbot::eval::results_markdown(rows, "per-stage evaluation: " + cfg.model.name).c_str(),
                    output_dir.c_str(), output_dir.c_str());
      }
    } else if (ev->parsed()) {
      const auto ckpt = dbot::train::load_checkpoint(checkpoint);
      YAML::Node tree = dbot::io::config_from_yaml(ckpt.config, checkpoint).tree;
      for (const auto& o : overrides) dbot::io::apply_override(tree, o);
      if (!data_root.empty()) tree["data"]["root"] = data_root;
      if (train_limit >= 0) tree["data"]["train_limit"] = train_limit;
      if (test_limit >= 0) tree["data"]["test_limit"] = test_limit;
      auto cfg = dbot::io::build_config(tree, checkpoint);
      const bool bf16 = apply_runtime(cfg, eval_flags);
      auto encoder = dbot::eval::load_encoder(checkpoint, which);
      const auto train_set = dbot::data::load_dataset(cfg.data, "train");
      const auto test_set = dbot::data::load_dataset(cfg.data, "test");
      const bool knn = protocol == "knn";
      const auto scores = dbot::eval::evaluate_encoder(encoder, train_set, test_set, cfg, bf16, knn, !knn);
      const double acc = knn ? scores.knn : scores.linprobe;
      std::printf("%s %s (%s): top-1 %.2f%% on %lld test images\n", protocol.c_str(), checkpoint.c_str(), which.c_str(),
                  100.0 * acc, static_cast<long long>(test_set.size()));
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
