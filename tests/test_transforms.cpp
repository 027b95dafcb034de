// Per-sample transforms against torchvision (tests/reference/make_transforms_golden.py): the
// RandomResizedCrop box rule on the same uniform draws.
#include <fstream>

#include "dbot/data/transforms.h"
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
