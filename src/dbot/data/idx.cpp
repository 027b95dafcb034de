#include <zlib.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>

#include "dbot/data/dataset.h"

namespace dbot::data {

namespace {

// Reads a whole (optionally gzipped: zlib reads plain files transparently) file.
std::vector<uint8_t> read_maybe_gz(const std::string& path) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), gzclose);
  if (!f) throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 20);
  while (true) {
    const int n = gzread(f.get(), chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int err = 0;
      const char* msg = gzerror(f.get(), &err);
      throw std::runtime_error(path + ": corrupt or truncated gzip data (" + std::string(msg) + ")");
    }
    if (n == 0) break;
    out.insert(out.end(), chunk.begin(), chunk.begin() + n);
  }
  int err = Z_OK;
  gzerror(f.get(), &err);
  if (err == Z_BUF_ERROR) throw std::runtime_error(path + ": truncated gzip stream (unexpected end of file)");
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t off) {
  return (uint32_t(b[off]) << 24) | (uint32_t(b[off + 1]) << 16) | (uint32_t(b[off + 2]) << 8) | uint32_t(b[off + 3]);
}

// Validates the header and returns the dims; payload follows at 4 + 4 * ndim.
std::vector<int64_t> idx_header(const std::vector<uint8_t>& b, const std::string& path, uint32_t magic) {
  if (b.size() < 4) throw std::runtime_error(path + ": file too short for an IDX header");
  const uint32_t got = be32(b, 0);
  if (got != magic) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), ": bad IDX magic 0x%08x (expected 0x%08x)", got, magic);
    throw std::runtime_error(path + buf);
  }
  const size_t ndim = magic & 0xff;
  if (b.size() < 4 + 4 * ndim) throw std::runtime_error(path + ": truncated IDX header");
  std::vector<int64_t> dims;
  size_t expected = 1;
  for (size_t d = 0; d < ndim; ++d) {
    dims.push_back(be32(b, 4 + 4 * d));
    expected *= static_cast<size_t>(dims.back());
  }
  const size_t have = b.size() - 4 - 4 * ndim;
  if (have != expected) {
    throw std::runtime_error(path + ": " + (have < expected ? "truncated" : "trailing data") + ": header promises " +
                             std::to_string(expected) + " bytes of data, file has " + std::to_string(have));
  }
  return dims;
}

}  // namespace

at::Tensor read_idx_images(const std::string& path) {
  auto bytes = read_maybe_gz(path);
  auto dims = idx_header(bytes, path, 0x00000803);
  auto t = at::empty(dims, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data() + 16, static_cast<size_t>(t.numel()));
  return t;
}

at::Tensor read_idx_labels(const std::string& path) {
  auto bytes = read_maybe_gz(path);
  auto dims = idx_header(bytes, path, 0x00000801);
  auto t = at::empty(dims, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), bytes.data() + 8, static_cast<size_t>(t.numel()));
  return t.to(at::kLong);
}

namespace {
std::string find_file(const std::string& root, const std::string& name) {
  for (const auto& candidate : {root + "/" + name + ".gz", root + "/" + name}) {
    if (std::ifstream(candidate).good()) return candidate;
  }
  throw std::runtime_error(root + "/" + name +
                           ".gz: not found (install Debian's dataset-fashion-mnist or set data.path)");
}
}  // namespace

Dataset load_fashion_mnist(const std::string& root, const std::string& split, int64_t limit) {
  if (split != "train" && split != "test") throw std::invalid_argument("unknown split '" + split + "'");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const auto images_path = find_file(root, prefix + "-images-idx3-ubyte");
  const auto labels_path = find_file(root, prefix + "-labels-idx1-ubyte");
  Dataset ds;
  ds.images = read_idx_images(images_path).unsqueeze(1);  // [N, 1, 28, 28]
  ds.labels = read_idx_labels(labels_path);
  if (ds.images.size(0) != ds.labels.size(0)) {
    throw std::runtime_error(labels_path + ": " + std::to_string(ds.labels.size(0)) + " labels for " +
                             std::to_string(ds.images.size(0)) + " images in " + images_path);
  }
  if (ds.labels.numel() > 0 && (ds.labels.min().item<int64_t>() < 0 || ds.labels.max().item<int64_t>() > 9)) {
    throw std::runtime_error(labels_path + ": labels outside 0..9");
  }
  if (limit > 0 && limit < ds.size()) {
    ds.images = ds.images.slice(0, 0, limit).contiguous();
    ds.labels = ds.labels.slice(0, 0, limit).contiguous();
  }
  ds.num_classes = 10;
  return ds;
}

}  // namespace dbot::data
