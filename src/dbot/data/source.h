// ImageSource: what a dataset is to the loader. `size()` samples, `label(i)` (-1 when unlabeled) and
// `load(i)`: the stored image (a file's bytes, or pixels held in memory), read on a worker thread.
// Implementations:
//   idx          the MNIST family, held in memory (data/dataset.h)
//   imagefolder  root/<class>/**/<image>: classes = sorted folder names, files in sorted(os.walk) order,
//                labels as torchvision's ImageFolder; extensions jpg jpeg png ppm pgm bmp tif tiff webp
//   folder       every image under root, recursively, unlabeled
//   filelist     a text file of "path[ label]" lines, paths relative to the file
// A folder scan is cached (file names, sizes, and the mtime of every directory scanned, which changes when
// an entry is added or removed) next to the data when writable, else under ~/.cache/dbot; a cached list
// whose directories all keep their mtimes is reused without listing 1.3 M files again.
// Errors name the path: a missing root, an empty folder, a class folder without images, a filelist line
// naming a missing file, an empty file (cheap to see at scan time: its size is 0).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "dbot/data/dataset.h"
#include "dbot/data/transforms.h"

namespace dbot::data {

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  virtual int64_t label(int64_t i) const = 0;     // -1 when the source has no labels
  virtual int64_t num_classes() const = 0;        // 0 when the source has no labels
  virtual StoredImage load(int64_t i) const = 0;  // thread-safe; throws naming the file
  virtual std::string name(int64_t i) const = 0;  // the file (or "<idx file>[i]"), for messages
  virtual std::string describe() const = 0;       // one line for the log
  at::Tensor labels() const;                      // [N] int64
};

// A scanned list of image files under one root.
struct FileList {
  std::string root;                  // absolute
  std::vector<std::string> files;    // relative to root
  std::vector<int64_t> labels;       // one per file, or empty (unlabeled)
  std::vector<std::string> classes;  // imagefolder's class names, in label order
  int64_t skipped_empty = 0;         // empty files left out (skip_bad)
  std::string cache_note;            // where the list came from, for the log
};

// format: "imagefolder" or "folder". skip_bad leaves empty files out (counted) instead of failing.
// cache_dir: see data/scan.h.
FileList scan_folder(const std::string& root, const std::string& format, bool skip_bad, const std::string& cache_dir);
FileList read_filelist(const std::string& list_path, bool skip_bad);

std::shared_ptr<const ImageSource> make_file_source(FileList list);
std::shared_ptr<const ImageSource> make_memory_source(Dataset ds, std::string name);

// The source for a split ("train" or "val") of cfg: idx (train/test IDX files), imagefolder (<path>/train,
// <path>/val), folder/filelist (train only: unlabeled). Returns nullptr for a split the format cannot
// provide (evaluation is then skipped or taken from data.eval_path).
std::shared_ptr<const ImageSource> open_source(const DataConfig& cfg, const std::string& split);

}  // namespace dbot::data
