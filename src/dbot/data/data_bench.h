// The data benchmark behind `dbot bench data`: how many images per second the Loader decodes and augments
// (the training transform: RandomResizedCrop to size x size with data's default scale [0.2, 1] and
// ratio [3/4, 4/3], PIL's bicubic, horizontal flip; uint8 [B, C, S, S] batches, as training gets them) from
// an ImageFolder root's train/ split, for each of several worker counts.
// Per worker count: a fresh Loader (threads started), one untimed batch per worker (warm-up: thread start,
// page cache, allocations), then ceil(images / (batch x workers)) x workers timed batches, the epochs
// continuing (start_epoch) as training does. Counting whole rounds of `workers` batches makes the number
// comparable with torchvision's DataLoader, whose workers each make a whole batch (bench/torchvision_data.py
// times the same way); for dbot's per-sample workers it changes nothing. No model, no device: the CPU work
// of the input pipeline alone. Rows: workers, images, seconds, images/s, images/s per worker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dbot::data {

struct DataBenchOptions {
  std::string path;              // an ImageFolder root: path/train/<class>/<image> is read
  int64_t size = 224;            // output side
  std::vector<int64_t> workers;  // one row per worker count
  int64_t images = 1000;         // timed images per row (at least; rounded up to whole rounds of batches)
  int64_t batch = 64;
  bool dct_scale = true;  // data.dct_scale: JPEGs decoded at 1/2, 1/4, 1/8 when the crop allows
  uint64_t seed = 0;
};

struct DataBenchRow {
  int64_t workers = 0, images = 0;
  double seconds = 0;
  double images_per_s() const { return static_cast<double>(images) / seconds; }
};

struct DataBenchResult {
  DataBenchOptions options;
  std::string source;  // the ImageSource's description
  std::string cpu;     // /proc/cpuinfo's model name and the core count
  std::string torch_version;
  std::vector<DataBenchRow> rows;
};

DataBenchResult bench_data(const DataBenchOptions& opts);

// The header line, a markdown table, and one "dbot-bench-data: workers=W images_per_s=X" line per row.
std::string format_data_bench(const DataBenchResult& r);

// "AMD EPYC (2 cores)": the first "model name" of /proc/cpuinfo ("unknown CPU" without one) and the number of
// hardware threads.
std::string cpu_description();

}  // namespace dbot::data
