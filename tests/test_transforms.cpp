// Per-sample transforms against torchvision: the RandomResizedCrop box rule on the same uniform draws
// (tests/reference/make_transforms_golden.py), the crop + antialiased bicubic resize and the eval transform
// on real files (tests/reference/make_image_golden.py), and PIL's resampler on hand-checked cases.
#include <array>
#include <fstream>
#include <random>

#include "dbot/data/decode.h"
#include "dbot/data/resample.h"
#include "dbot/data/transforms.h"
#include "image_util.h"
#include "test_util.h"

using namespace dbot;

namespace {
const nlohmann::json& golden_transforms() {
  static const nlohmann::json j = [] {
    std::ifstream in(DBOT_TRANSFORMS_JSON);
    if (!in) throw std::runtime_error("cannot open " DBOT_TRANSFORMS_JSON);
    return nlohmann::json::parse(in);
  }();
  return j;
}

}  // namespace

TEST(Transforms, CropBoxFollowsTorchvisionOnTheSameDraws) {
  for (const auto& c : golden_transforms().at("random_resized_crop")) {
    const auto us = c["uniforms"].get<std::vector<double>>();
    size_t next = 0;
    const auto box = data::sample_crop_box(c["h"], c["w"], c["scale"][0], c["scale"][1], 3.0 / 4.0, 4.0 / 3.0,
                                           [&] { return us.at(next++); });
    const auto expected = c["box"].get<std::vector<int64_t>>();
    EXPECT_EQ((std::vector<int64_t>{box.top, box.left, box.height, box.width}), expected)
        << c["h"] << "x" << c["w"] << " scale " << c["scale"];
  }
}

TEST(Transforms, CropBoxHandChecked) {
  // Full-area draw with aspect 1 on a 10x10 image: the whole image, top/left draws pick 0.
  const std::vector<double> us = {1.0 - 1e-12, 0.5, 0.7, 0.3};
  size_t i = 0;
  const auto box = data::sample_crop_box(10, 10, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0, [&] { return us.at(i++); });
  EXPECT_EQ(box.height, 10);
  EXPECT_EQ(box.width, 10);
  EXPECT_EQ(box.top, 0);
  EXPECT_EQ(box.left, 0);
  EXPECT_EQ(i, 4u);
}

TEST(Transforms, SingleDrawCropBoxHandChecked) {  // MAE's linear-probe crop (util/crop.py)
  // 10 x 20, area fraction 0.5 (100 px), aspect 1: 10 x 10; left = floor(0.99 * 11) = 10.
  std::vector<double> us = {0.25, 0.5, 0.5, 0.99};
  size_t i = 0;
  auto box = data::sample_crop_box_single(10, 20, 0.5, 0.5, 3.0 / 4.0, 4.0 / 3.0, [&] { return us.at(i++); });
  EXPECT_EQ(i, 4u);
  EXPECT_EQ(box.height, 10);
  EXPECT_EQ(box.width, 10);
  EXPECT_EQ(box.top, 0);
  EXPECT_EQ(box.left, 10);
  // 10 x 10, whole area, aspect ~4/3: w = round(11.55) = 12 clamped to 10, h = round(8.66) = 9; no retry.
  us = {0.0, 1.0 - 1e-12, 0.5, 0.3};
  i = 0;
  box = data::sample_crop_box_single(10, 10, 1.0, 1.0, 3.0 / 4.0, 4.0 / 3.0, [&] { return us.at(i++); });
  EXPECT_EQ(i, 4u);
  EXPECT_EQ(box.height, 9);
  EXPECT_EQ(box.width, 10);
  EXPECT_EQ(box.top, 1);
  EXPECT_EQ(box.left, 0);
  // torchvision's rule on these draws, repeated: no try fits (12 wide, then 11 high), so the centre crop.
  i = 0;
  const auto tv = data::sample_crop_box(10, 10, 1.0, 1.0, 3.0 / 4.0, 4.0 / 3.0, [&] { return us.at(i++ % 4); });
  EXPECT_EQ(i, 20u);
  EXPECT_EQ(tv.height, 10);
  EXPECT_EQ(tv.width, 10);
}

// torchvision's F.resized_crop(BICUBIC) (+ F.hflip) and Resize + CenterCrop on the test images
// (tests/reference/make_image_golden.py), on dbot's exact path (dct_scale off).
TEST(Transforms, ResizedCropAndEvalMatchTorchvision) {
  int checked = 0, images = 0;
  for (const auto& c : test::image_golden().at("images")) {
    const std::string file = c["file"];
    if (file.find(".tif") != std::string::npos && !data::tiff_supported()) continue;
    ++images;
    data::StoredImage img;
    img.name = test::test_image(file);
    img.bytes = data::read_bytes(img.name);
    const int tol = file.substr(file.size() - 4) == ".jpg" ? 1 : 0;  // JPEG decoder versions: +-1 (observed 0)
    for (const auto& crop : c["crops"]) {
      data::TransformConfig cfg;
      cfg.dct_scale = false;
      cfg.channels = crop["mode"] == "L" ? 1 : 3;
      const auto b = crop["box"].get<std::vector<int64_t>>();
      const int64_t size = crop["size"];
      auto out = data::resized_crop(img, {b[0], b[1], b[2], b[3]}, size, size, cfg);
      if (crop["flip"].get<bool>()) data::flip_horizontal(out);
      EXPECT_LE(test::max_abs_diff(out.pixels, test::base64(crop["out"])), tol)
          << file << " box " << crop["box"] << " flip " << crop["flip"] << " " << crop["mode"];
      ++checked;
    }
    data::TransformConfig cfg;
    cfg.dct_scale = false;
    cfg.size = c["eval"]["size"];
    cfg.crop_pct = c["eval"]["crop_pct"];
    const auto out = data::eval_transform(img, cfg);
    EXPECT_LE(test::max_abs_diff(out.pixels, test::base64(c["eval"]["out"])), tol) << file << " eval";
  }
  EXPECT_EQ(checked, images * 4);
  EXPECT_GE(images, 22);
}

TEST(Transforms, DctScaledCropsStayCloseToTheExactOnes) {
  data::StoredImage img;
  img.name = test::test_image("large.jpg");  // 320 x 240
  img.bytes = data::read_bytes(img.name);
  data::TransformConfig exact, fast;
  exact.dct_scale = false;
  for (const data::CropBox box :
       {data::CropBox{0, 0, 240, 320}, data::CropBox{17, 33, 150, 201}, data::CropBox{5, 100, 200, 190}}) {
    const auto a = data::resized_crop(img, box, 48, 48, exact), b = data::resized_crop(img, box, 48, 48, fast);
    double sum = 0;
    for (size_t i = 0; i < a.pixels.size(); ++i) sum += std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    EXPECT_LT(sum / static_cast<double>(a.pixels.size()), 3.0) << box.left << "," << box.top;
  }
}

TEST(Transforms, TrainTransformUsesTheDrawsAsTorchvision) {
  // The draws that RandomResizedCrop takes (tries, then top/left) and the flip as the last draw.
  data::StoredImage img;
  img.name = test::test_image("rgb.png");  // 32 x 24
  img.bytes = data::read_bytes(img.name);
  data::TransformConfig cfg;
  cfg.size = 12;
  std::vector<double> draws(data::kTrainDraws, 0.0);
  draws[0] = 0.999999, draws[1] = 0.5;  // area ~1, aspect ~1.0 -> a 24 x 24 box (fits), top draw 0, left draw 0
  draws[data::kTrainDraws - 1] = 0.25;  // flip
  size_t next = 0;
  const auto box = data::sample_crop_box(24, 32, cfg.scale_min, cfg.scale_max, cfg.ratio_min, cfg.ratio_max,
                                         [&] { return draws.at(next++); });
  auto expected = data::resized_crop(img, box, 12, 12, cfg);
  data::flip_horizontal(expected);
  EXPECT_EQ(data::train_transform(img, cfg, draws.data()).pixels, expected.pixels);
  draws[data::kTrainDraws - 1] = 0.75;  // no flip
  EXPECT_EQ(data::train_transform(img, cfg, draws.data()).pixels, data::resized_crop(img, box, 12, 12, cfg).pixels);
}

TEST(Resample, ConstantStaysConstantAndSameSizeIsIdentity) {
  data::Image img(7, 9, 3);
  std::fill(img.pixels.begin(), img.pixels.end(), 77);
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{3, 2}, {20, 11}, {9, 30}, {1, 1}}) {
    const auto out = data::resize_bicubic(img, w, h);
    EXPECT_TRUE(std::all_of(out.pixels.begin(), out.pixels.end(), [](uint8_t v) { return v == 77; })) << w << "x" << h;
  }
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 37);
  EXPECT_EQ(data::resize_bicubic(img, 9, 7).pixels, img.pixels);
  EXPECT_THROW(data::resize_bicubic(img, 0, 7), std::invalid_argument);
}

// A window of a larger image resamples as the same pixels copied out (PIL's crop then resize): its edges
// are the image's edges and the pixels beyond them get no weight. Windows touch each side of the buffer,
// so the kernels' reads past a row's end take their padded path too; every channel count, both pass orders.
TEST(Resample, AWindowResamplesAsItsCopy) {
  std::mt19937 rng(5);
  for (int64_t C = 1; C <= 4; ++C) {
    data::Image big(37, 53, C);
    for (auto& v : big.pixels) v = static_cast<uint8_t>(rng());
    for (int t = 0; t < 40; ++t) {
      const int64_t w = 2 + rng() % 40, h = 2 + rng() % 30;
      const int64_t x = t % 4 == 0 ? 0 : (t % 4 == 1 ? big.width - w : rng() % (big.width - w + 1));
      const int64_t y = t % 4 == 2 ? big.height - h : (t % 4 == 3 ? 0 : rng() % (big.height - h + 1));
      const data::ImageView window = data::ImageView(big).window(x, y, w, h);
      const data::Image copy = data::copy_image(window);
      ASSERT_EQ(copy.row(h - 1)[0], big.row(y + h - 1)[x * C]);
      const int64_t ow = 1 + rng() % 30, oh = 1 + rng() % 30;
      const data::ResampleBox box{0.5, 0.25, w - 0.75, h - 0.5};
      EXPECT_EQ(data::resize_bicubic(window, ow, oh).pixels, data::resize_bicubic(copy, ow, oh).pixels)
          << C << " channels, " << w << "x" << h << " at " << x << "," << y << " -> " << ow << "x" << oh;
      EXPECT_EQ(data::resize_bicubic(window, ow, oh, box).pixels, data::resize_bicubic(copy, ow, oh, box).pixels)
          << C << " channels, box, " << w << "x" << h << " at " << x << "," << y;
    }
  }
}

// The flip done by the resampler (the horizontal pass's taps reversed) is the flip of the resize, bit for
// bit, in both pass orders, and when no horizontal pass runs (same width; a plain crop) it flips after.
TEST(Resample, MirroredIsTheFlippedResize) {
  std::mt19937 rng(7);
  for (int64_t C = 1; C <= 4; ++C) {
    data::Image img(41, 29, C);
    for (auto& v : img.pixels) v = static_cast<uint8_t>(rng());
    const std::vector<std::pair<std::array<int64_t, 2>, data::ResampleBox>> cases = {
        {{17, 13}, {0, 0, 29, 41}},    // both shrink, horizontal first
        {{25, 7}, {0, 0, 29, 41}},     // height shrinks 8x more than the width: vertical first
        {{29, 20}, {0, 0, 29, 41}},    // same width, whole rows: no horizontal pass
        {{10, 12}, {3, 5, 13, 17}},    // an integer box of the output's size: a plain crop
        {{40, 50}, {1.5, 2, 20, 39}},  // upscaling a fractional box
    };
    for (const auto& [size, box] : cases) {
      data::Image expected = data::resize_bicubic(img, size[0], size[1], box);
      data::flip_horizontal(expected);
      EXPECT_EQ(data::resize_bicubic(img, size[0], size[1], box, true).pixels, expected.pixels)
          << C << " channels -> " << size[0] << "x" << size[1];
    }
  }
}
