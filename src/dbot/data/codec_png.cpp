// PNG through libpng, reduced to the 8-bit modes PIL opens PNGs as: palette expanded to RGB (tRNS ignored,
// as convert("RGB") ignores it), 1/2/4-bit gray scaled to 0..255, 16-bit RGB(A) and gray+alpha by their
// high byte, 16-bit gray clipped at 255 (PIL's "I;16" -> "L"), no gamma correction.
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "dbot/data/codecs.h"

namespace dbot::data::codecs {

namespace {

struct Reader {
  const uint8_t* data;
  size_t size, pos;
  char message[256];
};

void on_read(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<Reader*>(png_get_io_ptr(png));
  if (r->size - r->pos < n) png_error(png, "truncated PNG data (premature end of file)");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

void on_error(png_structp png, png_const_charp msg) {
  auto* r = static_cast<Reader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof r->message, "%s", msg);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

struct Job {
  bool header_only;
  int64_t width, height, channels;
  bool gray16;
  uint8_t* (*alloc)(void* ctx, int64_t h, int64_t w, int64_t c, int64_t row_bytes);
  void* ctx;
  png_bytep* rows;
};

// libpng longjmps out of here on errors: no C++ object with a destructor lives in this frame.
bool run(Job* job, Reader* r) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, on_error, on_warning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return false;
  }
  png_set_read_fn(png, r, on_read);
  png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_DEFAULT);
  png_read_info(png, info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, nullptr, nullptr);
  job->width = w;
  job->height = h;
  if (job->header_only) {
    png_destroy_read_struct(&png, &info, nullptr);
    return true;
  }
  job->gray16 = depth == 16 && color == PNG_COLOR_TYPE_GRAY;
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16 && !job->gray16) png_set_strip_16(png);  // high byte
  if (job->gray16) png_set_swap(png);                      // host order to read the 16-bit value
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  job->channels = png_get_channels(png, info);
  const auto row_bytes = static_cast<int64_t>(png_get_rowbytes(png, info));
  uint8_t* base = job->alloc(job->ctx, h, w, job->channels, row_bytes);
  for (png_uint_32 y = 0; y < h; ++y) job->rows[y] = base + y * row_bytes;
  png_read_image(png, job->rows);
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

struct Buffers {
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
};

uint8_t* alloc(void* ctx, int64_t h, int64_t, int64_t, int64_t row_bytes) {
  auto* b = static_cast<Buffers*>(ctx);
  b->pixels.resize(static_cast<size_t>(h * row_bytes));
  return b->pixels.data();
}

Reader make_reader(const std::vector<uint8_t>& bytes) {
  Reader r{};
  r.data = bytes.data();
  r.size = bytes.size();
  return r;
}

}  // namespace

bool is_png(const std::vector<uint8_t>& b) { return b.size() >= 8 && png_sig_cmp(b.data(), 0, 8) == 0; }

ImageInfo png_info(const std::vector<uint8_t>& bytes, const std::string& path) {
  Reader r = make_reader(bytes);
  Job job{};
  job.header_only = true;
  if (!run(&job, &r)) throw std::runtime_error(path + ": bad PNG header (" + r.message + ")");
  return {job.width, job.height, false};
}

Raw decode_png(const std::vector<uint8_t>& bytes, const std::string& path) {
  Reader r = make_reader(bytes);
  // The row table is sized from the header before the decoding pass writes into it.
  const ImageInfo info = png_info(bytes, path);
  Buffers buffers;
  buffers.rows.resize(static_cast<size_t>(info.height));
  Job job{};
  job.alloc = alloc;
  job.ctx = &buffers;
  job.rows = buffers.rows.data();
  if (!run(&job, &r)) throw std::runtime_error(path + ": cannot decode PNG (" + r.message + ")");
  Raw raw;
  raw.image = Image(job.height, job.width, job.channels);
  if (job.gray16) {
    const auto* v = reinterpret_cast<const uint16_t*>(buffers.pixels.data());
    for (size_t i = 0; i < raw.image.pixels.size(); ++i)
      raw.image.pixels[i] = static_cast<uint8_t>(std::min<uint16_t>(v[i], 255));
  } else {
    raw.image.pixels = std::move(buffers.pixels);
  }
  return raw;
}

}  // namespace dbot::data::codecs
