// Decoders against PIL (tests/reference/make_image_golden.py: Image.open(f).convert("RGB" / "L"), the
// pixels torchvision's ImageFolder sees), region decoding against the full decode, and bad files.
#include <random>

#include "dbot/data/decode.h"
#include "dbot/data/resample.h"
#include "image_util.h"
#include "test_util.h"

using namespace dbot;
using test::contains;
using test::error_of;

namespace {
bool is_jpeg_name(const std::string& f) { return f.size() > 4 && f.substr(f.size() - 4) == ".jpg"; }
// JPEG decoders of different libjpeg-turbo versions may differ by 1; observed: 0 (2.1.5 here vs Pillow's 3.2.0).
int tolerance(const std::string& f) { return is_jpeg_name(f) ? 1 : 0; }
}  // namespace

TEST(Decode, MatchesPilConvertOnEveryTestImage) {
  int checked = 0, expected_checks = 0;
  for (const auto& c : test::image_golden().at("images")) {
    if (!c.contains("rgb")) continue;
    const std::string file = c["file"], path = test::test_image(file);
    expected_checks += 2;
    if (file.find(".tif") != std::string::npos && !data::tiff_supported()) {
      EXPECT_TRUE(contains(error_of([&] { data::decode_image(data::read_bytes(path), path, 3); }), "no TIFF support"));
      expected_checks -= 2;
      continue;
    }
    const auto bytes = data::read_bytes(path);
    const auto info = data::read_image_info(bytes, path);
    EXPECT_EQ(info.width, c["width"].get<int64_t>()) << file;
    EXPECT_EQ(info.height, c["height"].get<int64_t>()) << file;
    for (const int ch : {3, 1}) {
      const auto img = data::decode_image(bytes, path, ch);
      const auto expected = test::base64(c[ch == 3 ? "rgb" : "l"]);
      const int diff = test::max_abs_diff(img.pixels, expected);
      EXPECT_GE(diff, 0) << file << ": size " << img.width << "x" << img.height;
      EXPECT_LE(diff, tolerance(file)) << file << " (PIL mode " << c["mode"] << ") to " << ch << " channel(s)";
      ++checked;
    }
  }
  EXPECT_EQ(checked, expected_checks);
  EXPECT_GE(checked, 2 * 21);
}

TEST(Decode, JpegRegionsEqualTheCropOfTheFullDecode) {
  std::mt19937 rng(3);
  for (const char* name :
       {"baseline.jpg", "progressive.jpg", "subsampling444.jpg", "gray.jpg", "cmyk.jpg", "large.jpg"}) {
    const std::string path = test::test_image(name);
    const auto bytes = data::read_bytes(path);
    const auto full = data::decode_image(bytes, path, 3);
    for (int t = 0; t < 20; ++t) {
      const int64_t x0 = rng() % full.width, y0 = rng() % full.height;
      const int64_t x1 = x0 + 1 + rng() % (full.width - x0), y1 = y0 + 1 + rng() % (full.height - y0);
      const auto region = data::decode_image(bytes, path, 3, x0, y0, x1, y1);
      ASSERT_EQ(region.width, x1 - x0);
      ASSERT_EQ(region.height, y1 - y0);
      int diff = 0;
      for (int64_t y = 0; y < region.height; ++y) {
        for (int64_t i = 0; i < region.width * 3; ++i) {
          diff = std::max(diff, std::abs(int(region.row(y)[i]) - int(full.row(y0 + y)[x0 * 3 + i])));
        }
      }
      EXPECT_EQ(diff, 0) << name << " region x " << x0 << ".." << x1 << " y " << y0 << ".." << y1;
    }
  }
}

TEST(Decode, DctScaledJpegIsCloseToTheResizedFullImage) {
  const std::string path = test::test_image("large.jpg");  // 320 x 240
  const auto bytes = data::read_bytes(path);
  const auto full = data::decode_image(bytes, path, 3);
  for (const int denom : {2, 4, 8}) {
    const int64_t w = (320 + denom - 1) / denom, h = (240 + denom - 1) / denom;
    const auto scaled = data::decode_image(bytes, path, 3, 0, 0, w, h, denom);
    const auto reference = data::resize_bicubic(full, w, h);
    double sum = 0;
    for (size_t i = 0; i < scaled.pixels.size(); ++i) sum += std::abs(int(scaled.pixels[i]) - int(reference.pixels[i]));
    EXPECT_LT(sum / static_cast<double>(scaled.pixels.size()), 4.0) << "1/" << denom;
  }
}

TEST(Decode, BadFilesAreOneLineErrorsNamingTheFile) {
  test::TempDir dir;
  const auto jpeg = data::read_bytes(test::test_image("baseline.jpg"));
  const auto png = data::read_bytes(test::test_image("rgb.png"));
  const auto webp = data::read_bytes(test::test_image("lossless.webp"));
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"truncated.jpg", {jpeg.begin(), jpeg.begin() + static_cast<long>(jpeg.size() * 2 / 3)}, "truncated JPEG"},
      {"header_only.jpg", {jpeg.begin(), jpeg.begin() + 40}, "JPEG"},
      {"truncated.png", {png.begin(), png.begin() + static_cast<long>(png.size() / 2)}, "truncated PNG"},
      {"text.jpg", {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'}, "unrecognised file signature"},
      {"ascii.ppm",
       {'P', '3', ' ', '1', ' ', '1', ' ', '2', '5', '5', ' ', '0', ' ', '0', ' ', '0'},
       "unsupported PNM"},
      {"truncated.webp", {webp.begin(), webp.begin() + static_cast<long>(webp.size() / 2)}, "WebP"},
      {"tiff.tif", {'I', 'I', '*', 0, 8, 0, 0, 0, 1, 2}, "TIFF"},
  };
  for (const auto& c : cases) {
    const std::string path = dir.str() + "/" + c.name;
    test::write_bytes(path, c.bytes);
    const std::string err = error_of([&] { data::decode_image(data::read_bytes(path), path, 3); });
    EXPECT_TRUE(contains(err, path + ": ") && contains(err, c.expect)) << c.name << ": " << err;
    EXPECT_FALSE(contains(err, "\n")) << err;
  }
  test::write_bytes(dir.str() + "/empty.png", {});
  EXPECT_TRUE(contains(error_of([&] { data::read_bytes(dir.str() + "/empty.png"); }), "empty.png: empty file"));
  EXPECT_TRUE(contains(error_of([&] { data::read_bytes(dir.str() + "/missing.png"); }), "missing.png: cannot open"));
}
