// dbot: the command line. Thin: one function per subcommand parses nothing itself (CLI11 does), builds a
// Recipe and a Runtime, calls the library, and turns every error into one line on stderr and exit code 1.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <thread>

#include "dbot/compat.h"
#include "dbot/core/runtime.h"
#include "dbot/data/data_bench.h"
#include "dbot/data/dataset.h"
#include "dbot/eval/evaluate.h"
#include "dbot/eval/extract.h"
#include "dbot/io/safetensors.h"
#include "dbot/model/registry.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/pretrained.h"
#include "dbot/train/step_bench.h"
#include "dbot/train/trainer.h"
#include "dbot/train/weights.h"
#include "dbot/version.h"

namespace {

using dbot::recipe::Recipe;

// Flags that mirror recipe keys (train.device, train.precision, train.threads, train.seed).
struct RuntimeFlags {
  std::string device, precision;  // empty = from the recipe
  int64_t threads = -1;           // -1 = from the recipe
  int64_t seed = -1;              // -1 = from the recipe
};

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

// Applies the flags to the recipe (so config.yaml records them) and resolves the Runtime.
dbot::core::Runtime apply_runtime(Recipe& r, const RuntimeFlags& f) {
  using dbot::recipe::set_key;
  if (!f.device.empty()) set_key(r.tree, "train.device", r.runtime.device = f.device);
  if (!f.precision.empty()) set_key(r.tree, "train.precision", r.runtime.precision = f.precision);
  if (f.threads >= 0) set_key(r.tree, "train.threads", r.runtime.threads = f.threads);
  if (f.seed >= 0) {
    r.train.seed = r.eval.seed = static_cast<uint64_t>(f.seed);
    set_key(r.tree, "train.seed", f.seed);
  }
  const auto rt = dbot::core::resolve_runtime(r.runtime);
  if (rt.amp == dbot::core::Amp::kBF16 && rt.device.is_cpu() && !dbot::compat::cpu_has_bf16()) {
    std::fprintf(stderr,
                 "dbot: note: this CPU has no native bf16 (AVX512-BF16/AMX); bf16 autocast will be slower than "
                 "fp32 here\n");
  }
  return rt;
}

struct PretrainArgs {
  std::string config, output;
  std::vector<std::string> overrides;
  bool resume = false, no_eval = false;
  int64_t stop_after = -1;
  RuntimeFlags runtime;
};

int run_pretrain(const PretrainArgs& a) {
  auto r = dbot::recipe::load_config(a.config, a.overrides);
  const auto rt = apply_runtime(r, a.runtime);
  dbot::train::PretrainOptions opts;
  opts.run_dir = a.output;
  opts.config_yaml = r.to_yaml();
  opts.resume = a.resume;
  opts.stop_after = a.stop_after;
  const auto summary = dbot::train::pretrain(r, rt, opts);
  std::printf("pretraining: %lld iterations in %.1f s, %.1f images/s\n", static_cast<long long>(summary.iterations),
              summary.seconds, summary.images_per_s);
  if (summary.finished && !a.no_eval) {
    const auto rows = dbot::eval::evaluate_run(a.output, r.model, r.data, r.eval, rt, false);
    if (rows.empty()) return 0;  // no labeled evaluation data (evaluate_run said so)
    std::printf("\n%s\nwritten: %s/results.md, %s/results.json\n",
                dbot::eval::results_markdown(rows, "per-stage evaluation: " + r.model.name).c_str(), a.output.c_str(),
                a.output.c_str());
  }
  return 0;
}

// What evaluating or extracting from a weights file needs besides the runtime.
struct WeightsArgs {
  std::string checkpoint, which = "model", data_root;
  std::vector<std::string> overrides;
  int64_t train_limit = -1, test_limit = -1;
  RuntimeFlags runtime;
};

void add_weights_flags(CLI::App* cmd, WeightsArgs& a) {
  cmd->add_option("--checkpoint", a.checkpoint,
                  "a dbot checkpoint (stage-<k>.pt, checkpoint-last.pt), a .safetensors file (dbot export, timm or "
                  "Hugging Face names) or a released torch.save file (timm, MAE, DeiT, DINO, dBOT)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--which", a.which, "model (the student) | teacher (stage-1.pt:teacher is the stage-0 network)")
      ->check(CLI::IsMember({"model", "teacher"}));
  cmd->add_option("--data", a.data_root, "data path (default: data.path of the file's recipe)");
  cmd->add_option("--train-limit", a.train_limit, "use the first N training images (0 = all)");
  cmd->add_option("--test-limit", a.test_limit, "use the first N test images (0 = all)");
  cmd->add_option("--set", a.overrides, "override a key of the file's recipe, e.g. --set eval.knn_k=10");
  add_runtime_flags(cmd, a.runtime);
}

// The recipe a weights file was trained with (a checkpoint's config, an exported file's dbot.recipe
// metadata, else the defaults), with the command's overrides; and its encoder.
struct LoadedWeights {
  Recipe recipe;
  dbot::core::Runtime runtime;
  dbot::model::VisionTransformer encoder{nullptr};
};

LoadedWeights load_weights(const WeightsArgs& a) {
  dbot::train::PretrainedOptions opts;
  opts.which = a.which;
  auto weights = dbot::train::read_pretrained(a.checkpoint, opts);
  YAML::Node tree = dbot::recipe::config_from_yaml(weights.recipe, a.checkpoint).tree;
  for (const auto& o : a.overrides) dbot::recipe::apply_override(tree, o);
  if (!a.data_root.empty()) tree["data"]["path"] = a.data_root;
  if (a.train_limit >= 0) tree["data"]["train_limit"] = a.train_limit;
  if (a.test_limit >= 0) tree["data"]["test_limit"] = a.test_limit;
  LoadedWeights w{dbot::recipe::build_config(tree, a.checkpoint), {}, nullptr};
  w.runtime = apply_runtime(w.recipe, a.runtime);
  auto& cfg = weights.encoder.cfg;
  if (weights.arch_from_shapes && !weights.recipe.empty()) cfg.num_heads = w.recipe.model.num_heads;  // format 2
  if (static_cast<int64_t>(w.recipe.data.mean.size()) != cfg.in_chans) {
    throw std::runtime_error(a.checkpoint + ": the encoder takes " + std::to_string(cfg.in_chans) +
                             " channel(s), data.mean/data.std have " + std::to_string(w.recipe.data.mean.size()) +
                             ": set them with --set data.mean=[...] --set data.std=[...]");
  }
  w.encoder = dbot::model::VisionTransformer(cfg);
  dbot::model::load_state_dict(*w.encoder, weights.encoder.state, a.checkpoint);
  w.encoder->eval();
  return w;
}

struct EvalArgs {
  std::string protocol;
  WeightsArgs weights;
};

int run_eval(const EvalArgs& a) {
  auto w = load_weights(a.weights);
  const auto& r = w.recipe;
  const auto eval_data = dbot::eval::open_eval_data(r.data);
  if (!eval_data) {
    throw std::runtime_error("data.format " + r.data.format +
                             " has no labels: set data.eval_path to an ImageFolder "
                             "root (train/ and val/) to evaluate");
  }
  const bool knn = a.protocol == "knn";
  const auto scores = dbot::eval::evaluate_encoder(w.encoder, *eval_data, r.data, r.eval, w.runtime, knn, !knn);
  std::printf("%s %s (%s): top-1 %.2f%% on %lld test images\n", a.protocol.c_str(), a.weights.checkpoint.c_str(),
              a.weights.which.c_str(), 100.0 * (knn ? scores.knn : scores.linprobe),
              static_cast<long long>(eval_data->val->size()));
  return 0;
}

struct ExtractArgs {
  WeightsArgs weights;
  std::string out, pool = "cls+mean", split = "train";
};

int run_extract(const ExtractArgs& a) {
  auto w = load_weights(a.weights);
  const auto& r = w.recipe;
  auto source = dbot::data::open_source(r.data, a.split == "val" ? "eval_val" : "train");
  if (!source) throw std::runtime_error("data.format " + r.data.format + " has no val split");
  const auto res = dbot::eval::extract_to_file(
      w.encoder, source, r.data, r.eval.batch_size, w.runtime, dbot::eval::parse_pool(a.pool), a.out,
      {{"dbot.weights", a.weights.checkpoint}, {"dbot.which", a.weights.which}});
  std::printf("extracted %lld x %lld features (%s) of %s%s\nwritten: %s\n", static_cast<long long>(res.images),
              static_cast<long long>(res.dim), a.pool.c_str(), source->describe().c_str(),
              res.labeled ? " with labels" : "", a.out.c_str());
  return 0;
}

struct ExportArgs {
  std::string checkpoint, out;
  dbot::train::ExportOptions opts;
};

int run_export(const ExportArgs& a) {
  const auto ckpt = dbot::train::load_checkpoint(a.checkpoint);
  const auto r = dbot::recipe::config_from_yaml(ckpt.config, a.checkpoint);
  const auto res = dbot::train::export_weights(ckpt, a.checkpoint, r.model, r.mkd.decoder, a.opts, a.out);
  std::printf(
      "exported %s of %s (stage %lld): %zu tensors, %.2fM parameters, encoder %lld wide x %lld blocks, "
      "%s layout\n",
      a.opts.part.c_str(), a.checkpoint.c_str(), static_cast<long long>(ckpt.stage), res.tensors, res.parameters / 1e6,
      static_cast<long long>(res.cfg.embed_dim), static_cast<long long>(res.cfg.depth), a.opts.layout.c_str());
  for (const auto& f : res.files) std::printf("written: %s\n", f.c_str());
  return 0;
}

struct BenchArgs {
  std::string config, model;
  std::vector<std::string> overrides;
  int64_t batch = 0, steps = 20, warmup = 5;
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
  std::printf("%s", dbot::train::format_step_bench(dbot::train::bench_step(r, rt, opts)).c_str());
  return 0;
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
      dbot::compat::torch_version() + (dbot::compat::built_with_cuda() ? " with CUDA" : " (CPU only)")};
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       std::string("dbot ") + dbot::kVersion + ", LibTorch " + dbot::compat::torch_version());
  app.footer("Models (vit_<tiny|small|base|large|huge>_patch<p>_<img>):\n" + models_help() +
             "\nExample: dbot pretrain --config recipes/fmnist_vit_tiny.yaml --output runs/demo");

  PretrainArgs pa;
  auto* pre =
      app.add_subcommand("pretrain", "multi-stage dBOT pretraining, then per-stage k-NN and linear-probe evaluation");
  pre->add_option("--config", pa.config, "YAML recipe (keys and defaults: README.md, 'Recipes')")
      ->required()
      ->check(CLI::ExistingFile);
  pre->add_option("--output", pa.output,
                  "run folder: config.yaml, metrics.jsonl, checkpoint-last.pt, stage-<k>.pt, results.{md,json}")
      ->required();
  pre->add_option("--set", pa.overrides, "override a recipe key, e.g. --set optim.blr=1e-3 (repeatable)");
  pre->add_flag("--resume", pa.resume, "continue the run in --output from its checkpoint-last.pt");
  pre->add_flag("--no-eval", pa.no_eval, "skip the per-stage evaluation at the end");
  pre->add_option("--stop-after", pa.stop_after,
                  "stop after this many iterations (checkpoint written; continue with --resume)");
  add_runtime_flags(pre, pa.runtime);

  EvalArgs ea;
  auto* ev = app.add_subcommand(
      "eval",
      "evaluate a frozen encoder from a checkpoint. Features: the final-norm output on the full image, CLS "
      "concatenated with the mean of the patch tokens. knn: cosine similarity, k = eval.knn_k (20), votes weighted "
      "by exp(sim / eval.knn_temperature (0.07)) (DINO's protocol). linprobe: a linear classifier trained with AdamW "
      "on cached features standardized by the training mean/std (eval.linprobe_* keys)");
  ev->add_option("protocol", ea.protocol, "knn | linprobe")->required()->check(CLI::IsMember({"knn", "linprobe"}));
  add_weights_flags(ev, ea.weights);

  ExtractArgs xta;
  auto* ext = app.add_subcommand(
      "extract",
      "an encoder's features for every image of a split, on the eval transform (the final-norm output pooled as "
      "--pool), written as safetensors: features F32 [N, F], labels I64 [N] when labeled, names U8 (each name followed "
      "by a newline)");
  add_weights_flags(ext, xta.weights);
  ext->add_option("--out", xta.out, "the .safetensors file to write")->required();
  ext->add_option("--pool", xta.pool, "cls | mean (of the patch tokens) | cls+mean (default, as evaluation)")
      ->check(CLI::IsMember({"cls", "mean", "cls+mean"}));
  ext->add_option("--split", xta.split, "train (the pretraining images, default) | val (the held-out labeled set)")
      ->check(CLI::IsMember({"train", "val"}));

  ExportArgs xa;
  auto* exp = app.add_subcommand(
      "export",
      "write a checkpoint's network as safetensors (what timm, Hugging Face and model hubs load). timm layout: one "
      "file with timm's VisionTransformer names (load with strict=True into timm.create_model(..., num_classes=0)); "
      "hf layout: a folder with model.safetensors + config.json for transformers.ViTModel.from_pretrained(DIR, "
      "add_pooling_layer=False). The metadata records the architecture, dbot version, stage and recipe");
  exp->add_option("--checkpoint", xa.checkpoint, "a dbot checkpoint (stage-<k>.pt or checkpoint-last.pt)")
      ->required()
      ->check(CLI::ExistingFile);
  exp->add_option("--out", xa.out, "the .safetensors file (timm layout) or the folder (hf layout) to write")
      ->required();
  exp->add_option("--part", xa.opts.part,
                  "encoder (the student's encoder, default) | student (encoder + decoder, dbot names) | teacher")
      ->check(CLI::IsMember({"encoder", "student", "teacher"}));
  exp->add_option("--layout", xa.opts.layout, "timm (default) | hf (Hugging Face ViTModel)")
      ->check(CLI::IsMember({"timm", "hf"}));

  BenchArgs ba;
  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  auto* bstep = bench->add_subcommand(
      "step",
      "time the real training step (Trainer::train_step: teacher forward, student forward + backward, AdamW) on "
      "synthetic images after warm-up steps; prints timm's benchmark columns, FLOPs per image, TFLOP/s, MFU "
      "against a measured matmul peak, peak memory, and the step's breakdown");
  bstep->add_option("--config", ba.config, "YAML recipe (default: the built-in defaults)")->check(CLI::ExistingFile);
  bstep->add_option("--set", ba.overrides, "override a recipe key (repeatable)");
  bstep->add_option("--model", ba.model,
                    "a registry model on 3-channel images, e.g. vit_base_patch16_224 (sets model.name, in_chans 3, "
                    "ImageNet mean/std)");
  bstep->add_option("--batch", ba.batch, "per-step batch (optim.batch_size)");
  bstep->add_option("--steps", ba.steps, "timed steps (default 20)");
  bstep->add_option("--warmup", ba.warmup, "untimed steps first (default 5)");
  add_runtime_flags(bstep, ba.runtime);

  BenchDataArgs bda;
  auto* bdata = bench->add_subcommand(
      "data",
      "time the data loader alone: decode + training transform (RandomResizedCrop to --size with data.crop_scale's "
      "default [0.2, 1], bicubic, flip) of the JPEGs under DIR/train into uint8 batches, for 1, 2, ... --workers "
      "worker threads; prints images/s in total and per worker (bench/compare_data.sh runs torchvision beside it)");
  bdata
      ->add_option("--path", bda.path,
                   "an ImageFolder root (DIR/train/<class>/<image>; bench/make_photos.py makes one)")
      ->required()
      ->check(CLI::ExistingDirectory);
  bdata->add_option("--size", bda.size, "output side (default 224)");
  bdata->add_option("--workers", bda.workers, "the largest worker count: rows for 1 .. N (default: the core count)");
  bdata->add_option("--images", bda.images,
                    "timed images per row (default 1000; rounded up to whole rounds of one batch per worker)");
  bdata->add_option("--batch", bda.batch, "batch size (default 64)");
  bdata
      ->add_option("--dct-scale", bda.dct_scale,
                   "on | off: data.dct_scale, JPEGs decoded at 1/2, 1/4, 1/8 scale when the crop is that many times "
                   "the output, or always at full size (default on)")
      ->check(CLI::IsMember({"on", "off"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (pre->parsed()) return run_pretrain(pa);
    if (ev->parsed()) return run_eval(ea);
    if (exp->parsed()) return run_export(xa);
    if (ext->parsed()) return run_extract(xta);
    if (bstep->parsed()) return run_bench_step(ba);
    if (bdata->parsed()) return run_bench_data(bda);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "dbot: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dbot: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
