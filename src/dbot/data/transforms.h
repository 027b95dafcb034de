// Per-sample image transforms with torchvision's semantics on 8-bit pixels (torchvision on PIL images:
// crop, then PIL's antialiased bicubic resize, rounded and clamped to uint8; normalisation comes later,
// on the batch, on the device).
//   sample_crop_box:  RandomResizedCrop's box, torchvision's get_params rule on a stream of uniform draws;
//                     checked against torchvision itself (tests/reference/make_transforms_golden.py).
//   train_transform:  RandomResizedCrop(size, scale, ratio, BICUBIC) + RandomHorizontalFlip(0.5).
//   eval_transform:   Resize(floor(size / crop_pct), BICUBIC) on the shorter side + CenterCrop(size)
//                     (MAE/timm evaluation: 224 / 0.875 = 256, then 224).
// Both read a StoredImage: encoded bytes (decoded here, JPEGs only in the region the crop needs and, when
// allowed, at 1/2, 1/4 or 1/8 scale in the DCT domain: fast, no longer bit-equal to torchvision) or pixels
// already in memory (IDX).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dbot/data/image.h"
#include "dbot/data/rand_augment.h"

namespace dbot::data {

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision.transforms.RandomResizedCrop.get_params: up to 10 tries of (area fraction ~ U(scale),
// log aspect ~ U(log ratio)), each consuming two draws, plus two more (top, left) when the box fits;
// otherwise the centre crop with the aspect ratio clamped to `ratio`. `uniform` returns draws in [0, 1).
CropBox sample_crop_box(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                        double ratio_max, const std::function<double()>& uniform);

// MAE's linear-probe crop (its util/crop.py, after BYOL's TF code): one (area fraction, log aspect) draw, the
// box's sides clamped to the image's, then top and left: four draws, no retry and no centre-crop fallback.
CropBox sample_crop_box_single(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                               double ratio_max, const std::function<double()>& uniform);

// The most uniform draws one train_transform consumes: 10 tries x 2, top and left, the flip.
constexpr int kTrainDraws = 23;

struct TransformConfig {
  int64_t size = 224;    // output is size x size
  int64_t channels = 3;  // 1 (L) or 3 (RGB), as PIL's convert
  double scale_min = 0.2, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  bool hflip = true;
  bool crop_single_draw = false;  // sample_crop_box_single (MAE's linear probe) instead of torchvision's rule
  double crop_pct = 0.875;        // eval: resize the shorter side to floor(size / crop_pct), then centre crop
  bool dct_scale = true;          // JPEG: decode at 1/d scale when the crop is at least d times the output
  // Training only, after the crop and the flip (fine-tuning): timm's RandAugment, its affine ops filling with
  // `fill` (timm: round(255 x data mean) per channel). num_layers 0: off.
  RandAugmentConfig rand_augment = parse_rand_augment("none");
  std::array<uint8_t, 3> fill{128, 128, 128};
};

// An image as stored: a file's bytes, or pixels already decoded (then `bytes` is empty).
struct StoredImage {
  std::string name;  // the path, for errors
  std::vector<uint8_t> bytes;
  Image pixels;
};

// torchvision's F.resized_crop(img, top, left, h, w, [out_h, out_w], BICUBIC) on the image converted to
// cfg.channels (with cfg.dct_scale, JPEGs may be decoded at a smaller scale first).
Image resized_crop(const StoredImage& img, const CropBox& box, int64_t out_w, int64_t out_h,
                   const TransformConfig& cfg);

// draws: kTrainDraws uniforms in [0, 1) (crop tries, top, left, then the flip at index kTrainDraws - 1).
Image train_transform(const StoredImage& img, const TransformConfig& cfg, const double* draws);
Image eval_transform(const StoredImage& img, const TransformConfig& cfg);

// Writes an [H, W, C] image as [C, H, W] at dst.
void to_chw(const Image& img, uint8_t* dst);

}  // namespace dbot::data
