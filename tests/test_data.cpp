// IDX reading (errors name the file and the problem).
#include "dbot/compat.h"
#include "dbot/data/dataset.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::contains;
using dbot::test::error_of;

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
