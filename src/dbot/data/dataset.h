// The data configuration, and datasets held in memory as uint8 images [N, C, H, W] and int64 labels [N].
// Fashion-MNIST comes from the IDX files of Debian's dataset-fashion-mnist (gzipped or not).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace dbot::data {

struct DataConfig {
  std::string format = "idx";                              // idx | imagefolder | folder | filelist (data/source.h)
  std::string path = "/usr/share/datasets/fashion-mnist";  // IDX folder, ImageFolder root, folder, or list file
  std::string eval_path;                                   // folder/filelist: ImageFolder root for evaluation
  int64_t train_limit = 0;                                 // use the first N training images (0 = all)
  int64_t test_limit = 0;                                  // use the first N test images (0 = all)
  std::vector<double> crop_scale = {0.2, 1.0};             // RandomResizedCrop area range (bicubic)
  bool hflip = true;
  double crop_pct = 0.875;  // evaluation: resize the shorter side to img_size / crop_pct, centre crop
  bool dct_scale = true;    // JPEG: decode at 1/2, 1/4, 1/8 scale when the crop is that many times the output
  int64_t workers = 0;      // decoding threads (0 = one per core)
  bool skip_bad = false;    // log, count and replace unreadable images instead of stopping
  std::string cache_dir;    // folder-scan cache ("" = ~/.cache/dbot, "none" = off)
  std::vector<double> mean = {0.2860};
  std::vector<double> std = {0.3530};
};

struct Dataset {
  at::Tensor images;  // [N, C, H, W] uint8
  at::Tensor labels;  // [N] int64
  int64_t num_classes = 0;
  int64_t size() const { return images.size(0); }
};

// IDX (LeCun) files: magic 0x00000803 (ubyte, 3 dims) for images, 0x00000801 for labels.
// Errors name the file and what is wrong (missing, truncated, bad magic, bad sizes).
at::Tensor read_idx_images(const std::string& path);  // [N, rows, cols] uint8
at::Tensor read_idx_labels(const std::string& path);  // [N] int64

// split: "train" or "test". Looks for <root>/<prefix>-images-idx3-ubyte(.gz) and the labels beside it.
Dataset load_fashion_mnist(const std::string& root, const std::string& split, int64_t limit = 0);

}  // namespace dbot::data
