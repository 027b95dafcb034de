// JPEG through libjpeg-turbo's libjpeg API, configured as PIL configures it (islow IDCT, fancy
// upsampling), so the pixels equal PIL's up to the libjpeg-turbo version. Only the rows and iMCU columns
// of the requested region are decoded (jpeg_crop_scanline, jpeg_skip_scanlines, early abort), optionally
// at 1/2, 1/4 or 1/8 scale in the DCT domain; the rows keep the iMCU columns around the region.
// clang-format off
#include <cstdio>  // jpeglib.h needs FILE and size_t declared first
#include <jpeglib.h>
#include <jerror.h>
// clang-format on

#include <algorithm>
#include <csetjmp>
#include <stdexcept>

#include "dbot/data/codecs.h"

namespace dbot::data::codecs {

namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  cinfo->err->format_message(cinfo, err->message);
  longjmp(err->jump, 1);
}

void on_message(j_common_ptr cinfo, int level) {
  // A premature end of data is a truncated file (PIL refuses it too); other warnings are tolerated as PIL
  // tolerates them.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) reinterpret_cast<ErrorManager*>(cinfo->err)->truncated = true;
}

// Everything libjpeg may longjmp out of lives in this plain function: no C++ object with a destructor is
// created after setjmp. Returns false with err->message set on failure.
struct Job {
  const uint8_t* data;
  size_t size;
  int64_t x0, y0, x1, y1;  // region, scaled pixels
  int denom;
  bool header_only;
  // out
  int64_t width, height, components;
  int64_t x_in_rows;  // the region's first column in the decoded rows
  bool cmyk;
  uint8_t* (*alloc)(void* ctx, int64_t h, int64_t w, int64_t c);
  void* ctx;
};

bool run(Job* job, ErrorManager* err) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->pub);
  err->pub.error_exit = on_error;
  err->pub.emit_message = on_message;
  err->truncated = false;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, job->data, static_cast<unsigned long>(job->size));
  jpeg_read_header(&cinfo, TRUE);
  job->width = cinfo.image_width;
  job->height = cinfo.image_height;
  job->cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  if (job->header_only) {
    jpeg_destroy_decompress(&cinfo);
    return true;
  }
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : (job->cmyk ? JCS_CMYK : JCS_RGB);
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  cinfo.scale_num = 1;
  cinfo.scale_denom = static_cast<unsigned>(job->denom);
  jpeg_start_decompress(&cinfo);
  const int64_t C = cinfo.output_components;
  job->components = C;
  if (job->x1 > cinfo.output_width || job->y1 > cinfo.output_height) {
    std::snprintf(err->message, sizeof err->message, "region outside the %ux%u image", cinfo.output_width,
                  cinfo.output_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // One iMCU column beyond each side of the region, so that fancy upsampling sees the same neighbours as
  // in a full decode (a crop that ends at the region replicates its edge columns instead).
  const int64_t imcu = static_cast<int64_t>(cinfo.max_h_samp_factor) * cinfo.min_DCT_scaled_size;
  const int64_t x_begin = std::max<int64_t>(0, job->x0 - imcu);
  const int64_t x_end = std::min<int64_t>(cinfo.output_width, job->x1 + imcu);
  JDIMENSION xoff = static_cast<JDIMENSION>(x_begin), cw = static_cast<JDIMENSION>(x_end - x_begin);
  if (cw < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoff, &cw);  // widens to iMCU boundaries
  job->x_in_rows = job->x0 - xoff;
  if (job->y0 > 0) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(job->y0));
  // Rows go straight into the output, iMCU columns and all: the caller reads the region through a view, so
  // no row is copied again (a per-row copy out of a line buffer was ~6% of decode + crop + resize).
  const int64_t row_bytes = static_cast<int64_t>(cinfo.output_width) * C;
  uint8_t* out = job->alloc(job->ctx, job->y1 - job->y0, cinfo.output_width, C);
  for (int64_t y = job->y0; y < job->y1; ++y) {
    JSAMPROW row = out + (y - job->y0) * row_bytes;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  if (err->truncated) {
    std::snprintf(err->message, sizeof err->message, "the image data ends early");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_abort_decompress(&cinfo);  // the rows below the region are never decoded
  jpeg_destroy_decompress(&cinfo);
  return true;
}

uint8_t* alloc(void* ctx, int64_t h, int64_t w, int64_t c) {
  auto* image = static_cast<Image*>(ctx);
  *image = Image(h, w, c);
  return image->pixels.data();
}

// The message for a failed run: a file cut short says so whatever libjpeg stumbled on next.
std::string failure(const ErrorManager& err, const char* what) {
  if (err.truncated) return std::string("truncated JPEG data (premature end of file: ") + err.message + ")";
  return std::string(what) + " (" + err.message + ")";
}

Job make_job(const std::vector<uint8_t>& bytes) {
  Job job{};
  job.data = bytes.data();
  job.size = bytes.size();
  job.denom = 1;
  return job;
}

}  // namespace

bool is_jpeg(const std::vector<uint8_t>& b) { return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }

ImageInfo jpeg_info(const std::vector<uint8_t>& bytes, const std::string& path) {
  Job job = make_job(bytes);
  job.header_only = true;
  ErrorManager err;
  if (!run(&job, &err)) throw std::runtime_error(path + ": " + failure(err, "bad JPEG header"));
  return {job.width, job.height, true};
}

Raw decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& path, int64_t x0, int64_t y0, int64_t x1,
                int64_t y1, int denom) {
  Raw raw;
  Job job = make_job(bytes);
  job.x0 = x0, job.y0 = y0, job.x1 = x1, job.y1 = y1, job.denom = denom;
  job.alloc = alloc;
  job.ctx = &raw.image;
  ErrorManager err;
  if (!run(&job, &err)) throw std::runtime_error(path + ": " + failure(err, "cannot decode JPEG"));
  raw.cmyk = job.cmyk;
  raw.x = job.x_in_rows;
  if (raw.cmyk) {  // PIL reads every CMYK JPEG as Adobe's inverted CMYK ("CMYK;I")
    for (auto& v : raw.image.pixels) v = static_cast<uint8_t>(255 - v);
  }
  return raw;
}

}  // namespace dbot::data::codecs
