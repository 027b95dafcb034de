// Antialiased bicubic resampling of 8-bit images, bit-exact with PIL's Image.resize(size, BICUBIC, box),
// which is what torchvision's transforms (Resize, RandomResizedCrop, on PIL images) call.
//   - Kernel: Keys' cubic with a = -0.5, support 2, stretched by the downscale factor (antialiasing).
//   - Coefficients per output pixel, normalised to sum 1, then 22-bit fixed point (PIL's 8-bit path).
//   - Two separable passes, each rounding to uint8 in between, in the order Pillow 13 picks (resample.cpp).
// The source box is in (fractional) source pixels, so a crop followed by a resize is one call, and a JPEG
// decoded at 1/2, 1/4 or 1/8 scale is resized from the scaled box.
#pragma once

#include "dbot/data/image.h"

namespace dbot::data {

struct ResampleBox {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // left, top, right, bottom, in source pixels
};

// [H, W, C] -> [out_h, out_w, C] from the box of src. Throws std::invalid_argument on an empty box or size.
// src may be a window of a larger image: its edges are the image's edges (as PIL's crop then resize), the
// pixels beyond them are never weighted.
// mirrored: the output flipped left-right (torchvision's hflip after the resize), at no cost when the
// horizontal pass runs (it writes its columns in reverse order).
Image resize_bicubic(const ImageView& src, int64_t out_w, int64_t out_h, const ResampleBox& box, bool mirrored = false);
inline Image resize_bicubic(const ImageView& src, int64_t out_w, int64_t out_h, bool mirrored = false) {
  return resize_bicubic(src, out_w, out_h, {0, 0, double(src.width), double(src.height)}, mirrored);
}

}  // namespace dbot::data
