// Batches for pretraining and evaluation from an in-memory Dataset.
// Training: a per-epoch permutation from core::derive_generator(seed, kShuffle, epoch), drop_last as MAE, then
// RandomResizedCrop(scale, ratio 3/4..4/3, bicubic) + horizontal flip, done for the whole batch at once
// with affine_grid/grid_sample, with the step's generator. Everything is reproducible from the seed.
#pragma once

#include "dbot/data/dataset.h"

namespace dbot::data {

// uint8 [B, C, H, W] -> float [B, C, H, W], (x / 255 - mean) / std per channel.
at::Tensor normalize(const at::Tensor& images_u8, const std::vector<double>& mean, const std::vector<double>& std);

// Per-sample RandomResizedCrop (torchvision's parameter rule, 10 tries then a center crop) and flip
// (probability 0.5 when hflip), resampled bicubically to the input size. x: [B, C, H, W] float.
at::Tensor random_resized_crop_flip(const at::Tensor& x, double scale_min, double scale_max, bool hflip,
                                    at::Generator& gen);

class TrainLoader {
 public:
  TrainLoader(const Dataset& ds, const DataConfig& cfg, int64_t batch_size, uint64_t seed);
  int64_t size() const { return ds_.size(); }
  int64_t iters_per_epoch() const { return ds_.size() / batch_size_; }
  at::Tensor permutation(int64_t epoch) const;  // [N] int64
  // Batch `iteration` of an epoch given its permutation, augmented with gen: [B, C, H, W] float.
  at::Tensor batch(const at::Tensor& perm, int64_t iteration, at::Generator& gen) const;

 private:
  const Dataset& ds_;
  DataConfig cfg_;
  int64_t batch_size_;
  uint64_t seed_;
};

}  // namespace dbot::data
