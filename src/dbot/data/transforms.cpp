#include "dbot/data/transforms.h"

#include <cmath>

namespace dbot::data {

CropBox sample_crop_box(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                        double ratio_max, const std::function<double()>& uniform) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * (scale_min + (scale_max - scale_min) * uniform());
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * uniform());
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));  // Python's round
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const auto top = static_cast<int64_t>(std::floor(uniform() * static_cast<double>(height - h + 1)));
      const auto left = static_cast<int64_t>(std::floor(uniform() * static_cast<double>(width - w + 1)));
      return {top, left, h, w};
    }
  }
  // Fallback: the centre crop, its aspect ratio clamped into [ratio_min, ratio_max].
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio_min) {
    h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / ratio_min));
  } else if (in_ratio > ratio_max) {
    w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * ratio_max));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

}  // namespace dbot::data
