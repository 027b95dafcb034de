// Shared test helpers: golden values from tests/reference/golden.json (made by make_golden.py), the
// closed-form "given" tensors the reference uses, and tolerance checks that report the worst element.
#pragma once

#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "dbot/core/rng.h"
#include "dbot/core/vector_clones.h"
#include "dbot/mkd/distiller.h"
#include "tiny_config.h"

namespace dbot::test {

inline const nlohmann::json& golden() {
  static const nlohmann::json j = [] {
    std::ifstream in(DBOT_GOLDEN_JSON);
    if (!in) throw std::runtime_error("cannot open " DBOT_GOLDEN_JSON);
    return nlohmann::json::parse(in);
  }();
  return j;
}

// A golden tensor (float64 values -> dtype).
inline at::Tensor golden_tensor(const std::string& key, at::ScalarType dtype = at::kFloat) {
  const auto& e = golden().at(key);
  std::vector<int64_t> shape = e.at("shape").get<std::vector<int64_t>>();
  std::vector<double> data = e.at("data").get<std::vector<double>>();
  return at::tensor(data, at::kDouble).reshape(shape).to(dtype);
}

// A JSON file of golden values, parsed once per path.
inline const nlohmann::json& json_file(const std::string& path) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(path);
  if (it == cache.end()) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    it = cache.emplace(path, nlohmann::json::parse(in)).first;
  }
  return it->second;
}

// A flat list of numbers in a JSON file as a float tensor of `shape`.
inline at::Tensor json_tensor(const std::string& path, const std::string& key, at::IntArrayRef shape) {
  return at::tensor(json_file(path).at(key).get<std::vector<double>>(), at::kDouble).reshape(shape).to(at::kFloat);
}

// The reference's parameter fill: a*sin(0.7 j + 0.01 (crc32(name) % 997) + 1), a = 1 for qkv weights.
inline at::Tensor fill_values(const std::string& name, at::IntArrayRef shape) {
  const auto crc = crc32(0L, reinterpret_cast<const Bytef*>(name.data()), static_cast<uInt>(name.size()));
  const double off = 0.01 * static_cast<double>(crc % 997) + 1.0;
  const std::string qkv = "qkv.weight";
  const bool is_qkv = name.size() >= qkv.size() && name.compare(name.size() - qkv.size(), qkv.size(), qkv) == 0;
  const double amp = is_qkv ? 1.0 : 0.2;
  auto t = at::empty(shape, at::kDouble);
  auto* p = t.data_ptr<double>();
  for (int64_t j = 0; j < t.numel(); ++j) p[j] = amp * std::sin(0.7 * static_cast<double>(j) + off);
  return t.to(at::kFloat);
}

inline void fill_parameters(torch::nn::Module& m, const std::string& prefix = "") {
  at::NoGradGuard no_grad;
  for (auto& item : m.named_parameters(true))
    item.value().copy_(fill_values(prefix + item.key(), item.value().sizes()));
}

inline at::Tensor given_images() {  // [2, 3, 8, 8]: 1.5 sin(0.3 j + 0.5)
  auto t = at::arange(2 * 3 * 8 * 8, at::kDouble);
  return (1.5 * (0.3 * t + 0.5).sin()).reshape({2, 3, 8, 8}).to(at::kFloat);
}

inline at::Tensor given_noise() {  // [2, 16]: frac(sin(12.9898 (j+1)) * 43758.5453)
  auto x = (12.9898 * (at::arange(32, at::kDouble) + 1)).sin() * 43758.5453;
  return (x - x.floor()).reshape({2, 16}).to(at::kFloat);
}

// |actual - expected| <= atol + rtol * |expected| everywhere; reports the worst element.
inline ::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                                            double atol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " != expected " << expected.sizes();
  }
  if (actual.numel() == 0) return ::testing::AssertionSuccess();  // equal shapes, nothing to compare
  auto a = actual.detach().to(at::kDouble), e = expected.detach().to(at::kDouble);
  auto excess = (a - e).abs() - (atol + rtol * e.abs());
  const double worst = excess.max().item<double>();
  if (worst <= 0.0) return ::testing::AssertionSuccess();
  const int64_t i = excess.reshape(-1).argmax().item<int64_t>();
  return ::testing::AssertionFailure() << "element " << i << ": actual " << a.reshape(-1)[i].item<double>()
                                       << " expected " << e.reshape(-1)[i].item<double>() << " (rtol " << rtol
                                       << ", atol " << atol << ")";
}

// Tolerance relative to the tensor's scale: |a - e| <= rel * max|e| (for gradients, whose elements span
// orders of magnitude and whose reductions reorder between implementations).
inline ::testing::AssertionResult close_to_scale(const at::Tensor& actual, const at::Tensor& expected, double rel) {
  const double scale = expected.abs().max().item<double>();
  return all_close(actual, expected, 0.0, rel * scale);
}

// |a - e| / |e| in the 2-norm: how far a reduced-precision result is from the fp32 one, as a whole.
inline double relative_error(const at::Tensor& a, const at::Tensor& e) {
  return (a - e).norm().item<double>() / e.norm().item<double>();
}

// The reference's weights: every parameter from the closed-form fill; the teacher's under "teacher.".
inline void fill_golden(mkd::Distiller& d) {
  fill_parameters(*d.student);  // encoder + decoder
  fill_parameters(*d.teacher, "teacher.");
}

// Distiller::forward's loss (one rank) composed by hand from the same draws, every token through the decoder and the
// teacher, then forward_loss's or pixel_loss's weights: the plain composition that the loss-token path must equal.
inline at::Tensor plain_training_loss(mkd::Distiller& d, const at::Tensor& imgs, at::Generator& gen) {
  const auto noise = at::rand({imgs.size(0), d.student_cfg.num_patches()}, gen, at::kFloat);  // then drop path
  const auto enc = d.forward_encoder(imgs, noise, &gen);
  const auto pred = d.forward_decoder(enc.latent, enc.ids_restore, &gen);  // [N, 1+L, ...]
  if (d.pixels()) return mkd::pixel_loss(d.forward_target(imgs), pred, enc.mask, d.cfg.norm_pix_loss);
  return mkd::forward_loss(d.forward_teacher(imgs), pred, enc.mask, mkd::loss_spec(d.cfg.loss, d.teacher->cfg));
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The message of the exception f throws ("<no error>" when it does not throw).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

// A fresh temporary folder, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("dbot-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string str() const { return path.string(); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

// The loops a kernel with a simd flag can run here: the plain one, and the AVX2 one where the CPU has it.
inline std::vector<bool> simd_choices() {
  std::vector<bool> simd{false};
  if (core::cpu_has_avx2_fma()) simd.push_back(true);
  return simd;
}

}  // namespace dbot::test

namespace dbot::test {

// Writes an IDX file (gzipped when the path ends in .gz) with the given magic, dims and payload.
inline void write_idx(const std::string& path, uint32_t magic, const std::vector<uint32_t>& dims,
                      const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes;
  auto be = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<uint8_t>(v >> s));
  };
  be(magic);
  for (auto d : dims) be(d);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  gzFile f = gzopen(path.c_str(), path.size() > 3 && path.substr(path.size() - 3) == ".gz" ? "wb" : "wbT");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

// A Fashion-MNIST-shaped dataset of `size`x`size` images in dir: class c images are bright in column
// band c (learnable), with noise. File names as Debian's dataset-fashion-mnist.
inline void write_fake_fmnist(const std::string& dir, int n_train, int n_test, int size) {
  for (const auto& [prefix, n] : {std::pair<std::string, int>{"train", n_train}, {"t10k", n_test}}) {
    std::vector<uint8_t> pixels, labels;
    uint32_t state = 12345u + static_cast<uint32_t>(n);
    for (int i = 0; i < n; ++i) {
      const int c = i % 10;
      labels.push_back(static_cast<uint8_t>(c));
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
          state = state * 1664525u + 1013904223u;
          const int band = (x * 10) / size == c ? 180 : 20;
          pixels.push_back(static_cast<uint8_t>(band + (state >> 28)));
        }
    }
    write_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz", 0x803,
              {static_cast<uint32_t>(n), static_cast<uint32_t>(size), static_cast<uint32_t>(size)}, pixels);
    write_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz", 0x801, {static_cast<uint32_t>(n)}, labels);
  }
}

}  // namespace dbot::test
