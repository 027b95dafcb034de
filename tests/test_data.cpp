// IDX reading (errors name the file and the problem) and the batched augmentation.
#include "dbot/compat.h"
#include "dbot/data/dataset.h"
#include "dbot/data/loader.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST(Idx, ReadsGzippedAndPlainFiles) {
  test::TempDir dir;
  test::write_idx(dir.str() + "/a.gz", 0x803, {2, 2, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  test::write_idx(dir.str() + "/b", 0x801, {3}, {7, 8, 9});
  auto images = data::read_idx_images(dir.str() + "/a.gz");
  EXPECT_EQ(images.sizes(), at::IntArrayRef({2, 2, 3}));
  EXPECT_EQ(images[1][1][2].item<uint8_t>(), 12);
  auto labels = data::read_idx_labels(dir.str() + "/b");
  EXPECT_EQ(labels.scalar_type(), at::kLong);
  EXPECT_EQ(labels[2].item<int64_t>(), 9);
}

TEST(Idx, BadFilesAreClearErrors) {
  test::TempDir dir;
  const std::string d = dir.str();
  EXPECT_TRUE(contains(error_of([&] { data::read_idx_images(d + "/missing.gz"); }), d + "/missing.gz"));
  test::write_idx(d + "/magic.gz", 0x801, {2}, {1, 2});
  const auto magic = error_of([&] { data::read_idx_images(d + "/magic.gz"); });
  EXPECT_TRUE(contains(magic, "magic.gz") && contains(magic, "bad IDX magic 0x00000801")) << magic;
  test::write_idx(d + "/short.gz", 0x803, {2, 2, 2}, {1, 2, 3});
  const auto shortf = error_of([&] { data::read_idx_images(d + "/short.gz"); });
  EXPECT_TRUE(contains(shortf, "short.gz") && contains(shortf, "truncated")) << shortf;
  // A gzip stream cut in the middle.
  test::write_idx(d + "/full.gz", 0x803, {50, 28, 28}, std::vector<uint8_t>(50 * 28 * 28, 3));
  auto bytes = std::vector<char>();
  {
    std::ifstream in(d + "/full.gz", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(d + "/cut.gz", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  const auto cut = error_of([&] { data::read_idx_images(d + "/cut.gz"); });
  EXPECT_TRUE(contains(cut, "cut.gz") && (contains(cut, "truncated") || contains(cut, "corrupt"))) << cut;
}

TEST(FashionMnist, MissingFolderAndMismatchedLabels) {
  test::TempDir dir;
  const auto missing = error_of([&] { data::load_fashion_mnist(dir.str() + "/nowhere", "train"); });
  EXPECT_TRUE(contains(missing, "nowhere/train-images-idx3-ubyte.gz") && contains(missing, "not found")) << missing;
  test::write_fake_fmnist(dir.str(), 20, 10, 8);
  test::write_idx(dir.str() + "/t10k-labels-idx1-ubyte.gz", 0x801, {9}, std::vector<uint8_t>(9, 1));
  const auto mismatch = error_of([&] { data::load_fashion_mnist(dir.str(), "test"); });
  EXPECT_TRUE(contains(mismatch, "9 labels for 10 images")) << mismatch;
  auto train = data::load_fashion_mnist(dir.str(), "train", 12);
  EXPECT_EQ(train.images.sizes(), at::IntArrayRef({12, 1, 8, 8}));
  EXPECT_EQ(train.num_classes, 10);
}

TEST(Augmentation, FullCropWithoutFlipIsIdentity) {
  auto x = at::rand({4, 1, 8, 8});
  auto gen = compat::make_cpu_generator(1);
  auto y = data::random_resized_crop_flip(x, 1.0, 1.0, false, gen);
  // With scale 1 the crop is the whole image whenever the drawn aspect ratio rounds to a square crop.
  // Aspect ratios other than 1 make w or h exceed 8 and are rejected, so all tries give 8x8 or fail.
  EXPECT_TRUE(test::all_close(y, x, 1e-5, 1e-5));
}

TEST(Augmentation, FlipMirrorsAndCropsStayInRange) {
  auto x = at::arange(8, at::kFloat).repeat({64, 1, 8, 1});  // value = column index
  auto gen = compat::make_cpu_generator(2);
  auto y = data::random_resized_crop_flip(x, 1.0, 1.0, true, gen);
  int flipped = 0;
  for (int64_t b = 0; b < 64; ++b) {
    const bool f = y[b][0][0][0].item<float>() > y[b][0][0][7].item<float>();
    flipped += f;
    EXPECT_TRUE(test::all_close(y[b], f ? x[b].flip({2}) : x[b], 1e-4, 1e-4));
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
  auto z = data::random_resized_crop_flip(x, 0.2, 0.5, false, gen);
  EXPECT_GE(z.min().item<float>(), -0.5f);  // bicubic overshoot is small; values come from inside the image
  EXPECT_LE(z.max().item<float>(), 7.5f);
}
