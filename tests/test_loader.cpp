// Image sources (ImageFolder / folder / filelist scans as torchvision lists them, the scan cache, bad-input
// errors) and the threaded Loader (batches independent of the worker count, exact mid-epoch resume, bad
// files stopping the run or replaced with data.skip_bad).
#include <filesystem>

#include "dbot/data/decode.h"
#include "dbot/data/loader.h"
#include "dbot/data/scan.h"
#include "dbot/data/source.h"
#include "image_util.h"
#include "test_util.h"

using namespace dbot;
using test::contains;
using test::error_of;
namespace fs = std::filesystem;

namespace {

// An 20x16 RGB image whose content identifies (class, k).
data::Image pattern(int cls, int k) {
  data::Image img(16, 20, 3);
  for (int64_t y = 0; y < 16; ++y)
    for (int64_t x = 0; x < 20; ++x)
      for (int64_t c = 0; c < 3; ++c)
        img.row(y)[x * 3 + c] = static_cast<uint8_t>((cls * 80 + k * 13 + x * 5 + y * 3 + c * 40) % 256);
  return img;
}

// root/{a_cls,b_cls,c_cls}: PNG and JPEG files, a nested folder, an upper-case extension, a non-image.
void write_image_folder(const std::string& root, int per_class) {
  const char* classes[] = {"b_cls", "a_cls", "c_cls"};  // created out of order: labels follow sorted names
  for (int c = 0; c < 3; ++c) {
    const std::string dir = root + "/" + classes[c];
    fs::create_directories(dir + "/nested");
    for (int k = 0; k < per_class; ++k) {
      const std::string stem = dir + (k % 3 == 2 ? "/nested/img" : "/img") + std::to_string(k);
      if (k % 2 == 0) {
        test::write_png(stem + (k == 0 ? ".PNG" : ".png"), pattern(c, k));
      } else {
        test::write_jpeg(stem + ".jpg", pattern(c, k));
      }
    }
    test::write_bytes(dir + "/notes.txt", {'x'});
  }
}

data::DataConfig folder_config(const std::string& path, const std::string& cache_dir) {
  data::DataConfig d;
  d.format = "imagefolder";
  d.path = path;
  d.cache_dir = cache_dir;
  d.mean = {0.5, 0.5, 0.5};
  d.std = {0.25, 0.25, 0.25};
  return d;
}

std::vector<at::Tensor> epoch_batches(data::Loader& loader, int64_t epoch, int64_t first = 0) {
  loader.start_epoch(epoch, first);
  std::vector<at::Tensor> out;
  for (int64_t it = first; it < loader.iters_per_epoch(); ++it) out.push_back(loader.next().images);
  return out;
}

}  // namespace

TEST(Sources, ImageFolderListsAsTorchvision) {
  test::TempDir dir, cache;
  write_image_folder(dir.str() + "/train", 5);
  const auto list = data::scan_folder(dir.str() + "/train", "imagefolder", false, cache.str());
  EXPECT_EQ(list.classes, (std::vector<std::string>{"a_cls", "b_cls", "c_cls"}));
  // sorted(os.walk()): a class folder's own files by name, then its subfolders'.
  const std::vector<std::string> a = {"a_cls/img0.PNG", "a_cls/img1.jpg", "a_cls/img3.jpg", "a_cls/img4.png",
                                      "a_cls/nested/img2.png"};
  ASSERT_EQ(list.files.size(), 15u);
  EXPECT_EQ(std::vector<std::string>(list.files.begin(), list.files.begin() + 5), a);
  EXPECT_EQ(list.labels, (std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2}));
  const auto src = data::make_file_source(list);
  EXPECT_EQ(src->num_classes(), 3);
  EXPECT_EQ(src->label(7), 1);
  EXPECT_TRUE(data::has_image_extension("x.WebP") && !data::has_image_extension("x.gif"));
}

TEST(Sources, TheScanCacheIsReusedUntilAFolderChanges) {
  test::TempDir dir, cache;
  const std::string root = dir.str() + "/train";
  write_image_folder(root, 3);
  const auto first = data::scan_folder(root, "imagefolder", false, cache.str());
  EXPECT_TRUE(contains(first.cache_note, "cached in " + cache.str())) << first.cache_note;
  const auto second = data::scan_folder(root, "imagefolder", false, cache.str());
  EXPECT_TRUE(contains(second.cache_note, "from the cache")) << second.cache_note;
  EXPECT_EQ(second.files, first.files);
  EXPECT_EQ(second.labels, first.labels);
  test::write_png(root + "/c_cls/nested/new.png", pattern(2, 9));  // changes nested/'s mtime
  const auto third = data::scan_folder(root, "imagefolder", false, cache.str());
  EXPECT_FALSE(contains(third.cache_note, "from the cache")) << third.cache_note;
  EXPECT_EQ(third.files.size(), first.files.size() + 1);
  EXPECT_EQ(data::scan_folder(root, "imagefolder", false, "none").cache_note,
            "file list not cached (data.cache_dir: none)");
}

TEST(Sources, BadFoldersAndListsAreOneLineErrors) {
  test::TempDir dir;
  const std::string d = dir.str();
  EXPECT_TRUE(contains(error_of([&] { data::scan_folder(d + "/nowhere", "imagefolder", false, "none"); }),
                       "nowhere: no such directory"));
  fs::create_directories(d + "/empty");
  EXPECT_TRUE(contains(error_of([&] { data::scan_folder(d + "/empty", "imagefolder", false, "none"); }),
                       "empty: no class folders"));
  EXPECT_TRUE(
      contains(error_of([&] { data::scan_folder(d + "/empty", "folder", false, "none"); }), "empty: no images"));
  fs::create_directories(d + "/classes/full");
  fs::create_directories(d + "/classes/hollow");
  test::write_png(d + "/classes/full/a.png", pattern(0, 0));
  EXPECT_TRUE(contains(error_of([&] { data::scan_folder(d + "/classes", "imagefolder", false, "none"); }),
                       "classes/hollow: class folder without images"));
  test::write_png(d + "/classes/hollow/b.png", pattern(1, 0));
  test::write_bytes(d + "/classes/hollow/zero.jpg", {});
  EXPECT_TRUE(contains(error_of([&] { data::scan_folder(d + "/classes", "imagefolder", false, "none"); }),
                       "hollow/zero.jpg: empty file"));
  const auto skipped = data::scan_folder(d + "/classes", "imagefolder", true, "none");
  EXPECT_EQ(skipped.files.size(), 2u);
  EXPECT_EQ(skipped.skipped_empty, 1);
  // File lists: paths relative to the list, optional labels, errors with the line number.
  test::write_bytes(d + "/list.txt", {});
  { std::ofstream(d + "/list.txt") << "classes/full/a.png 0\n# a comment\n\nclasses/hollow/b.png 1\n"; }
  const auto list = data::read_filelist(d + "/list.txt", false);
  EXPECT_EQ(list.files, (std::vector<std::string>{"classes/full/a.png", "classes/hollow/b.png"}));
  EXPECT_EQ(list.labels, (std::vector<int64_t>{0, 1}));
  { std::ofstream(d + "/bad.txt") << "classes/full/a.png\nclasses/missing.png\n"; }
  const auto missing = error_of([&] { data::read_filelist(d + "/bad.txt", false); });
  EXPECT_TRUE(contains(missing, "bad.txt:2: no such image file") && contains(missing, "missing.png")) << missing;
  { std::ofstream(d + "/mixed.txt") << "classes/full/a.png 3\nclasses/hollow/b.png\n"; }
  EXPECT_TRUE(contains(error_of([&] { data::read_filelist(d + "/mixed.txt", false); }), "some lines have a label"));
  data::DataConfig cfg;
  cfg.format = "filelist";
  cfg.path = d + "/list.txt";
  EXPECT_EQ(data::open_source(cfg, "eval_val"), nullptr);  // unlabeled pretraining data, no data.eval_path
  cfg.format = "tfrecord";
  EXPECT_TRUE(contains(error_of([&] { data::open_source(cfg, "train"); }), "data.format: unknown format 'tfrecord'"));
}

TEST(Loader, BatchesDoNotDependOnTheWorkerCountAndResumeExactly) {
  test::TempDir dir, cache;
  write_image_folder(dir.str() + "/train", 6);  // 18 images
  const auto cfg = folder_config(dir.str(), cache.str());
  const auto src = data::open_source(cfg, "train");
  const auto tf = data::transform_config(cfg, 12, 3);
  std::vector<std::vector<at::Tensor>> runs;
  for (const int workers : {1, 2, 4}) {
    auto lc = data::loader_config(cfg, 4, /*train=*/true, 7);
    lc.workers = workers;
    data::Loader loader(src, tf, lc);
    EXPECT_EQ(loader.iters_per_epoch(), 4);  // drop_last
    auto batches = epoch_batches(loader, 0);
    loader.start_epoch(1);  // ahead, as the trainer does before a checkpoint; epoch_batches' start is a no-op
    const auto again = epoch_batches(loader, 1);
    EXPECT_FALSE(at::equal(batches[0], again[0]));  // a new permutation and new draws each epoch
    batches.insert(batches.end(), again.begin(), again.end());
    const auto resumed = epoch_batches(loader, 1, 2);  // mid-epoch resume: batches 2, 3 of epoch 1
    EXPECT_TRUE(at::equal(resumed[0], again[2]) && at::equal(resumed[1], again[3]));
    runs.push_back(batches);
  }
  for (size_t r = 1; r < runs.size(); ++r)
    for (size_t b = 0; b < runs[0].size(); ++b)
      EXPECT_TRUE(at::equal(runs[r][b], runs[0][b])) << "run " << r << " batch " << b;
  EXPECT_EQ(runs[0][0].sizes(), at::IntArrayRef({4, 3, 12, 12}));
  EXPECT_EQ(runs[0][0].scalar_type(), at::kByte);
}

TEST(Loader, RandAugmentDrawsArePerSampleWhateverTheWorkers) {
  test::TempDir dir, cache;
  write_image_folder(dir.str() + "/train", 6);
  const auto cfg = folder_config(dir.str(), cache.str());
  const auto src = data::open_source(cfg, "train");
  const auto plain = data::transform_config(cfg, 12, 3);
  auto ra = plain;
  ra.rand_augment = data::parse_rand_augment("rand-m9-mstd0.5-inc1");
  auto batches = [&](const data::TransformConfig& tf, int workers) {
    auto lc = data::loader_config(cfg, 4, /*train=*/true, 7);
    lc.workers = workers;
    data::Loader loader(src, tf, lc);
    return epoch_batches(loader, 0);
  };
  const auto one = batches(ra, 1), four = batches(ra, 4), off = batches(plain, 2);
  bool differs = false;
  for (size_t b = 0; b < one.size(); ++b) {
    EXPECT_TRUE(at::equal(one[b], four[b])) << "batch " << b;
    differs = differs || !at::equal(one[b], off[b]);  // the crop and flip draws are the same; RandAugment adds
  }
  EXPECT_TRUE(differs);
}

TEST(Loader, RanksTakeInterleavedShardsOfTheOneRankBatchWithTheSamplersPadding) {
  test::TempDir dir, cache;
  write_image_folder(dir.str() + "/train", 6);  // 18 images
  const auto cfg = folder_config(dir.str(), cache.str());
  const auto src = data::open_source(cfg, "train");
  const auto tf = data::transform_config(cfg, 12, 3);
  auto batches = [&](int64_t batch, int64_t rank, int64_t world) {
    auto lc = data::loader_config(cfg, batch, /*train=*/true, 7);
    lc.rank = rank;
    lc.world_size = world;
    data::Loader loader(src, tf, lc);
    return epoch_batches(loader, 1);
  };
  // 2 ranks x 2 = 1 rank x 4: rank r's sample k of batch i is the one-rank batch's sample 2k + r.
  const auto whole = batches(4, 0, 1);
  const auto r0 = batches(2, 0, 2), r1 = batches(2, 1, 2);
  ASSERT_EQ(r0.size(), whole.size());  // ceil(18 / 2) / 2 = 4 = 18 / 4
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_TRUE(at::equal(r0[i], whole[i].slice(0, 0, 4, 2))) << i;
    EXPECT_TRUE(at::equal(r1[i], whole[i].slice(0, 1, 4, 2))) << i;
  }
  // 5 ranks x 2: DistributedSampler pads the 18 positions to 20 with the first two, so each rank has
  // ceil(18 / 5) / 2 = 2 batches; rank 3's last sample is position (1 * 2 + 1) * 5 + 3 = 18 -> position 0.
  const auto r3 = batches(2, 3, 5);
  ASSERT_EQ(r3.size(), 2u);
  EXPECT_TRUE(at::equal(r3[1][1], batches(10, 0, 1)[0][0]));
  EXPECT_NE(test::error_of([&] { batches(2, 2, 2); }).find("rank 2 of 2"), std::string::npos);
}

TEST(Loader, EvaluationIsInOrderWithAPartialLastBatch) {
  test::TempDir dir, cache;
  write_image_folder(dir.str() + "/val", 3);  // 9 images
  const auto cfg = folder_config(dir.str(), cache.str());
  const auto src = data::open_source(cfg, "eval_val");
  data::Loader loader(src, data::transform_config(cfg, 12, 1), data::loader_config(cfg, 4, /*train=*/false, 0));
  EXPECT_EQ(loader.iters_per_epoch(), 3);
  loader.start_epoch(0);
  std::vector<int64_t> labels;
  for (int it = 0; it < 3; ++it) {
    const auto b = loader.next();
    EXPECT_EQ(b.images.size(0), it < 2 ? 4 : 1);
    EXPECT_EQ(b.images.size(1), 1);
    for (int64_t i = 0; i < b.labels.size(0); ++i) labels.push_back(b.labels[i].item<int64_t>());
  }
  EXPECT_EQ(labels, (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 2, 2, 2}));
  // The eval transform of sample 0 is the batch's first image.
  loader.start_epoch(0);
  const auto first = loader.next().images[0];
  const auto sample = loader.sample(0, 0, loader.order(0));
  EXPECT_TRUE(std::equal(sample.image.pixels.begin(), sample.image.pixels.end(), first.data_ptr<uint8_t>()));
  loader.next();
  loader.next();
  EXPECT_THROW(loader.next(), std::logic_error);  // past the end of the epoch
}

TEST(Loader, ABadFileStopsTheRunOrIsReplacedWithSkipBad) {
  test::TempDir dir, cache;
  write_image_folder(dir.str() + "/train", 4);
  const std::string bad = dir.str() + "/train/b_cls/img1.jpg";
  const auto good = data::read_bytes(bad);
  test::write_bytes(bad, std::vector<uint8_t>(good.begin(), good.begin() + 60));  // truncated JPEG
  auto cfg = folder_config(dir.str(), "none");
  const auto src = data::open_source(cfg, "train");
  const auto tf = data::transform_config(cfg, 12, 3);
  {
    data::Loader loader(src, tf, data::loader_config(cfg, 12, true, 1));
    loader.start_epoch(0);
    const auto err = error_of([&] { loader.next(); });
    EXPECT_TRUE(contains(err, bad + ": ")) << err;
  }
  cfg.skip_bad = true;
  data::Loader loader(src, tf, data::loader_config(cfg, 12, true, 1));
  loader.start_epoch(0);
  const auto b = loader.next();  // all 12 images: the bad one replaced by the next in the order
  EXPECT_EQ(b.bad, 1);
  EXPECT_EQ(b.images.size(0), 12);
}
