// RandAugment (data/rand_augment.h) against timm's ops on Pillow (tests/reference/make_randaugment_golden.py):
// every op of the increasing set on an RGB and an L image, the level -> argument maps, the spec parser, and
// the draws (deterministic per generator, magnitude noise, op choice).
#include <gtest/gtest.h>

#include "dbot/core/rng.h"
#include "dbot/data/rand_augment.h"
#include "test_util.h"

using namespace dbot;

namespace {
const nlohmann::json& ra_golden() { return test::json_file(DBOT_RANDAUGMENT_JSON); }
data::Image golden_image(const std::string& mode) {
  const auto& g = ra_golden();
  data::Image img(g.at("height"), g.at("width"), mode == "RGB" ? 3 : 1);
  const auto px = g.at(mode == "RGB" ? "image_rgb" : "image_l").get<std::vector<int>>();
  std::copy(px.begin(), px.end(), img.pixels.begin());
  return img;
}
}  // namespace

TEST(RandAugment, OpsMatchTimmOnPillow) {
  int exact = 0, total = 0;
  for (const auto& c : ra_golden().at("cases")) {
    const std::string op = c.at("op"), mode = c.at("mode");
    const double arg = c.at("args").empty() ? 0.0 : c.at("args")[0].get<double>();
    auto img = golden_image(mode);
    data::apply_augment_op(img, op, arg,
                           mode == "RGB" ? std::array<uint8_t, 3>{124, 116, 104} : std::array<uint8_t, 3>{73, 73, 73});
    const auto expected = c.at("out").get<std::vector<int>>();
    ASSERT_EQ(img.pixels.size(), expected.size()) << op;
    int worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) worst = std::max(worst, std::abs(img.pixels[i] - expected[i]));
    ++total;
    exact += worst == 0;
    EXPECT_EQ(worst, 0) << op << "(" << arg << ") on " << mode;
  }
  EXPECT_EQ(total, 48);  // 24 ops x {RGB, L}
  EXPECT_EQ(exact, total);
}

TEST(RandAugment, LevelsMatchTimm) {
  for (const auto& [op, rows] : ra_golden().at("levels").items()) {
    const double ms[] = {0.0, 4.5, 9.0, 10.0};
    for (size_t i = 0; i < 4; ++i) {
      if (rows[i].empty()) continue;
      EXPECT_NEAR(data::rand_augment_arg(op, ms[i], false), rows[i][0].get<double>(), 1e-12) << op << " at " << ms[i];
    }
  }
  EXPECT_NEAR(data::rand_augment_arg("Rotate", 9, true), -27.0, 1e-12);
  EXPECT_NEAR(data::rand_augment_arg("ColorIncreasing", 9, true), 0.19, 1e-12);
  EXPECT_NEAR(data::rand_augment_arg("ColorIncreasing", 10, true), 0.1, 1e-12);  // kept >= 0.1
}

TEST(RandAugment, ParsesTimmSpecs) {
  const auto c = data::parse_rand_augment("rand-m9-mstd0.5-inc1");
  EXPECT_EQ(c.magnitude, 9);
  EXPECT_EQ(c.magnitude_std, 0.5);
  EXPECT_TRUE(c.increasing);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.prob, 0.5);
  ASSERT_EQ(c.ops.size(), 15u);
  EXPECT_EQ(c.ops[4], "PosterizeIncreasing");
  EXPECT_EQ(data::parse_rand_augment("rand-n3-m7-p0.8-mmax12").num_layers, 3);
  EXPECT_EQ(data::parse_rand_augment("none").num_layers, 0);
  EXPECT_NE(test::error_of([] { data::parse_rand_augment("auto-m9"); }).find("must start with 'rand'"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { data::parse_rand_augment("rand-q9"); }).find("unknown section 'q9'"),
            std::string::npos);
}

TEST(RandAugment, DrawsAreKeyedAndChangeTheImage) {
  const auto cfg = data::parse_rand_augment("rand-m9-mstd0.5-inc1");
  int changed = 0;
  for (uint64_t i = 0; i < 20; ++i) {
    auto a = golden_image("RGB"), b = golden_image("RGB");
    auto g1 = core::derive_generator(1, core::RngPurpose::kAugment, i), g2 = g1.clone();
    data::rand_augment(a, cfg, {124, 116, 104}, g1);
    data::rand_augment(b, cfg, {124, 116, 104}, g2);
    EXPECT_EQ(a.pixels, b.pixels);  // the same generator state, the same image
    changed += a.pixels != golden_image("RGB").pixels;
  }
  EXPECT_GT(changed, 10);  // P(no op applied) = 1/4 per image
  EXPECT_LT(changed, 20);
}
