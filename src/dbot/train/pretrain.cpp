// pretrain(): one call per process runs (or resumes) a pretraining into a RunFolder: rank 0 opens the folder
// (creates, checks, cleans it) before the other ranks look into it; every rank opens the data source and
// its shard's Loader, reads the pretrained start weights of a new run, builds the Trainer and resumes from
// checkpoint-last.pt; a failure on one rank stops them all (dist::agree). Then Trainer::run.
#include <cstdio>
#include <memory>
#include <stdexcept>

#include "dbot/train/pretrained.h"
#include "dbot/train/trainer.h"

namespace dbot::train {

PretrainSummary pretrain(const PretrainConfig& cfg, const core::Runtime& runtime, const PretrainOptions& opts,
                         dist::Group* group) {
  const bool rank0 = runtime.rank == 0;
  const bool say = rank0 && !opts.quiet;
  std::unique_ptr<RunFolder> folder;
  dist::agree(group, [&] {  // rank 0 opens (creates, checks, cleans) the folder before the others look into it
    if (rank0) folder = std::make_unique<RunFolder>(opts, std::vector<std::string>{"finetune."});
  });
  std::shared_ptr<const data::ImageSource> source;
  std::unique_ptr<data::Loader> loader;
  std::unique_ptr<Trainer> trainer;
  std::string resumed_note;
  dist::agree(group, [&] {
    if (!rank0) {
      RunFolder::Options view;
      view.writer = false;
      folder = std::make_unique<RunFolder>(opts.run_dir, view);
    }
    source = data::open_source(cfg.data, "train");
    if (say) std::printf("data: %s\n", source->describe().c_str());
    auto lc = data::loader_config(cfg.data, cfg.optim.batch_size, /*train=*/true, cfg.train.seed);
    lc.rank = runtime.rank;
    lc.world_size = runtime.world_size;
    loader = std::make_unique<data::Loader>(
        source, data::transform_config(cfg.data, cfg.model.img_size, cfg.model.in_chans), lc);
    mkd::StartWeights start;  // pretrained files are read for a new run only (a checkpoint holds what they gave)
    if (!folder->has_last_checkpoint()) {
      start = read_start_weights(cfg.model, cfg.mkd, cfg.data.mean, cfg.data.std);
      for (const auto& line : start.log) {
        if (say) std::printf("%s\n", line.c_str());
      }
    }
    trainer = std::make_unique<Trainer>(cfg, runtime, loader->iters_per_epoch(), group, start);
    if (folder->has_last_checkpoint())
      resumed_note = trainer->resume(folder->last_checkpoint(), opts.accept_recipe_change);
  });
  if (group != nullptr) {  // every rank must see rank 0's checkpoint: the folder lies on a shared filesystem
    const int64_t have = folder->has_last_checkpoint() ? 1 : 0;
    if (group->max(have) != -group->max(-have)) {
      throw std::runtime_error(folder->last_checkpoint() + " is visible to some processes only (this rank " +
                               std::string(have ? "sees" : "does not see") +
                               " it): --output must be a folder that every process reads and rank 0 writes "
                               "(a shared filesystem)");
    }
  }
  if (say && !resumed_note.empty()) std::printf("%s\n", resumed_note.c_str());
  return trainer->run(*loader, *folder, opts);
}

}  // namespace dbot::train
