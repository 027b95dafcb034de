#include "dbot/data/resample.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace dbot::data {

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DBOT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DBOT_VECTOR_CLONES
#endif

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's fixed point for 8-bit images

double bicubic(double x) {  // Keys' cubic convolution kernel, a = -0.5, support 2
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// One pass's taps: output pixel i reads src[first[i] .. first[i] + count[i]) with weights[i * ksize + k].
struct Taps {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;  // fixed point, kPrecisionBits
};

// PIL's precompute_coeffs + normalize_coeffs_8bpc, step for step (the int casts truncate as C does).
// in0/in1 are floats, as PIL parses the box; their difference is taken in float, then widened.
Taps precompute(int in_size, float in0, float in1, int out_size) {
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> k(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      t.weights[static_cast<size_t>(xx) * t.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = xmax;
  }
  return t;
}

// The vertical pass: output row yy = sum over taps of source rows first[yy] - y_shift + y, weighted. Rows
// are contiguous, so the inner loops are plain vector code (uint8 x int32 multiply-adds); an AVX2 clone is
// picked at run time where the CPU has it. Integer sums do not depend on the order: the result is PIL's.
DBOT_VECTOR_CLONES
void vertical(const Image& src, int64_t y_shift, const Taps& t, Image& out) {
  const int64_t row_len = src.width * src.channels;
  std::vector<int32_t> acc(static_cast<size_t>(row_len));
  int32_t* a = acc.data();
  for (int64_t yy = 0; yy < out.height; ++yy) {
    const int32_t* k = &t.weights[static_cast<size_t>(yy) * t.ksize];
    for (int64_t i = 0; i < row_len; ++i) a[i] = 1 << (kPrecisionBits - 1);
    for (int y = 0; y < t.count[yy]; ++y) {
      const uint8_t* in = src.row(t.first[yy] - y_shift + y);
      const int32_t w = k[y];
      for (int64_t i = 0; i < row_len; ++i) a[i] += in[i] * w;
    }
    uint8_t* o = out.row(yy);
    for (int64_t i = 0; i < row_len; ++i) {
      const int32_t v = a[i] >> kPrecisionBits;
      o[i] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
  }
}

// The horizontal pass over rows [y0, y0 + out.height) of src: per output pixel, the taps' weighted sum of
// its C channels at once (as PIL does), C fixed at compile time so the channel loop unrolls.
template <int C>
void horizontal_c(const Image& src, int64_t y0, const Taps& t, Image& out) {
  for (int64_t y = 0; y < out.height; ++y) {
    const uint8_t* in = src.row(y0 + y);
    uint8_t* o = out.row(y);
    for (int64_t xx = 0; xx < out.width; ++xx) {
      const int32_t* k = &t.weights[static_cast<size_t>(xx) * t.ksize];
      const uint8_t* p = in + t.first[xx] * C;
      int32_t acc[C];
      for (int c = 0; c < C; ++c) acc[c] = 1 << (kPrecisionBits - 1);
      for (int x = 0; x < t.count[xx]; ++x) {
        for (int c = 0; c < C; ++c) acc[c] += p[x * C + c] * k[x];
      }
      for (int c = 0; c < C; ++c) {
        const int32_t v = acc[c] >> kPrecisionBits;
        o[xx * C + c] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
      }
    }
  }
}

void horizontal(const Image& src, int64_t y0, const Taps& t, Image& out) {
  switch (src.channels) {
    case 1:
      return horizontal_c<1>(src, y0, t, out);
    case 2:
      return horizontal_c<2>(src, y0, t, out);
    case 3:
      return horizontal_c<3>(src, y0, t, out);
    case 4:
      return horizontal_c<4>(src, y0, t, out);
    default:
      throw std::invalid_argument("resize_bicubic: 1 to 4 channels");
  }
}

}  // namespace

Image resize_bicubic(const Image& src, int64_t out_w, int64_t out_h, const ResampleBox& box) {
  if (out_w <= 0 || out_h <= 0 || src.width <= 0 || src.height <= 0 || !(box.x1 > box.x0) || !(box.y1 > box.y0) ||
      box.x0 < 0 || box.y0 < 0 || box.x1 > src.width || box.y1 > src.height) {
    throw std::invalid_argument("resize_bicubic: bad size or box (" + std::to_string(src.width) + "x" +
                                std::to_string(src.height) + " -> " + std::to_string(out_w) + "x" +
                                std::to_string(out_h) + ")");
  }
  const float x0 = static_cast<float>(box.x0), y0 = static_cast<float>(box.y0);  // PIL's box is float
  const float x1 = static_cast<float>(box.x1), y1 = static_cast<float>(box.y1);
  if (x0 == std::trunc(x0) && y0 == std::trunc(y0) && x1 - x0 == out_w && y1 - y0 == out_h) {
    Image out(out_h, out_w, src.channels);  // an integer box of the output's size: a plain crop
    const int64_t C = src.channels;
    for (int64_t y = 0; y < out_h; ++y) {
      std::copy_n(src.row(static_cast<int64_t>(y0) + y) + static_cast<int64_t>(x0) * C, out_w * C, out.row(y));
    }
    return out;
  }
  // PIL skips a pass whose dimension neither changes nor is cropped.
  const bool need_h = out_w != src.width || x0 != 0 || x1 != out_w;
  const bool need_v = out_h != src.height || y0 != 0 || y1 != out_h;
  const Taps th = precompute(static_cast<int>(src.width), x0, x1, static_cast<int>(out_w));
  const Taps tv = precompute(static_cast<int>(src.height), y0, y1, static_cast<int>(out_h));
  // Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice the width's
  // shrink (in whole-image pixels); the order changes the uint8 rounding between the passes.
  const bool horizontal_first = !(src.height - out_h > 0 && src.height - out_h > (src.width - out_w) * 2);
  if (!need_h && !need_v) return src;
  if (!need_h || !horizontal_first) {
    Image tmp;
    if (need_v) {
      tmp = Image(out_h, src.width, src.channels);
      vertical(src, 0, tv, tmp);
      if (!need_h) return tmp;
    }
    Image out(out_h, out_w, src.channels);
    horizontal(need_v ? tmp : src, 0, th, out);
    return out;
  }
  // Horizontal first, over the source rows the vertical pass will read only.
  const int64_t y_first = need_v ? tv.first.front() : 0;
  const int64_t y_last = need_v ? tv.first.back() + tv.count.back() : src.height;
  Image tmp(y_last - y_first, out_w, src.channels);
  horizontal(src, y_first, th, tmp);
  if (!need_v) return tmp;
  Image out(out_h, out_w, src.channels);
  vertical(tmp, y_first, tv, out);
  return out;
}

}  // namespace dbot::data
