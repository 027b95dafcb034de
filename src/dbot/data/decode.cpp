#include "dbot/data/decode.h"

#include <webp/decode.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "dbot/data/codecs.h"

namespace dbot::data {

namespace {

using codecs::Raw;

bool is_webp(const std::vector<uint8_t>& b) {
  return b.size() >= 12 && std::memcmp(b.data(), "RIFF", 4) == 0 && std::memcmp(b.data() + 8, "WEBP", 4) == 0;
}
bool is_pnm(const std::vector<uint8_t>& b) { return b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7'; }
bool is_bmp(const std::vector<uint8_t>& b) { return b.size() >= 2 && b[0] == 'B' && b[1] == 'M'; }
bool is_tiff(const std::vector<uint8_t>& b) {
  return b.size() >= 4 && (std::memcmp(b.data(), "II*\0", 4) == 0 || std::memcmp(b.data(), "MM\0*", 4) == 0);
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// WebP as PIL opens it: RGB, or RGBA when the file has alpha; RGB decoding yields the same colour values.
Raw decode_webp(const std::vector<uint8_t>& b, const std::string& path) {
  int w = 0, h = 0;
  if (!WebPGetInfo(b.data(), b.size(), &w, &h)) fail(path, "corrupt or truncated WebP data");
  Raw raw;
  raw.image = Image(h, w, 3);
  if (!WebPDecodeRGBInto(b.data(), b.size(), raw.image.pixels.data(), raw.image.pixels.size(), w * 3)) {
    fail(path, "corrupt or truncated WebP data");
  }
  return raw;
}

// Binary PGM (P5) and PPM (P6), maxval 1..65535, as PIL reads them: 16-bit gray as mode I (clipped at 255
// by convert), RGB and other maxvals scaled to 0..255 with rounding.
Raw decode_pnm(const std::vector<uint8_t>& b, const std::string& path, ImageInfo* info_only) {
  const char kind = static_cast<char>(b[1]);
  if (kind != '5' && kind != '6') fail(path, std::string("unsupported PNM variant P") + kind + " (binary P5/P6 only)");
  size_t pos = 2;
  int64_t v[3] = {0, 0, 0};
  for (auto& x : v) {
    while (pos < b.size() && (std::isspace(b[pos]) || b[pos] == '#')) {
      if (b[pos] == '#') {
        while (pos < b.size() && b[pos] != '\n') ++pos;
      } else {
        ++pos;
      }
    }
    if (pos >= b.size() || !std::isdigit(b[pos])) fail(path, "bad PNM header");
    while (pos < b.size() && std::isdigit(b[pos]) && x < (1 << 30)) x = x * 10 + (b[pos++] - '0');
  }
  const int64_t w = v[0], h = v[1], maxval = v[2];
  if (w <= 0 || h <= 0 || maxval <= 0 || maxval > 65535 || pos >= b.size()) fail(path, "bad PNM header");
  if (info_only) {
    *info_only = {w, h, false};
    return {};
  }
  ++pos;  // the single whitespace after maxval
  const int64_t C = kind == '5' ? 1 : 3, bps = maxval > 255 ? 2 : 1;
  if (static_cast<int64_t>(b.size() - pos) < w * h * C * bps) fail(path, "truncated PNM data");
  Raw raw;
  raw.image = Image(h, w, C);
  for (size_t i = 0; i < raw.image.pixels.size(); ++i) {
    const uint8_t* p = &b[pos + i * bps];
    const int64_t s = bps == 2 ? (p[0] << 8 | p[1]) : p[0];
    int64_t out = s;
    if (C == 1 && maxval > 255) {  // PIL: mode "I" (rescaled to 16 bits unless maxval is 65535), then L clips
      out = maxval == 65535 ? s : (s * 65535 + maxval / 2) / maxval;
    } else if (maxval != 255) {
      out = (s * 255 + maxval / 2) / maxval;
    }
    raw.image.pixels[i] = static_cast<uint8_t>(std::min<int64_t>(out, 255));
  }
  return raw;
}

uint32_t le(const std::vector<uint8_t>& b, size_t off, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | b[off + i];
  return v;
}

// Uncompressed BMP: 8-bit palette, 24-bit BGR, 32-bit BGRX (alpha ignored, as convert("RGB") drops it).
Raw decode_bmp(const std::vector<uint8_t>& b, const std::string& path, ImageInfo* info_only) {
  if (b.size() < 54) fail(path, "truncated BMP header");
  const uint32_t offset = le(b, 10, 4), header = le(b, 14, 4);
  if (header < 40) fail(path, "unsupported BMP variant (OS/2 header)");
  const int64_t w = static_cast<int32_t>(le(b, 18, 4)), signed_h = static_cast<int32_t>(le(b, 22, 4));
  const int64_t h = signed_h < 0 ? -signed_h : signed_h;
  const uint32_t bpp = le(b, 28, 2), compression = le(b, 30, 4);
  if (w <= 0 || h <= 0) fail(path, "BMP with an empty image");
  if (info_only) {
    *info_only = {w, h, false};
    return {};
  }
  if ((compression != 0 && !(compression == 3 && bpp == 32)) || (bpp != 8 && bpp != 24 && bpp != 32)) {
    fail(path, "unsupported BMP variant (" + std::to_string(bpp) + "-bit, compression " + std::to_string(compression) +
                   "; uncompressed 8/24/32-bit only)");
  }
  const int64_t stride = ((w * bpp + 31) / 32) * 4;
  if (static_cast<uint64_t>(offset) + static_cast<uint64_t>(stride * h) > b.size()) fail(path, "truncated BMP data");
  const uint32_t colors = bpp == 8 ? (le(b, 46, 4) ? le(b, 46, 4) : 256) : 0;
  if (bpp == 8 && (colors > 256 || 14 + header + colors * 4 > b.size())) fail(path, "bad BMP palette");
  Raw raw;
  raw.image = Image(h, w, 3);
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* src = &b[offset + stride * (signed_h < 0 ? y : h - 1 - y)];
    uint8_t* dst = raw.image.row(y);
    for (int64_t x = 0; x < w; ++x) {
      const uint8_t* p = bpp == 8 ? &b[14 + header + 4 * std::min<uint32_t>(src[x], colors - 1)] : src + x * (bpp / 8);
      dst[3 * x] = p[2], dst[3 * x + 1] = p[1], dst[3 * x + 2] = p[0];
    }
  }
  return raw;
}

Raw decode_other(const std::vector<uint8_t>& b, const std::string& path) {
  if (codecs::is_png(b)) return codecs::decode_png(b, path);
  if (is_webp(b)) return decode_webp(b, path);
  if (is_pnm(b)) return decode_pnm(b, path, nullptr);
  if (is_bmp(b)) return decode_bmp(b, path, nullptr);
#ifdef DBOT_WITH_TIFF
  if (is_tiff(b)) return codecs::decode_tiff(b, path, nullptr);
#else
  if (is_tiff(b)) fail(path, "this build of dbot has no TIFF support (libtiff-dev was missing when it was built)");
#endif
  fail(path, "not a JPEG, PNG, WebP, PPM/PGM or BMP image (unrecognised file signature)");
}

// PIL's convert("L") / convert("RGB") from L, LA, RGB, RGBA, CMYK.
Image to_channels(Raw raw, int64_t channels) {
  Image& in = raw.image;
  const int64_t C = in.channels;
  if (C == channels && !raw.cmyk) return std::move(in);
  Image out(in.height, in.width, channels);
  const int64_t n = in.height * in.width;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = &in.pixels[i * C];
    uint8_t rgb[3];
    if (raw.cmyk) {  // cmyk2rgb: nk - c * nk / 255, with PIL's rounded MULDIV255
      const int nk = 255 - p[3];
      for (int c = 0; c < 3; ++c) {
        const int t = p[c] * nk + 128;
        rgb[c] = static_cast<uint8_t>(std::max(0, nk - (((t >> 8) + t) >> 8)));
      }
    } else if (C <= 2) {
      rgb[0] = rgb[1] = rgb[2] = p[0];
    } else {
      rgb[0] = p[0], rgb[1] = p[1], rgb[2] = p[2];
    }
    if (channels == 3) {
      std::memcpy(&out.pixels[i * 3], rgb, 3);
    } else if (C <= 2 && !raw.cmyk) {
      out.pixels[i] = p[0];
    } else {
      out.pixels[i] = static_cast<uint8_t>((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
    }
  }
  return out;
}

void check_channels(int64_t channels) {
  if (channels != 1 && channels != 3) throw std::invalid_argument("images decode to 1 (L) or 3 (RGB) channels");
}

}  // namespace

ImageInfo read_image_info(const std::vector<uint8_t>& bytes, const std::string& path) {
  if (bytes.empty()) fail(path, "empty file");
  if (codecs::is_jpeg(bytes)) return codecs::jpeg_info(bytes, path);
  if (codecs::is_png(bytes)) return codecs::png_info(bytes, path);
  ImageInfo info;
  if (is_pnm(bytes)) return decode_pnm(bytes, path, &info), info;
  if (is_bmp(bytes)) return decode_bmp(bytes, path, &info), info;
#ifdef DBOT_WITH_TIFF
  if (is_tiff(bytes)) return codecs::decode_tiff(bytes, path, &info), info;
#endif
  if (is_webp(bytes)) {
    int w = 0, h = 0;
    if (!WebPGetInfo(bytes.data(), bytes.size(), &w, &h)) fail(path, "corrupt or truncated WebP data");
    return {w, h, false};
  }
  decode_other(bytes, path);  // throws the format error
  return info;
}

DecodedRegion decode_region(const std::vector<uint8_t>& bytes, const std::string& path, int64_t channels, int64_t x0,
                            int64_t y0, int64_t x1, int64_t y1, int denom) {
  check_channels(channels);
  if (bytes.empty()) fail(path, "empty file");
  if (!(x0 >= 0 && y0 >= 0 && x1 > x0 && y1 > y0)) fail(path, "empty decode region");
  if (codecs::is_jpeg(bytes)) {
    codecs::Raw raw = codecs::decode_jpeg(bytes, path, x0, y0, x1, y1, denom);
    const int64_t x = raw.x;
    return {to_channels(std::move(raw), channels), x, 0, x1 - x0, y1 - y0};
  }
  if (denom != 1) throw std::invalid_argument(path + ": DCT-domain scaling applies to JPEG only");
  Image full = to_channels(decode_other(bytes, path), channels);
  if (x1 > full.width || y1 > full.height) fail(path, "decode region outside the image");
  return {std::move(full), x0, y0, x1 - x0, y1 - y0};
}

Image decode_image(const std::vector<uint8_t>& bytes, const std::string& path, int64_t channels, int64_t x0, int64_t y0,
                   int64_t x1, int64_t y1, int denom) {
  DecodedRegion region = decode_region(bytes, path, channels, x0, y0, x1, y1, denom);
  if (region.x == 0 && region.y == 0 && region.width == region.image.width && region.height == region.image.height)
    return std::move(region.image);
  return copy_image(region.view());
}

Image decode_image(const std::vector<uint8_t>& bytes, const std::string& path, int64_t channels) {
  const ImageInfo info = read_image_info(bytes, path);
  return decode_image(bytes, path, channels, 0, 0, info.width, info.height, 1);
}

Image convert_channels(Image image, int64_t channels) {
  check_channels(channels);
  return to_channels(Raw{std::move(image), false}, channels);
}

bool tiff_supported() {
#ifdef DBOT_WITH_TIFF
  return true;
#else
  return false;
#endif
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, std::string("cannot open (") + std::strerror(errno) + ")");
  const std::streamoff size = in.tellg();
  if (size <= 0) fail(path, "empty file");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size)) fail(path, "read error");
  return bytes;
}

}  // namespace dbot::data
