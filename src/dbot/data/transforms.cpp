#include "dbot/data/transforms.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "dbot/core/vector_clones.h"
#include "dbot/data/decode.h"
#include "dbot/data/resample.h"

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

CropBox sample_crop_box_single(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                               double ratio_max, const std::function<double()>& uniform) {
  const double target_area = static_cast<double>(height * width) * (scale_min + (scale_max - scale_min) * uniform());
  const double log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  const double aspect = std::exp(log_lo + (log_hi - log_lo) * uniform());
  // At least one pixel (MAE's would hand PIL an empty box when the area rounds to 0).
  const auto side = [](double v, int64_t limit) {
    return std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(v)), 1, limit);
  };
  const int64_t w = side(std::sqrt(target_area * aspect), width), h = side(std::sqrt(target_area / aspect), height);
  const auto top = static_cast<int64_t>(std::floor(uniform() * static_cast<double>(height - h + 1)));
  const auto left = static_cast<int64_t>(std::floor(uniform() * static_cast<double>(width - w + 1)));
  return {top, left, h, w};
}

namespace {

ImageInfo info_of(const StoredImage& img) {
  if (img.bytes.empty()) return {img.pixels.width, img.pixels.height, false};
  return read_image_info(img.bytes, img.name);
}

// Resizes `box` of the stored image (full-resolution pixels) to out_w x out_h: the exact crop then PIL's
// resize, or, for JPEGs when allowed, the DCT-scaled region and a fractional box.
// mirrored: the output flipped left-right, by the resampler at no cost.
Image crop_resize(const StoredImage& img, const ImageInfo& info, const CropBox& box, int64_t out_w, int64_t out_h,
                  const TransformConfig& cfg, bool mirrored = false) {
  if (box.top < 0 || box.left < 0 || box.height <= 0 || box.width <= 0 || box.top + box.height > info.height ||
      box.left + box.width > info.width) {
    throw std::invalid_argument(img.name + ": crop box outside the " + std::to_string(info.width) + "x" +
                                std::to_string(info.height) + " image");
  }
  const int64_t x1 = box.left + box.width, y1 = box.top + box.height;
  if (img.bytes.empty()) {
    const Image px = convert_channels(img.pixels, cfg.channels);
    const ImageView crop = ImageView(px).window(box.left, box.top, box.width, box.height);
    return resize_bicubic(crop, out_w, out_h, mirrored);
  }
  int denom = 1;
  if (cfg.dct_scale && info.jpeg) {
    while (denom < 8 && box.width >= 2 * denom * out_w && box.height >= 2 * denom * out_h) denom *= 2;
  }
  if (denom == 1) {
    const DecodedRegion region = decode_region(img.bytes, img.name, cfg.channels, box.left, box.top, x1, y1);
    return resize_bicubic(region.view(), out_w, out_h, mirrored);
  }
  // libjpeg's scaled size is ceil(size / denom); the box maps to fractional scaled pixels.
  const double d = denom;
  const int64_t sw = (info.width + denom - 1) / denom, sh = (info.height + denom - 1) / denom;
  const int64_t sx0 = box.left / denom, sy0 = box.top / denom;
  const int64_t sx1 = std::min<int64_t>(sw, (x1 + denom - 1) / denom),
                sy1 = std::min<int64_t>(sh, (y1 + denom - 1) / denom);
  const DecodedRegion region = decode_region(img.bytes, img.name, cfg.channels, sx0, sy0, sx1, sy1, denom);
  const ResampleBox rb{box.left / d - sx0, box.top / d - sy0, std::min(x1 / d, double(sx1)) - sx0,
                       std::min(y1 / d, double(sy1)) - sy0};
  return resize_bicubic(region.view(), out_w, out_h, rb, mirrored);
}

}  // namespace

Image resized_crop(const StoredImage& img, const CropBox& box, int64_t out_w, int64_t out_h,
                   const TransformConfig& cfg) {
  return crop_resize(img, info_of(img), box, out_w, out_h, cfg);
}

Image train_transform(const StoredImage& img, const TransformConfig& cfg, const double* draws) {
  const ImageInfo info = info_of(img);
  int next = 0;
  const auto sampler = cfg.crop_single_draw ? sample_crop_box_single : sample_crop_box;
  const CropBox box = sampler(info.height, info.width, cfg.scale_min, cfg.scale_max, cfg.ratio_min, cfg.ratio_max,
                              [&] { return draws[next++]; });
  return crop_resize(img, info, box, cfg.size, cfg.size, cfg, cfg.hflip && draws[kTrainDraws - 1] < 0.5);
}

Image eval_transform(const StoredImage& img, const TransformConfig& cfg) {
  const ImageInfo info = info_of(img);
  // torchvision Resize(int): the shorter side to s, the longer to int(s * long / short).
  const auto s = static_cast<int64_t>(std::floor(static_cast<double>(cfg.size) / cfg.crop_pct));
  const bool portrait = info.width <= info.height;
  const int64_t short_side = portrait ? info.width : info.height, long_side = portrait ? info.height : info.width;
  const auto resized_long = static_cast<int64_t>(static_cast<double>(s) * long_side / short_side);
  const int64_t rw = portrait ? s : resized_long, rh = portrait ? resized_long : s;
  if (rw < cfg.size || rh < cfg.size) throw std::invalid_argument("data.crop_pct must be in (0, 1]");
  // CenterCrop: offsets int(round((H - size) / 2)) with Python's round (half to even).
  const auto top = static_cast<int64_t>(std::nearbyint((rh - cfg.size) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((rw - cfg.size) / 2.0));
  const Image resized = crop_resize(img, info, {0, 0, info.height, info.width}, rw, rh, cfg);
  return copy_image(ImageView(resized).window(left, top, cfg.size, cfg.size));
}

namespace {

// [n, 3] -> [3, n] in one pass (3 strided passes took 3x as long), vectorised by the compiler.
DBOT_VECTOR_CLONES
void rgb_to_planes(const uint8_t* __restrict src, uint8_t* __restrict dst, int64_t n) {
  uint8_t* __restrict r = dst;
  uint8_t* __restrict g = dst + n;
  uint8_t* __restrict b = dst + 2 * n;
  for (int64_t i = 0; i < n; ++i) {
    r[i] = src[3 * i];
    g[i] = src[3 * i + 1];
    b[i] = src[3 * i + 2];
  }
}

}  // namespace

void to_chw(const Image& img, uint8_t* dst) {
  const int64_t C = img.channels, n = img.height * img.width;
  if (C == 3) return rgb_to_planes(img.pixels.data(), dst, n);
  for (int64_t c = 0; c < C; ++c) {
    const uint8_t* src = img.pixels.data() + c;
    uint8_t* d = dst + c * n;
    for (int64_t i = 0; i < n; ++i) d[i] = src[i * C];
  }
}

}  // namespace dbot::data
