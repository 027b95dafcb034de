// RandAugment as timm implements it (timm.data.auto_augment: rand_augment_transform, AugmentOp, the PIL ops),
// on 8-bit L or RGB images, for fine-tuning's train transform (after RandomResizedCrop and the flip):
//   per image: num_layers ops chosen uniformly with replacement; each applied with probability prob, at a
//   magnitude ~ N(magnitude, magnitude_std) clipped to [0, magnitude_max] (mstd 0: the magnitude itself), mapped
//   to the op's argument by timm's level functions (signed ones negated with probability 1/2).
// The ops reproduce Pillow's: ImageOps.autocontrast / equalize / invert / posterize / solarize, timm's solarize_add,
// ImageEnhance.Color / Contrast / Brightness / Sharpness (Image.blend with its float truncation; the SMOOTH
// filter for sharpness), and Image.transform(AFFINE) / rotate with Pillow's bicubic (a = -1) or bilinear filter,
// out-of-image pixels taking the fill colour. The spec string is timm's: "rand-m9-mstd0.5-inc1" (sections m, n,
// p, mstd, mmax, inc).
#pragma once

#include <ATen/core/Generator.h>

#include <array>
#include <string>
#include <vector>

#include "dbot/data/image.h"

namespace dbot::data {

struct RandAugmentConfig {
  double magnitude = 10;
  int64_t num_layers = 2;
  double prob = 0.5;
  double magnitude_std = 0;   // > 100 in the spec: uniform in [0, magnitude] (stored as infinity)
  double magnitude_max = 10;  // timm's _LEVEL_DENOM unless mmax
  bool increasing = false;
  std::vector<std::string> ops;  // timm's names
};

// Parses timm's config string; "none" or "" gives num_layers 0 (off). Throws std::invalid_argument naming the
// section that is not understood.
RandAugmentConfig parse_rand_augment(const std::string& spec);

// timm's level -> argument map of `op` at `magnitude` (negate: the random sign of the signed ops). Ops without an
// argument return 0.
double rand_augment_arg(const std::string& op, double magnitude, bool negate);

// One op with its argument, in place. fill: the colour of pixels an affine op brings in from outside (the first
// channel for L images). resample_bicubic: Pillow's BICUBIC, else BILINEAR.
void apply_augment_op(Image& img, const std::string& op, double arg, const std::array<uint8_t, 3>& fill,
                      bool resample_bicubic = true);

// The whole RandAugment of cfg on one image, drawing from gen.
void rand_augment(Image& img, const RandAugmentConfig& cfg, const std::array<uint8_t, 3>& fill, at::Generator& gen);

}  // namespace dbot::data
