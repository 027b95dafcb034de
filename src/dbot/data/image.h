// An 8-bit image held on the host, the unit the decoders produce and the per-sample transforms consume.
// Pixels are interleaved [H, W, C] (C = 1 for L, 3 for RGB) like PIL's memory, so that a decoder writes
// rows straight into it and the resampler walks rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dbot::data {

struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // [H, W, C]

  Image() = default;
  Image(int64_t h, int64_t w, int64_t c) : height(h), width(w), channels(c), pixels(static_cast<size_t>(h * w * c)) {}
  uint8_t* row(int64_t y) { return pixels.data() + y * width * channels; }
  const uint8_t* row(int64_t y) const { return pixels.data() + y * width * channels; }
};

}  // namespace dbot::data
