#include "dbot/data/loader.h"

#include <cmath>
#include <stdexcept>

#include "dbot/core/rng.h"

namespace dbot::data {

at::Tensor normalize(const at::Tensor& images_u8, const std::vector<double>& mean, const std::vector<double>& std) {
  const int64_t C = images_u8.size(1);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C,
              "data.mean/data.std need one value per channel (", C, ")");
  auto m = at::tensor(std::vector<float>(mean.begin(), mean.end())).view({1, C, 1, 1});
  auto s = at::tensor(std::vector<float>(std.begin(), std.end())).view({1, C, 1, 1});
  return (images_u8.to(at::kFloat).div_(255.0) - m) / s;
}

at::Tensor random_resized_crop_flip(const at::Tensor& x, double scale_min, double scale_max, bool hflip,
                                    at::Generator& gen) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  constexpr int kTries = 10;
  // Uniforms for every try: area fraction, log-ratio, top, left; plus one for the flip.
  auto u = at::rand({B, kTries * 4 + 1}, gen, at::TensorOptions().dtype(at::kDouble)).contiguous();
  const double* r = u.data_ptr<double>();
  const double area = static_cast<double>(H * W);
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  auto theta = at::zeros({B, 2, 3}, at::kFloat);
  auto th = theta.accessor<float, 3>();
  for (int64_t b = 0; b < B; ++b) {
    const double* rb = r + b * (kTries * 4 + 1);
    double top = 0, left = 0, h = H, w = W;
    bool found = false;
    for (int t = 0; t < kTries && !found; ++t) {
      const double target = area * (scale_min + (scale_max - scale_min) * rb[4 * t]);
      const double aspect = std::exp(log_lo + (log_hi - log_lo) * rb[4 * t + 1]);
      const double cw = std::round(std::sqrt(target * aspect)), ch = std::round(std::sqrt(target / aspect));
      if (cw > 0 && ch > 0 && cw <= W && ch <= H) {
        w = cw;
        h = ch;
        top = std::floor(rb[4 * t + 2] * (H - h + 1));
        left = std::floor(rb[4 * t + 3] * (W - w + 1));
        found = true;
      }
    }
    if (!found) {  // torchvision's fallback: the whole image (ratio is always within range for squares)
      top = 0, left = 0, h = H, w = W;
    }
    const bool flip = hflip && rb[kTries * 4] < 0.5;
    // Output [-1, 1] maps onto the crop's pixel edges [left, left + w] (align_corners = false).
    th[b][0][0] = static_cast<float>((w / W) * (flip ? -1.0 : 1.0));
    th[b][0][2] = static_cast<float>((2.0 * left + w) / W - 1.0);
    th[b][1][1] = static_cast<float>(h / H);
    th[b][1][2] = static_cast<float>((2.0 * top + h) / H - 1.0);
  }
  auto grid = at::affine_grid_generator(theta, {B, x.size(1), H, W}, /*align_corners=*/false);
  return at::grid_sampler(x, grid, /*bicubic=*/2, /*padding border=*/1, /*align_corners=*/false);
}

TrainLoader::TrainLoader(const Dataset& ds, const DataConfig& cfg, int64_t batch_size, uint64_t seed)
    : ds_(ds), cfg_(cfg), batch_size_(batch_size), seed_(seed) {
  if (batch_size <= 0) throw std::invalid_argument("optim.batch_size must be positive");
  if (iters_per_epoch() == 0) {
    throw std::invalid_argument("optim.batch_size " + std::to_string(batch_size) + " exceeds the " +
                                std::to_string(ds.size()) + " training images");
  }
  if (cfg.crop_scale.size() != 2 ||
      !(cfg.crop_scale[0] > 0 && cfg.crop_scale[0] <= cfg.crop_scale[1] && cfg.crop_scale[1] <= 1.0)) {
    throw std::invalid_argument("data.crop_scale must be [min, max] with 0 < min <= max <= 1");
  }
}

at::Tensor TrainLoader::permutation(int64_t epoch) const {
  auto gen = core::derive_generator(seed_, core::RngPurpose::kShuffle, static_cast<uint64_t>(epoch));
  return at::randperm(ds_.size(), gen, at::TensorOptions().dtype(at::kLong));
}

at::Tensor TrainLoader::batch(const at::Tensor& perm, int64_t iteration, at::Generator& gen) const {
  auto idx = perm.slice(0, iteration * batch_size_, (iteration + 1) * batch_size_);
  auto x = normalize(ds_.images.index_select(0, idx), cfg_.mean, cfg_.std);
  return random_resized_crop_flip(x, cfg_.crop_scale[0], cfg_.crop_scale[1], cfg_.hflip, gen);
}

}  // namespace dbot::data
