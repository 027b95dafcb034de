// dbot finetune: a pretrained encoder (any weights file train/pretrained.h reads) or a random one
// (--from-scratch) fine-tuned as a classifier (finetune/finetune.h) into a run folder.
#include <cstdio>
#include <memory>

#include "cli.h"
#include "dbot/finetune/finetune.h"
#include "dbot/train/interrupt.h"
#include "dbot/train/pretrained.h"

namespace dbot::cli {

namespace {

struct FinetuneArgs {
  std::string checkpoint, which = "model", config;
  std::vector<std::string> overrides;
  RunFlags run;
  bool from_scratch = false;
  RuntimeFlags runtime;
};

int run_finetune(const FinetuneArgs& a) {
  if (a.checkpoint.empty() == !a.from_scratch) {
    throw std::runtime_error(
        "give --checkpoint FILE (a pretrained encoder) or --from-scratch (the supervised "
        "baseline), not both");
  }
  const train::StopOnSignal stop_on_signal;  // SIGINT/SIGTERM: stop after this step, with a checkpoint
  finetune::FinetuneSetup s;
  std::string recipe_yaml;  // without --config: the recipe the weights file carries
  if (!a.from_scratch) {
    train::PretrainedOptions po;
    po.which = a.which;
    po.need_final_norm = false;  // fine-tuning drops norm.* anyway (fc_norm replaces it)
    auto p = train::read_pretrained(a.checkpoint, po);
    std::printf("encoder: %s: %s\n", a.checkpoint.c_str(), p.summary().c_str());
    s.arch = p.encoder.cfg;
    s.encoder = std::move(p.encoder.state);
    s.encoder_what = a.checkpoint;
    recipe_yaml = p.recipe;
  }
  Recipe r = a.config.empty() && !recipe_yaml.empty()
                 ? [&] {
                     YAML::Node tree = recipe::config_from_yaml(recipe_yaml, a.checkpoint).tree;
                     for (const auto& o : a.overrides) recipe::apply_override(tree, o);
                     return recipe::build_config(tree, a.checkpoint);
                   }()
                 : recipe::load_config(a.config, a.overrides);
  s.runtime = apply_runtime(r, a.runtime);
  if (a.from_scratch) s.arch = r.model;
  if (static_cast<int64_t>(r.data.mean.size()) != s.arch.in_chans) {
    throw std::runtime_error("the encoder takes " + std::to_string(s.arch.in_chans) +
                             " channel(s), data.mean/data.std " + "have " + std::to_string(r.data.mean.size()) +
                             ": set them with --set data.mean=[...]");
  }
  s.data = r.data;
  s.cfg = r.finetune;
  s.seed = r.train.seed;
  s.log_every = r.train.log_every;
  s.checkpoint_every = r.train.checkpoint_every;
  const auto o = run_request(a.run, r);
  const auto sum = finetune::finetune(s, o);
  const int sig = sum.stopped_by ? sum.stopped_by : train::stop_requested();
  if (!sum.finished) {
    std::fflush(stdout);
    std::fprintf(stderr, "dbot finetune: stopped%s%s; %s/checkpoint-last.pt is written: continue with --resume\n",
                 sig ? " by " : "", sig ? train::signal_name(sig) : "", a.run.output.c_str());
    return sig ? 128 + sig : 0;
  }
  std::printf("fine-tuned: best top-1 %.2f%%, last top-1 %.2f%% top-5 %.2f%%\n", sum.best_acc1, sum.last_acc1,
              sum.last_acc5);
  for (const auto& f : sum.written) std::printf("written: %s\n", f.c_str());
  return 0;
}

}  // namespace

Command add_finetune(CLI::App& app) {
  auto a = std::make_shared<FinetuneArgs>();
  auto* ft = app.add_subcommand(
      "finetune",
      "fine-tune an encoder as a classifier (METHOD.md's protocol, the recipe's finetune.* keys): global average "
      "pooling + fc_norm + head, learnable positions, layer-wise lr decay, AdamW, warmup + cosine, drop path, mixup/"
      "cutmix with label smoothing, random erasing; top-1/top-5 per epoch in metrics.jsonl, checkpoint-last.pt and "
      "checkpoint-best.pt, and model.safetensors (timm names: loads strictly into timm's "
      "VisionTransformer(global_pool='avg'))");
  ft->add_option("--checkpoint", a->checkpoint,
                 "the pretrained encoder: a dbot checkpoint, a .safetensors file or a released torch.save file")
      ->check(CLI::ExistingFile);
  ft->add_option("--which", a->which, "model (the student) | teacher (stage-1.pt:teacher is the stage-0 network)")
      ->check(CLI::IsMember({"model", "teacher"}));
  ft->add_flag("--from-scratch", a->from_scratch,
               "a randomly initialized encoder of the recipe's model.* architecture (the supervised baseline)");
  ft->add_option("--config", a->config, "recipe YAML (default: the recipe the weights file carries)");
  add_run_flags(ft, a->run,
                "run folder: config.yaml, metrics.jsonl, checkpoint-last.pt, checkpoint-best.pt, "
                "model.safetensors");
  ft->add_option("--set", a->overrides, "override a recipe key, e.g. --set finetune.epochs=10");
  add_runtime_flags(ft, a->runtime);
  return {ft, [a] { return run_finetune(*a); }};
}

}  // namespace dbot::cli
