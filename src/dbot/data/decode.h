// Image files to 8-bit pixels, with PIL's semantics (torchvision's ImageFolder opens files with PIL and
// calls convert("RGB")), so that dbot sees the pixels a torchvision pipeline sees:
//   JPEG (libjpeg-turbo: islow IDCT, fancy upsampling, as PIL), PNG (libpng), WebP (libwebp), PPM/PGM,
//   BMP (uncompressed 8/24/32-bit). The format comes from the file's magic bytes, not its name.
// Conversion to the model's channels as PIL's convert: alpha dropped (never composited), palette looked
// up, CMYK JPEGs read inverted (Adobe) then C,M,Y,K -> RGB, RGB -> L = (19595 R + 38470 G + 7471 B
// + 2^15) >> 16, 16-bit RGB(A) keeps the high byte, 16-bit grayscale clips at 255 (PIL's I;16 -> L).
// EXIF orientation is ignored, as torchvision's default loader does.
// Every failure (truncated, corrupt, empty, unsupported) throws std::runtime_error starting with the path.
#pragma once

#include <string>
#include <vector>

#include "dbot/data/image.h"

namespace dbot::data {

struct ImageInfo {
  int64_t width = 0, height = 0;
  bool jpeg = false;  // region and DCT-scaled decoding apply
};

// Width and height from the header alone.
ImageInfo read_image_info(const std::vector<uint8_t>& bytes, const std::string& path);

// Rows [y0, y1) and columns [x0, x1) of the image at scale 1/denom (denom 1, 2, 4 or 8; JPEG only, in the
// DCT domain; other formats need denom 1), converted to `channels` (1 or 3). The region is in the scaled
// image's pixels. JPEGs decode only the rows and iMCU columns the region needs.
Image decode_image(const std::vector<uint8_t>& bytes, const std::string& path, int64_t channels, int64_t x0, int64_t y0,
                   int64_t x1, int64_t y1, int denom = 1);

// The same region without copying it out: `image` holds it at columns [x, x + width), rows [y, y + height).
// A JPEG decodes whole iMCU columns and only the region's rows; the other formats decode the whole image.
struct DecodedRegion {
  Image image;
  int64_t x = 0, y = 0, width = 0, height = 0;
  ImageView view() const { return ImageView(image).window(x, y, width, height); }
};
DecodedRegion decode_region(const std::vector<uint8_t>& bytes, const std::string& path, int64_t channels, int64_t x0,
                            int64_t y0, int64_t x1, int64_t y1, int denom = 1);
Image decode_image(const std::vector<uint8_t>& bytes, const std::string& path, int64_t channels);

// PIL's convert("L") / convert("RGB") of 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channel pixels.
Image convert_channels(Image image, int64_t channels);

// Whether this build decodes TIFF (libtiff was found when it was built).
bool tiff_supported();

// The whole file; throws naming the path when it is missing, unreadable or empty.
std::vector<uint8_t> read_bytes(const std::string& path);

}  // namespace dbot::data
