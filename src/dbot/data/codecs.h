// Internal to data/decode.cpp: the per-format decoders. Each returns the file's pixels in the PIL mode it
// opens as (channels 1 = L, 2 = LA, 3 = RGB, 4 = RGBA or, with cmyk set, CMYK as PIL holds it) and throws
// std::runtime_error("<path>: ...") on bad data.
#pragma once

#include <string>
#include <vector>

#include "dbot/data/decode.h"

namespace dbot::data::codecs {

struct Raw {
  Image image;
  bool cmyk = false;
  int64_t x = 0;  // decode_jpeg: the region's first column in image (whole iMCU columns are decoded)
};

bool is_jpeg(const std::vector<uint8_t>& b);
ImageInfo jpeg_info(const std::vector<uint8_t>& bytes, const std::string& path);
// Rows [y0, y1) of the image scaled by 1/denom, columns [x0, x1) and the iMCU columns around them.
Raw decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& path, int64_t x0, int64_t y0, int64_t x1,
                int64_t y1, int denom);

bool is_png(const std::vector<uint8_t>& b);
ImageInfo png_info(const std::vector<uint8_t>& bytes, const std::string& path);
Raw decode_png(const std::vector<uint8_t>& bytes, const std::string& path);

#ifdef DBOT_WITH_TIFF
// info_only: read the header, fill it and return nothing.
Raw decode_tiff(const std::vector<uint8_t>& bytes, const std::string& path, ImageInfo* info_only);
#endif

}  // namespace dbot::data::codecs
