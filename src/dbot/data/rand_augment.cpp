#include "dbot/data/rand_augment.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <regex>
#include <stdexcept>

namespace dbot::data {

namespace {

constexpr double kLevelDenom = 10.0;  // timm's _LEVEL_DENOM

const std::vector<std::string> kIncreasing = {"AutoContrast",
                                              "Equalize",
                                              "Invert",
                                              "Rotate",
                                              "PosterizeIncreasing",
                                              "SolarizeIncreasing",
                                              "SolarizeAdd",
                                              "ColorIncreasing",
                                              "ContrastIncreasing",
                                              "BrightnessIncreasing",
                                              "SharpnessIncreasing",
                                              "ShearX",
                                              "ShearY",
                                              "TranslateXRel",
                                              "TranslateYRel"};
const std::vector<std::string> kPlain = {"AutoContrast", "Equalize",    "Invert", "Rotate",        "Posterize",
                                         "Solarize",     "SolarizeAdd", "Color",  "Contrast",      "Brightness",
                                         "Sharpness",    "ShearX",      "ShearY", "TranslateXRel", "TranslateYRel"};

using Lut = std::array<uint8_t, 256>;

void apply_lut(Image& img, const std::vector<Lut>& luts) {  // one table per channel
  const auto C = static_cast<size_t>(img.channels);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = luts[i % C][img.pixels[i]];
}

std::vector<std::array<int64_t, 256>> histograms(const Image& img) {
  std::vector<std::array<int64_t, 256>> h(static_cast<size_t>(img.channels));
  for (auto& x : h) x.fill(0);
  const auto C = static_cast<size_t>(img.channels);
  for (size_t i = 0; i < img.pixels.size(); ++i) ++h[i % C][img.pixels[i]];
  return h;
}

void auto_contrast(Image& img) {  // ImageOps.autocontrast(cutoff=0)
  std::vector<Lut> luts;
  for (const auto& h : histograms(img)) {
    int lo = 0, hi = 255;
    while (lo < 256 && h[static_cast<size_t>(lo)] == 0) ++lo;
    while (hi >= 0 && h[static_cast<size_t>(hi)] == 0) --hi;
    Lut lut;
    for (int i = 0; i < 256; ++i) {
      if (hi <= lo) {
        lut[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
        continue;
      }
      const double scale = 255.0 / (hi - lo), offset = -lo * scale;
      lut[static_cast<size_t>(i)] = static_cast<uint8_t>(std::clamp(static_cast<int>(i * scale + offset), 0, 255));
    }
    luts.push_back(lut);
  }
  apply_lut(img, luts);
}

void equalize(Image& img) {  // ImageOps.equalize
  std::vector<Lut> luts;
  for (const auto& h : histograms(img)) {
    Lut lut;
    for (int i = 0; i < 256; ++i) lut[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    int64_t total = 0, last = 0, nonzero = 0;
    for (const auto v : h) {
      if (v == 0) continue;
      total += v;
      last = v;
      ++nonzero;
    }
    const int64_t step = nonzero <= 1 ? 0 : (total - last) / 255;
    if (step > 0) {
      int64_t n = step / 2;
      for (size_t i = 0; i < 256; ++i) {
        lut[i] = static_cast<uint8_t>(std::min<int64_t>(n / step, 255));
        n += h[i];
      }
    }
    luts.push_back(lut);
  }
  apply_lut(img, luts);
}

void point(Image& img, const std::function<int(int)>& f) {
  Lut lut;
  for (int i = 0; i < 256; ++i) lut[static_cast<size_t>(i)] = static_cast<uint8_t>(std::clamp(f(i), 0, 255));
  apply_lut(img, std::vector<Lut>(static_cast<size_t>(img.channels), lut));
}

// Image.blend(degenerate, img, alpha): Pillow computes in float and truncates (clipping when extrapolating).
void blend_from(Image& img, const Image& degenerate, double alpha_d) {
  const auto alpha = static_cast<float>(alpha_d);
  for (size_t i = 0; i < img.pixels.size(); ++i) {
    const int a = degenerate.pixels[i], b = img.pixels[i];
    const float v = static_cast<float>(a) + alpha * static_cast<float>(b - a);
    img.pixels[i] = v <= 0.0f ? 0 : v >= 255.0f ? 255 : static_cast<uint8_t>(v);
  }
}

uint8_t luma(const uint8_t* rgb) {  // Pillow's RGB -> L (ITU-R 601-2, 16-bit fixed point)
  return static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

Image gray_as(const Image& img, const std::function<uint8_t(int64_t)>& value) {  // an L image widened to img's mode
  Image out(img.height, img.width, img.channels);
  const int64_t n = img.height * img.width;
  for (int64_t p = 0; p < n; ++p) {
    const uint8_t v = value(p);
    for (int64_t c = 0; c < img.channels; ++c) out.pixels[static_cast<size_t>(p * img.channels + c)] = v;
  }
  return out;
}

void color(Image& img, double factor) {  // ImageEnhance.Color: blend with convert("L").convert(mode)
  if (img.channels == 1) return;
  const Image degenerate = gray_as(img, [&](int64_t p) { return luma(&img.pixels[static_cast<size_t>(p * 3)]); });
  blend_from(img, degenerate, factor);
}

void contrast(Image& img, double factor) {  // ImageEnhance.Contrast: blend with the mean of the L image
  const int64_t n = img.height * img.width;
  double sum = 0;
  for (int64_t p = 0; p < n; ++p) {
    sum += img.channels == 1 ? img.pixels[static_cast<size_t>(p)] : luma(&img.pixels[static_cast<size_t>(p * 3)]);
  }
  const auto mean = static_cast<uint8_t>(static_cast<int>(sum / static_cast<double>(n) + 0.5));
  blend_from(img, gray_as(img, [&](int64_t) { return mean; }), factor);
}

void brightness(Image& img, double factor) { blend_from(img, Image(img.height, img.width, img.channels), factor); }

// ImageFilter.SMOOTH (3x3, [1 1 1; 1 5 1; 1 1 1] / 13) as Pillow's filter3x3: border pixels copied, float sums.
Image smooth(const Image& img) {
  Image out = img;
  const int64_t H = img.height, W = img.width, C = img.channels;
  if (H < 3 || W < 3) return out;
  const float k[9] = {1 / 13.f, 1 / 13.f, 1 / 13.f, 1 / 13.f, 5 / 13.f, 1 / 13.f, 1 / 13.f, 1 / 13.f, 1 / 13.f};
  for (int64_t y = 1; y < H - 1; ++y) {
    for (int64_t x = 1; x < W - 1; ++x) {
      for (int64_t c = 0; c < C; ++c) {
        auto at = [&](int64_t yy, int64_t xx) { return static_cast<float>(img.row(yy)[xx * C + c]); };
        float ss = 0;
        for (int dy = -1; dy <= 1; ++dy) {  // rows y+1, y, y-1 against kernel rows 0, 1, 2 (symmetric here)
          for (int dx = -1; dx <= 1; ++dx) ss += at(y - dy, x + dx) * k[(dy + 1) * 3 + (dx + 1)];
        }
        out.row(y)[x * C + c] = ss <= 0 ? 0 : ss >= 255 ? 255 : static_cast<uint8_t>(ss + 0.5f);
      }
    }
  }
  return out;
}

// Pillow's Image.transform(size, AFFINE, a, resample, fillcolor): output pixel (x, y) samples the input at
// (a0 (x + .5) + a1 (y + .5) + a2, a3 (x + .5) + a4 (y + .5) + a5); outside the image it keeps the fill.
void affine(Image& img, const std::array<double, 6>& a, const std::array<uint8_t, 3>& fill, bool bicubic) {
  const int64_t H = img.height, W = img.width, C = img.channels;
  Image out(H, W, C);
  auto cubic = [](double v1, double v2, double v3, double v4, double d) {  // Pillow's BICUBIC (a = -1)
    return v2 + d * (-v1 + v3 + d * (2 * (v1 - v2) + v3 - v4 + d * (-v1 + v2 - v3 + v4)));
  };
  auto px = [&](int64_t y, int64_t x, int64_t c) {
    return static_cast<double>(img.row(y)[std::clamp<int64_t>(x, 0, W - 1) * C + c]);
  };
  for (int64_t y = 0; y < H; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      double xin = a[0] * (x + 0.5) + a[1] * (y + 0.5) + a[2];
      double yin = a[3] * (x + 0.5) + a[4] * (y + 0.5) + a[5];
      uint8_t* o = out.row(y) + x * C;
      if (xin < 0.0 || xin >= static_cast<double>(W) || yin < 0.0 || yin >= static_cast<double>(H)) {
        for (int64_t c = 0; c < C; ++c) o[c] = fill[static_cast<size_t>(c)];
        continue;
      }
      xin -= 0.5;
      yin -= 0.5;
      const auto xf = static_cast<int64_t>(std::floor(xin)), yf = static_cast<int64_t>(std::floor(yin));
      const double dx = xin - static_cast<double>(xf), dy = yin - static_cast<double>(yf);
      for (int64_t c = 0; c < C; ++c) {
        double v;
        if (bicubic) {
          // Rows y-1 .. y+2: the first clipped into the image, the later ones repeat the previous when outside.
          const int64_t y0 = yf - 1;
          double r[4];
          auto row_value = [&](int64_t yy) {
            return cubic(px(yy, xf - 1, c), px(yy, xf, c), px(yy, xf + 1, c), px(yy, xf + 2, c), dx);
          };
          r[0] = row_value(std::clamp<int64_t>(y0, 0, H - 1));
          for (int k = 1; k < 4; ++k) r[k] = (y0 + k >= 0 && y0 + k < H) ? row_value(y0 + k) : r[k - 1];
          v = cubic(r[0], r[1], r[2], r[3], dy);
        } else {  // Pillow's BILINEAR: x taps clipped, the second row only when inside
          const int64_t ya = std::clamp<int64_t>(yf, 0, H - 1);
          const double v1 = px(ya, xf, c) + dx * (px(ya, xf + 1, c) - px(ya, xf, c));
          double v2 = v1;
          if (yf + 1 >= 0 && yf + 1 < H) v2 = px(yf + 1, xf, c) + dx * (px(yf + 1, xf + 1, c) - px(yf + 1, xf, c));
          v = v1 + dy * (v2 - v1);
        }
        o[c] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : static_cast<uint8_t>(v);
      }
    }
  }
  img = std::move(out);
}

void rotate(Image& img, double degrees, const std::array<uint8_t, 3>& fill, bool bicubic) {  // Image.rotate
  double angle = std::fmod(degrees, 360.0);
  if (angle < 0) angle += 360.0;
  if (angle == 0.0) return;
  const double w = static_cast<double>(img.width), h = static_cast<double>(img.height);
  if (angle == 180.0) {
    std::reverse(img.pixels.begin(), img.pixels.end());  // pixels reversed; channel order restored below
    for (size_t i = 0; i + static_cast<size_t>(img.channels) <= img.pixels.size();
         i += static_cast<size_t>(img.channels))
      std::reverse(img.pixels.begin() + static_cast<int64_t>(i),
                   img.pixels.begin() + static_cast<int64_t>(i) + img.channels);
    return;
  }
  const double rad = -angle * M_PI / 180.0;
  auto r15 = [](double v) { return std::round(v * 1e15) / 1e15; };  // Python's round(v, 15)
  std::array<double, 6> m = {r15(std::cos(rad)), r15(std::sin(rad)), 0.0, r15(-std::sin(rad)), r15(std::cos(rad)), 0.0};
  const double cx = w / 2, cy = h / 2;
  m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
  m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
  affine(img, m, fill, bicubic);
}

}  // namespace

RandAugmentConfig parse_rand_augment(const std::string& spec) {
  RandAugmentConfig cfg;
  if (spec.empty() || spec == "none") {
    cfg.num_layers = 0;
    return cfg;
  }
  const std::regex section(R"(^([a-z]+)([0-9].*)$)");
  size_t start = 0;
  bool first = true;
  while (start <= spec.size()) {
    const size_t dash = spec.find('-', start);
    const std::string part = spec.substr(start, dash == std::string::npos ? std::string::npos : dash - start);
    start = dash == std::string::npos ? spec.size() + 1 : dash + 1;
    if (first) {
      if (part != "rand") throw std::invalid_argument("RandAugment spec '" + spec + "' must start with 'rand'");
      first = false;
      continue;
    }
    std::smatch m;
    if (!std::regex_match(part, m, section)) {
      throw std::invalid_argument("RandAugment spec '" + spec + "': section '" + part + "' is not understood");
    }
    const std::string key = m[1];
    const double value = std::stod(m[2]);
    if (key == "m") {
      cfg.magnitude = value;
    } else if (key == "n") {
      cfg.num_layers = static_cast<int64_t>(value);
    } else if (key == "p") {
      cfg.prob = value;
    } else if (key == "mstd") {
      cfg.magnitude_std = value > 100 ? std::numeric_limits<double>::infinity() : value;
    } else if (key == "mmax") {
      cfg.magnitude_max = value;
    } else if (key == "inc") {
      cfg.increasing = value != 0;
    } else {
      throw std::invalid_argument("RandAugment spec '" + spec + "': unknown section '" + part +
                                  "' (m, n, p, mstd, mmax, inc)");
    }
  }
  cfg.ops = cfg.increasing ? kIncreasing : kPlain;
  return cfg;
}

double rand_augment_arg(const std::string& op, double level, bool negate) {
  const double s = negate ? -1.0 : 1.0, f = level / kLevelDenom;
  if (op == "Rotate") return s * f * 30.0;
  if (op == "ShearX" || op == "ShearY") return s * f * 0.3;
  if (op == "TranslateXRel" || op == "TranslateYRel") return s * f * 0.45;
  if (op == "Posterize") return static_cast<int>(f * 4);
  if (op == "PosterizeIncreasing") return 4 - static_cast<int>(f * 4);
  if (op == "Solarize") return static_cast<int>(f * 256);
  if (op == "SolarizeIncreasing") return 256 - static_cast<int>(f * 256);
  if (op == "SolarizeAdd") return std::min(128, static_cast<int>(f * 110));
  if (op == "Color" || op == "Contrast" || op == "Brightness" || op == "Sharpness") return f * 1.8 + 0.1;
  if (op.size() > 10 && op.compare(op.size() - 10, 10, "Increasing") == 0) return std::max(0.1, 1.0 + s * f * 0.9);
  return 0.0;  // AutoContrast, Equalize, Invert
}

void apply_augment_op(Image& img, const std::string& op, double arg, const std::array<uint8_t, 3>& fill, bool bicubic) {
  if (op == "AutoContrast") return auto_contrast(img);
  if (op == "Equalize") return equalize(img);
  if (op == "Invert") return point(img, [](int i) { return 255 - i; });
  if (op == "Rotate") return rotate(img, arg, fill, bicubic);
  if (op == "Posterize" || op == "PosterizeIncreasing") {
    const int bits = static_cast<int>(arg);
    if (bits >= 8) return;
    const int mask = ~((1 << (8 - bits)) - 1);
    return point(img, [mask](int i) { return i & mask; });
  }
  if (op == "Solarize" || op == "SolarizeIncreasing") {
    const int t = static_cast<int>(arg);
    return point(img, [t](int i) { return i < t ? i : 255 - i; });
  }
  if (op == "SolarizeAdd") {
    const int add = static_cast<int>(arg);
    return point(img, [add](int i) { return i < 128 ? std::min(255, i + add) : i; });
  }
  if (op == "Color" || op == "ColorIncreasing") return color(img, arg);
  if (op == "Contrast" || op == "ContrastIncreasing") return contrast(img, arg);
  if (op == "Brightness" || op == "BrightnessIncreasing") return brightness(img, arg);
  if (op == "Sharpness" || op == "SharpnessIncreasing") {
    Image degenerate = smooth(img);
    return blend_from(img, degenerate, arg);
  }
  if (op == "ShearX") return affine(img, {1, arg, 0, 0, 1, 0}, fill, bicubic);
  if (op == "ShearY") return affine(img, {1, 0, 0, arg, 1, 0}, fill, bicubic);
  if (op == "TranslateXRel") return affine(img, {1, 0, arg * static_cast<double>(img.width), 0, 1, 0}, fill, bicubic);
  if (op == "TranslateYRel") return affine(img, {1, 0, 0, 0, 1, arg * static_cast<double>(img.height)}, fill, bicubic);
  throw std::invalid_argument("unknown RandAugment op '" + op + "'");
}

void rand_augment(Image& img, const RandAugmentConfig& cfg, const std::array<uint8_t, 3>& fill, at::Generator& gen) {
  if (cfg.num_layers <= 0 || cfg.ops.empty()) return;
  const auto n_ops = static_cast<int64_t>(cfg.ops.size());
  const auto chosen = at::randint(n_ops, {cfg.num_layers}, gen, at::kLong);  // with replacement, as np.random.choice
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    const auto u = at::rand({3}, gen, at::kDouble);  // apply?, the magnitude's uniform, the sign
    const auto n = at::randn({1}, gen, at::kDouble);
    if (cfg.prob < 1.0 && u[0].item<double>() > cfg.prob) continue;
    double m = cfg.magnitude;
    if (std::isinf(cfg.magnitude_std)) {
      m = u[1].item<double>() * cfg.magnitude;
    } else if (cfg.magnitude_std > 0) {
      m = cfg.magnitude + cfg.magnitude_std * n.item<double>();
    }
    m = std::clamp(m, 0.0, cfg.magnitude_max);
    const auto& op = cfg.ops[static_cast<size_t>(chosen[l].item<int64_t>())];
    apply_augment_op(img, op, rand_augment_arg(op, m, u[2].item<double>() > 0.5), fill);
  }
}

}  // namespace dbot::data
