// Datasets held in memory as uint8 images [N, C, H, W] and int64 labels [N].
// Fashion-MNIST comes from the IDX files of Debian's dataset-fashion-mnist (gzipped or not).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace dbot::data {

struct DataConfig {
  std::string dataset = "fashion_mnist";
  std::string root = "/usr/share/datasets/fashion-mnist";
  int64_t train_limit = 0;                      // use the first N training images (0 = all)
  int64_t test_limit = 0;                       // use the first N test images (0 = all)
  std::vector<double> crop_scale = {0.2, 1.0};  // RandomResizedCrop area range (bicubic)
  bool hflip = true;
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

// Dispatches on cfg.dataset.
Dataset load_dataset(const DataConfig& cfg, const std::string& split);

}  // namespace dbot::data
