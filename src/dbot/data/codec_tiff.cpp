// TIFF through libtiff's RGBA interface (any bit depth, photometric or compression libtiff reads, first
// page, top-left orientation): RGB, or L for one-sample grayscale. Unlike PIL, libtiff premultiplies an
// unassociated alpha channel and reduces 16-bit samples to 8 by scaling; TIFF is not checked against PIL.
// Built only when CMake finds libtiff (DBOT_WITH_TIFF).
#include <tiffio.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "dbot/data/codecs.h"

namespace dbot::data::codecs {

namespace {

struct Memory {
  const uint8_t* data;
  toff_t size, pos;
  char error[256];
};

tmsize_t on_read(thandle_t h, void* buf, tmsize_t n) {
  auto* m = static_cast<Memory*>(h);
  const toff_t left = m->pos < m->size ? m->size - m->pos : 0;
  const auto count = static_cast<tmsize_t>(std::min<toff_t>(left, static_cast<toff_t>(n)));
  std::memcpy(buf, m->data + m->pos, static_cast<size_t>(count));
  m->pos += static_cast<toff_t>(count);
  return count;
}
tmsize_t on_write(thandle_t, void*, tmsize_t) { return 0; }
toff_t on_seek(thandle_t h, toff_t off, int whence) {
  auto* m = static_cast<Memory*>(h);
  const toff_t base = whence == SEEK_SET ? 0 : (whence == SEEK_CUR ? m->pos : m->size);
  m->pos = base + off;
  return m->pos;
}
int on_close(thandle_t) { return 0; }
toff_t on_size(thandle_t h) { return static_cast<Memory*>(h)->size; }
int on_map(thandle_t h, void** base, toff_t* size) {
  auto* m = static_cast<Memory*>(h);
  *base = const_cast<uint8_t*>(m->data);
  *size = m->size;
  return 1;
}
void on_unmap(thandle_t, void*, toff_t) {}
int on_error(TIFF*, void* user, const char*, const char* fmt, va_list ap) {
  auto* m = static_cast<Memory*>(user);
  if (m->error[0] == '\0') std::vsnprintf(m->error, sizeof m->error, fmt, ap);
  return 1;
}
int on_warning(TIFF*, void*, const char*, const char*, va_list) { return 1; }

}  // namespace

Raw decode_tiff(const std::vector<uint8_t>& bytes, const std::string& path, ImageInfo* info_only) {
  Memory m{bytes.data(), bytes.size(), 0, {}};
  TIFFOpenOptions* opts = TIFFOpenOptionsAlloc();
  TIFFOpenOptionsSetErrorHandlerExtR(opts, on_error, &m);
  TIFFOpenOptionsSetWarningHandlerExtR(opts, on_warning, nullptr);
  TIFF* tif =
      TIFFClientOpenExt(path.c_str(), "rm", &m, on_read, on_write, on_seek, on_close, on_size, on_map, on_unmap, opts);
  TIFFOpenOptionsFree(opts);
  if (!tif) throw std::runtime_error(path + ": cannot read TIFF (" + m.error + ")");
  uint32_t w = 0, h = 0;
  uint16_t spp = 1;
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
  if (w == 0 || h == 0) {
    TIFFClose(tif);
    throw std::runtime_error(path + ": TIFF with an empty image");
  }
  if (info_only) {
    TIFFClose(tif);
    *info_only = {w, h, false};
    return {};
  }
  std::vector<uint32_t> rgba(static_cast<size_t>(w) * h);
  const int ok = TIFFReadRGBAImageOriented(tif, w, h, rgba.data(), ORIENTATION_TOPLEFT, 1);
  TIFFClose(tif);
  if (!ok)
    throw std::runtime_error(path + ": cannot decode TIFF (" + (m.error[0] ? m.error : "unsupported layout") + ")");
  Raw raw;
  const int64_t C = spp <= 2 ? 1 : 3;
  raw.image = Image(h, w, C);
  for (size_t i = 0; i < rgba.size(); ++i) {
    raw.image.pixels[i * C] = static_cast<uint8_t>(TIFFGetR(rgba[i]));
    if (C == 3) {
      raw.image.pixels[i * 3 + 1] = static_cast<uint8_t>(TIFFGetG(rgba[i]));
      raw.image.pixels[i * 3 + 2] = static_cast<uint8_t>(TIFFGetB(rgba[i]));
    }
  }
  return raw;
}

}  // namespace dbot::data::codecs
