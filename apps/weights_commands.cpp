// dbot eval, extract, analyze and export: the subcommands that read weight files (a dbot checkpoint, an exported
// or released safetensors file, a released torch.save file; train/pretrained.h), with the recipe the file
// carries and the command's overrides.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <tuple>

#include "cli.h"
#include "dbot/data/dataset.h"
#include "dbot/eval/analyze.h"
#include "dbot/eval/evaluate.h"
#include "dbot/eval/extract.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/pretrained.h"
#include "dbot/train/weights.h"

namespace dbot::cli {

namespace {

// What evaluating or extracting from a weights file needs besides the runtime.
struct WeightsArgs {
  std::string checkpoint, which = "model", data_root;
  std::vector<std::string> overrides;
  int64_t train_limit = -1, test_limit = -1;
  RuntimeFlags runtime;
};

constexpr const char* kWeightFiles =
    "a dbot checkpoint (stage-<k>.pt, checkpoint-last.pt), a .safetensors file (dbot export, timm or Hugging Face "
    "names) or a released torch.save file (timm, MAE, DeiT, DINO, dBOT)";

// The flags every weights command shares besides the file: the data, the recipe overrides, the runtime.
void add_data_flags(CLI::App* cmd, WeightsArgs& a) {
  cmd->add_option("--data", a.data_root, "data path (default: data.path of the file's recipe)");
  cmd->add_option("--train-limit", a.train_limit, "use the first N training images (0 = all)");
  cmd->add_option("--test-limit", a.test_limit, "use the first N test images (0 = all)");
  cmd->add_option("--set", a.overrides, "override a key of the file's recipe, e.g. --set eval.knn_k=10");
  add_runtime_flags(cmd, a.runtime);
}

void add_weights_flags(CLI::App* cmd, WeightsArgs& a) {
  cmd->add_option("--checkpoint", a.checkpoint, kWeightFiles)->required()->check(CLI::ExistingFile);
  cmd->add_option("--which", a.which, "model (the student) | teacher (stage-1.pt:teacher is the stage-0 network)")
      ->check(CLI::IsMember({"model", "teacher"}));
  add_data_flags(cmd, a);
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
  auto cfg = r.eval;
  cfg.progress = true;
  const auto scores = dbot::eval::evaluate_encoder(w.encoder, *eval_data, r.data, cfg, w.runtime, knn, !knn);
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

struct AnalyzeArgs {
  std::vector<std::string> checkpoints, labels;
  std::string out, split = "val";
  int64_t images = 1000;
  WeightsArgs weights;
};

// "FILE" or "FILE:teacher" / "FILE:model" (the suffix counts only when FILE exists without it).
std::pair<std::string, std::string> weights_spec(const std::string& spec) {
  for (const char* which : {"teacher", "model"}) {
    const std::string suffix = std::string(":") + which;
    if (spec.size() > suffix.size() && spec.compare(spec.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const auto path = spec.substr(0, spec.size() - suffix.size());
      if (std::filesystem::exists(path)) return {path, which};
    }
  }
  if (!std::filesystem::exists(spec)) throw std::runtime_error(spec + ": no such file");
  return {spec, "model"};
}

int run_analyze(const AnalyzeArgs& a) {
  if (!a.labels.empty() && a.labels.size() != a.checkpoints.size()) {
    throw std::runtime_error("--label is given " + std::to_string(a.labels.size()) + " times for " +
                             std::to_string(a.checkpoints.size()) + " checkpoints: give one per checkpoint, or none");
  }
  std::vector<dbot::eval::Analysis> analyses;
  for (size_t i = 0; i < a.checkpoints.size(); ++i) {
    WeightsArgs args = a.weights;
    std::tie(args.checkpoint, args.which) = weights_spec(a.checkpoints[i]);
    auto w = load_weights(args);
    auto source = dbot::data::open_source(w.recipe.data, a.split == "val" ? "eval_val" : "train");
    if (!source) {
      throw std::runtime_error("data.format " + w.recipe.data.format +
                               " has no val split: use --split train, or set data.eval_path");
    }
    std::fprintf(stderr, "analyzing %s on %lld images of %s\n", a.checkpoints[i].c_str(),
                 static_cast<long long>(std::min<int64_t>(a.images, source->size())), source->describe().c_str());
    auto an =
        dbot::eval::analyze_encoder(w.encoder, source, w.recipe.data, w.recipe.eval.batch_size, a.images, w.runtime);
    an.label = a.labels.empty() ? a.checkpoints[i] : a.labels[i];
    std::printf("%s\n", dbot::eval::analysis_table(an).c_str());
    analyses.push_back(std::move(an));
  }
  const auto files = dbot::eval::write_analysis(analyses, a.out);
  for (const auto& f : files.written) std::printf("written: %s\n", f.c_str());
  if (!files.note.empty()) std::fprintf(stderr, "%s\n", files.note.c_str());
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

}  // namespace

Command add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* ev = app.add_subcommand(
      "eval",
      "evaluate a frozen encoder from a checkpoint. Features: the final-norm output on the full image, CLS "
      "concatenated with the mean of the patch tokens. knn: cosine similarity, k = eval.knn_k (20), votes weighted "
      "by exp(sim / eval.knn_temperature (0.07)) (DINO's protocol). linprobe: by default "
      "(eval.linprobe_protocol: features) a linear classifier trained with AdamW on cached features standardized by "
      "the training mean/std (eval.linprobe_* keys); with eval.linprobe_protocol: mae, MAE's protocol: BatchNorm "
      "without affine + Linear on the CLS token, trained with LARS for eval.mae_epochs (90) through the frozen "
      "encoder on MAE's crop + flip (eval.mae_* keys)");
  ev->add_option("protocol", a->protocol, "knn | linprobe")->required()->check(CLI::IsMember({"knn", "linprobe"}));
  add_weights_flags(ev, a->weights);
  return {ev, [a] { return run_eval(*a); }};
}

Command add_extract(CLI::App& app) {
  auto a = std::make_shared<ExtractArgs>();
  auto* ext = app.add_subcommand(
      "extract",
      "an encoder's features for every image of a split, on the eval transform (the final-norm output pooled as "
      "--pool), written as safetensors: features F32 [N, F], labels I64 [N] when labeled, names U8 (each name followed "
      "by a newline)");
  add_weights_flags(ext, a->weights);
  ext->add_option("--out", a->out, "the .safetensors file to write")->required();
  ext->add_option("--pool", a->pool, "cls | mean (of the patch tokens) | cls+mean (default, as evaluation)")
      ->check(CLI::IsMember({"cls", "mean", "cls+mean"}));
  ext->add_option("--split", a->split, "train (the pretraining images, default) | val (the held-out labeled set)")
      ->check(CLI::IsMember({"train", "val"}));
  return {ext, [a] { return run_extract(*a); }};
}

Command add_analyze(CLI::App& app) {
  auto a = std::make_shared<AnalyzeArgs>();
  auto* an = app.add_subcommand(
      "analyze",
      "the paper's two analysis tools on one or more encoders, over full images (the eval transform): (1) the average "
      "attention distance per layer and head (softmax maps, CLS dropped, query->key weights times the pixel distance "
      "of the patches); (2) per layer, the share of the top-k (k = 1..5) singular values of the block's L2-normalized "
      "patch tokens. Writes analysis.json, attention_distance.png and singular_values.png (gnuplot; every checkpoint "
      "overlaid) and prints a table per checkpoint");
  an->add_option("--checkpoint", a->checkpoints,
                 std::string(kWeightFiles) +
                     "; FILE:teacher takes a checkpoint's teacher (stage-1.pt:teacher is the "
                     "random stage-0 network). Repeat to overlay several")
      ->required();
  an->add_option("--label", a->labels, "a legend name per --checkpoint, in order (default: the file names)");
  an->add_option("--out", a->out, "the folder to write")->required();
  an->add_option("--images", a->images, "analyze the first N images of the split (default 1000)")
      ->check(CLI::Range(int64_t{1}, int64_t{10000000}));
  an->add_option("--split", a->split, "val (the held-out labeled set, default) | train")
      ->check(CLI::IsMember({"train", "val"}));
  add_data_flags(an, a->weights);
  return {an, [a] { return run_analyze(*a); }};
}

Command add_export(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* exp = app.add_subcommand(
      "export",
      "write a checkpoint's network as safetensors (what timm, Hugging Face and model hubs load). timm layout: one "
      "file with timm's VisionTransformer names (load with strict=True into timm.create_model(..., num_classes=0)); "
      "hf layout: a folder with model.safetensors + config.json for transformers.ViTModel.from_pretrained(DIR, "
      "add_pooling_layer=False). The metadata records the architecture, dbot version, stage and recipe");
  exp->add_option("--checkpoint", a->checkpoint, "a dbot checkpoint (stage-<k>.pt or checkpoint-last.pt)")
      ->required()
      ->check(CLI::ExistingFile);
  exp->add_option("--out", a->out, "the .safetensors file (timm layout) or the folder (hf layout) to write")
      ->required();
  exp->add_option("--part", a->opts.part,
                  "encoder (the student's encoder, default) | student (encoder + decoder, dbot names) | teacher")
      ->check(CLI::IsMember({"encoder", "student", "teacher"}));
  exp->add_option("--layout", a->opts.layout, "timm (default) | hf (Hugging Face ViTModel)")
      ->check(CLI::IsMember({"timm", "hf"}));
  return {exp, [a] { return run_export(*a); }};
}

}  // namespace dbot::cli
