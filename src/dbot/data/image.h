// An 8-bit image held on the host, the unit the decoders produce and the per-sample transforms consume.
// Pixels are interleaved [H, W, C] (C = 1 for L, 3 for RGB) like PIL's memory, so that a decoder writes
// rows straight into it and the resampler walks rows.
// ImageView is a read-only window onto an Image's rows and columns (rows `stride` bytes apart), so that a
// crop is resampled where it lies instead of copied out first.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

struct ImageView {
  const uint8_t* data = nullptr;  // pixel (0, 0)
  int64_t height = 0, width = 0, channels = 0;
  int64_t stride = 0;            // bytes from one row to the next
  const uint8_t* end = nullptr;  // the end of the underlying buffer: bytes before it may be read

  ImageView() = default;
  ImageView(const Image& img)  // NOLINT(google-explicit-constructor): every Image is a view of itself
      : data(img.pixels.data()),
        height(img.height),
        width(img.width),
        channels(img.channels),
        stride(img.width * img.channels),
        end(img.pixels.data() + img.pixels.size()) {}
  const uint8_t* row(int64_t y) const { return data + y * stride; }
  // Columns [x, x + w) of rows [y, y + h); the caller keeps them inside this view.
  ImageView window(int64_t x, int64_t y, int64_t w, int64_t h) const {
    ImageView v = *this;
    v.data = row(y) + x * channels;
    v.width = w, v.height = h;
    return v;
  }
};

// The view's pixels as an Image of their own.
inline Image copy_image(const ImageView& view) {
  Image out(view.height, view.width, view.channels);
  const auto row_bytes = static_cast<size_t>(view.width * view.channels);
  for (int64_t y = 0; y < view.height; ++y) std::memcpy(out.row(y), view.row(y), row_bytes);
  return out;
}

// Left-right, in place (torchvision's hflip).
inline void flip_horizontal(Image& img) {
  const int64_t C = img.channels;
  for (int64_t y = 0; y < img.height; ++y) {
    uint8_t* r = img.row(y);
    for (int64_t a = 0, b = img.width - 1; a < b; ++a, --b) std::swap_ranges(r + a * C, r + (a + 1) * C, r + b * C);
  }
}

}  // namespace dbot::data
