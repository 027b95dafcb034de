// Per-sample image transforms with torchvision's semantics, the building blocks of the per-sample uint8
// pipeline of the image-data issue (the IDX loader still augments whole batches with grid_sample,
// data/loader.h, until that pipeline replaces it).
//   sample_crop_box: RandomResizedCrop's box, torchvision's get_params rule on a stream of uniform draws;
//                    checked against torchvision itself (tests/reference/make_transforms_golden.py).
#pragma once

#include <cstdint>
#include <functional>

namespace dbot::data {

struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision.transforms.RandomResizedCrop.get_params: up to 10 tries of (area fraction ~ U(scale),
// log aspect ~ U(log ratio)), each consuming two draws, plus two more (top, left) when the box fits;
// otherwise the centre crop with the aspect ratio clamped to `ratio`. `uniform` returns draws in [0, 1).
CropBox sample_crop_box(int64_t height, int64_t width, double scale_min, double scale_max, double ratio_min,
                        double ratio_max, const std::function<double()>& uniform);

}  // namespace dbot::data
