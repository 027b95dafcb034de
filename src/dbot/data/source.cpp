#include "dbot/data/source.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "dbot/data/decode.h"
#include "dbot/data/scan.h"

namespace fs = std::filesystem;

namespace dbot::data {

at::Tensor ImageSource::labels() const {
  auto out = at::empty({size()}, at::kLong);
  auto* p = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < size(); ++i) p[i] = label(i);
  return out;
}

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

}  // namespace

FileList scan_folder(const std::string& root_in, const std::string& format, bool skip_bad,
                     const std::string& cache_dir) {
  if (format != "imagefolder" && format != "folder") throw std::invalid_argument("scan_folder: format " + format);
  std::error_code ec;
  if (!fs::is_directory(root_in, ec)) fail(root_in, fs::exists(root_in, ec) ? "not a directory" : "no such directory");
  const std::string root = fs::absolute(root_in).lexically_normal().string();
  FileList list;
  list.root = root;
  const std::string cache = cache_path(cache_dir, format, root);
  ScanRecord rec;
  if (!cache.empty() && load_scan_cache(cache, format, root, rec)) {
    list.cache_note = "file list from the cache " + cache;
  } else {
    rec = scan_directory(root, format);
    list.cache_note = save_scan_cache(cache, format, root, rec);
  }
  if (format == "imagefolder") {
    if (rec.classes.empty()) fail(root, "no class folders (an ImageFolder root holds one folder per class)");
    std::vector<int64_t> count(rec.classes.size(), 0);
    for (const auto& f : rec.files) ++count[static_cast<size_t>(f.label)];
    for (size_t c = 0; c < count.size(); ++c) {
      if (count[c] == 0)
        fail(root + "/" + rec.classes[c], "class folder without images (" + image_extension_list() + ")");
    }
    list.classes = rec.classes;
  }
  if (rec.files.empty()) fail(root, "no images (" + image_extension_list() + ")");
  for (const auto& f : rec.files) {
    if (f.size == 0) {
      if (!skip_bad) fail(root + "/" + f.path, "empty file (set data.skip_bad: true to leave such files out)");
      ++list.skipped_empty;
      continue;
    }
    list.files.push_back(f.path);
    if (format == "imagefolder") list.labels.push_back(f.label);
  }
  return list;
}

FileList read_filelist(const std::string& list_path, bool skip_bad) {
  std::ifstream in(list_path);
  if (!in) fail(list_path, "cannot open the file list");
  FileList list;
  list.root = fs::absolute(list_path).parent_path().lexically_normal().string();
  std::string line;
  int64_t lineno = 0, labeled = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    // "path" or "path label": the label is the last field when it is an integer (paths may hold spaces).
    std::string path = line;
    int64_t label = -1;
    const auto sp = line.find_last_of(" \t");
    if (sp != std::string::npos) {
      const std::string tail = line.substr(sp + 1);
      char* end = nullptr;
      const long long v = std::strtoll(tail.c_str(), &end, 10);
      if (!tail.empty() && *end == '\0') {
        if (v < 0) fail(list_path + ":" + std::to_string(lineno), "negative label " + tail);
        path = line.substr(0, line.find_last_not_of(" \t", sp) + 1);
        label = v;
      }
    }
    const fs::path full = fs::path(path).is_absolute() ? fs::path(path) : fs::path(list.root) / path;
    std::error_code ec;
    if (!fs::is_regular_file(full, ec)) {
      fail(list_path + ":" + std::to_string(lineno), "no such image file " + full.string());
    }
    if (fs::file_size(full, ec) == 0) {
      if (!skip_bad) fail(full.string(), "empty file (named at " + list_path + ":" + std::to_string(lineno) + ")");
      ++list.skipped_empty;
      continue;
    }
    if (label >= 0) ++labeled;
    list.files.push_back(fs::relative(full, list.root).string());
    list.labels.push_back(label);
  }
  if (list.files.empty()) fail(list_path, "the file list names no images");
  if (labeled == 0) {
    list.labels.clear();
  } else if (labeled != static_cast<int64_t>(list.files.size())) {
    fail(list_path, "some lines have a label and some do not (give every line a label, or none)");
  }
  return list;
}

namespace {

class FileSource : public ImageSource {
 public:
  explicit FileSource(FileList list) : list_(std::move(list)) {}
  int64_t size() const override { return static_cast<int64_t>(list_.files.size()); }
  int64_t label(int64_t i) const override { return list_.labels.empty() ? -1 : list_.labels[static_cast<size_t>(i)]; }
  int64_t num_classes() const override {
    if (!list_.classes.empty()) return static_cast<int64_t>(list_.classes.size());
    return list_.labels.empty() ? 0 : *std::max_element(list_.labels.begin(), list_.labels.end()) + 1;
  }
  StoredImage load(int64_t i) const override {
    StoredImage img;
    img.name = name(i);
    img.bytes = read_bytes(img.name);
    return img;
  }
  std::string name(int64_t i) const override { return list_.root + "/" + list_.files[static_cast<size_t>(i)]; }
  std::string describe() const override {
    std::string d = list_.root + ": " + std::to_string(size()) + " images";
    if (num_classes() > 0) d += " in " + std::to_string(num_classes()) + " classes";
    if (list_.skipped_empty > 0) d += ", " + std::to_string(list_.skipped_empty) + " empty files left out";
    return list_.cache_note.empty() ? d : d + " (" + list_.cache_note + ")";
  }

 private:
  FileList list_;
};

class MemorySource : public ImageSource {
 public:
  MemorySource(Dataset ds, std::string name) : ds_(std::move(ds)), name_(std::move(name)) {
    ds_.images = ds_.images.contiguous();
    ds_.labels = ds_.labels.contiguous();
  }
  int64_t size() const override { return ds_.size(); }
  int64_t label(int64_t i) const override { return ds_.labels.data_ptr<int64_t>()[i]; }
  int64_t num_classes() const override { return ds_.num_classes; }
  StoredImage load(int64_t i) const override {  // [C, H, W] -> [H, W, C]
    const int64_t C = ds_.images.size(1), H = ds_.images.size(2), W = ds_.images.size(3);
    StoredImage img;
    img.name = name(i);
    img.pixels = Image(H, W, C);
    const uint8_t* src = ds_.images.data_ptr<uint8_t>() + i * C * H * W;
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t p = 0; p < H * W; ++p) img.pixels.pixels[static_cast<size_t>(p * C + c)] = src[c * H * W + p];
    }
    return img;
  }
  std::string name(int64_t i) const override { return name_ + "[" + std::to_string(i) + "]"; }
  std::string describe() const override {
    return name_ + ": " + std::to_string(size()) + " images in " + std::to_string(num_classes()) + " classes";
  }

 private:
  Dataset ds_;
  std::string name_;
};

void apply_limit(FileList& list, int64_t limit) {
  if (limit <= 0 || limit >= static_cast<int64_t>(list.files.size())) return;
  list.files.resize(static_cast<size_t>(limit));
  if (!list.labels.empty()) list.labels.resize(static_cast<size_t>(limit));
}

std::shared_ptr<const ImageSource> image_folder(const DataConfig& cfg, const std::string& root, int64_t limit) {
  FileList list = scan_folder(root, "imagefolder", cfg.skip_bad, cfg.cache_dir);
  apply_limit(list, limit);
  return make_file_source(std::move(list));
}

}  // namespace

std::shared_ptr<const ImageSource> make_file_source(FileList list) {
  return std::make_shared<FileSource>(std::move(list));
}

std::shared_ptr<const ImageSource> make_memory_source(Dataset ds, std::string name) {
  return std::make_shared<MemorySource>(std::move(ds), std::move(name));
}

std::shared_ptr<const ImageSource> open_source(const DataConfig& cfg, const std::string& split) {
  if (split != "train" && split != "eval_train" && split != "eval_val") {
    throw std::invalid_argument("open_source: unknown split '" + split + "'");
  }
  const bool val = split == "eval_val";
  const int64_t limit = val ? cfg.test_limit : cfg.train_limit;
  if (cfg.format == "idx") {
    return make_memory_source(load_fashion_mnist(cfg.path, val ? "test" : "train", limit), cfg.path);
  }
  if (cfg.format == "imagefolder") return image_folder(cfg, cfg.path + (val ? "/val" : "/train"), limit);
  if (cfg.format != "folder" && cfg.format != "filelist") {
    throw std::invalid_argument("data.format: unknown format '" + cfg.format +
                                "' (idx, imagefolder, folder or filelist)");
  }
  if (split == "train") {
    FileList list = cfg.format == "folder" ? scan_folder(cfg.path, "folder", cfg.skip_bad, cfg.cache_dir)
                                           : read_filelist(cfg.path, cfg.skip_bad);
    apply_limit(list, limit);
    return make_file_source(std::move(list));
  }
  // Unlabeled pretraining data: evaluate on data.eval_path (an ImageFolder root) when given.
  if (cfg.eval_path.empty()) return nullptr;
  return image_folder(cfg, cfg.eval_path + (val ? "/val" : "/train"), limit);
}

}  // namespace dbot::data
