// Batches of uint8 images [B, C, S, S] from an ImageSource, decoded and transformed on worker threads
// ahead of the consumer, through a bounded queue of `prefetch` batches.
// Training: each epoch is a permutation of the samples from (seed, shuffle, epoch), cut into full batches
// (drop_last, as MAE); sample i of epoch e is augmented with draws from (seed, augment, e << 32 | i). So the
// batches depend on (seed, epoch, position) only: the same for any number of workers, and a run resumed
// mid-epoch (start_epoch with first_iteration) gets the batches an uninterrupted run would have.
// Evaluation: the samples in order, the last batch partial, the eval transform.
// A bad file (corrupt, truncated, unsupported) stops the run with its path, or with skip_bad is replaced
// by the next good sample in the epoch's order (deterministically) and counted in Batch::bad.
// Data parallelism (training): rank r of w ranks takes positions r, r + w, ..., r + (B - 1) w of each global
// batch's slice [i B w, (i + 1) B w) of the epoch's order, which is torch's DistributedSampler (rank r gets
// order[r::w]) cut into batches of B. Its drop-last rule too: the order is padded to a multiple of w with
// its own first samples (position p reads order[p mod N]) and each rank drops its last partial batch, so an
// epoch has ceil(N / w) / B iterations (N / B for one rank, as before). The union of the ranks' batches is
// the one-rank batch of B w samples, each with the same augmentation.
#pragma once

#include <ATen/ATen.h>

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dbot/data/source.h"
#include "dbot/data/transforms.h"

namespace dbot::data {

// uint8 [B, C, H, W] -> float [B, C, H, W], (x / 255 - mean) / std per channel, on x's device.
at::Tensor normalize(const at::Tensor& images_u8, const std::vector<double>& mean, const std::vector<double>& std);

struct LoaderConfig {
  int64_t batch_size = 256;
  bool train = true;     // shuffled, drop_last, train transform; else in order, eval transform
  int64_t workers = 0;   // 0 = one per core
  int64_t prefetch = 0;  // batches decoded ahead (0 = 2 x workers / batch, at least 2)
  bool skip_bad = false;
  uint64_t seed = 0;
  int64_t rank = 0, world_size = 1;  // training: this rank's shard of each global batch
};

// Throws std::invalid_argument naming `key` unless scale is a RandomResizedCrop area range [min, max],
// 0 < min <= max <= 1.
void check_crop_scale(const std::vector<double>& scale, const std::string& key);

// The transform and loader settings of the data section for a model's input (img_size, in_chans); checks
// data.crop_scale and data.crop_pct.
TransformConfig transform_config(const DataConfig& data, int64_t img_size, int64_t in_chans);
LoaderConfig loader_config(const DataConfig& data, int64_t batch_size, bool train, uint64_t seed);

struct LoadedBatch {
  at::Tensor images;  // [B, C, S, S] uint8
  at::Tensor labels;  // [B] int64 (-1 when unlabeled)
  int64_t bad = 0;    // samples replaced because their file could not be read (skip_bad)
  double wait_s = 0;  // time next() blocked waiting for workers
};

struct LoadedSample {
  Image image;        // [S, S, C]
  int64_t index = 0;  // the sample it came from (a stand-in's, after bad files)
  int64_t bad = 0;    // bad files skipped before it
};

class Loader {
 public:
  Loader(std::shared_ptr<const ImageSource> source, const TransformConfig& transform, const LoaderConfig& cfg);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t size() const { return source_->size(); }
  int64_t iters_per_epoch() const;
  const ImageSource& source() const { return *source_; }
  int64_t workers() const { return static_cast<int64_t>(threads_.size()); }
  // Serves batches first_iteration .. iters_per_epoch() - 1 of `epoch` (any batches still queued are dropped).
  // A no-op when the loader already serves exactly that and nothing was taken yet, so a caller may start the
  // next epoch ahead (workers decode while it writes a checkpoint) and start it again where it begins.
  void start_epoch(int64_t epoch, int64_t first_iteration = 0);
  // The next batch of the current epoch, in order; rethrows a worker's error.
  LoadedBatch next();

  // The sample at `position` of an epoch's order, as the workers make it.
  LoadedSample sample(int64_t epoch, int64_t position, const std::vector<int64_t>& order) const;
  // The sample order of an epoch: [N] (training: the permutation; evaluation: 0..N-1).
  std::vector<int64_t> order(int64_t epoch) const;

 private:
  struct Slot;
  void work();
  int64_t batch_len(int64_t iteration) const;
  int64_t position(int64_t iteration, int64_t j) const;  // of sample j of a batch, in the epoch's order

  std::shared_ptr<const ImageSource> source_;
  TransformConfig transform_;
  LoaderConfig cfg_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Slot>> ring_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  bool stop_ = false;
  int64_t generation_ = 0, epoch_ = -1, end_ = 0, started_at_ = -1;
  int64_t fill_iter_ = 0, fill_pos_ = 0, consume_iter_ = 0;
  std::shared_ptr<const std::vector<int64_t>> order_;
};

}  // namespace dbot::data
