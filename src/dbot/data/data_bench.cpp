#include "dbot/data/data_bench.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "dbot/compat.h"
#include "dbot/data/loader.h"
#include "dbot/data/source.h"

namespace dbot::data {

std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon != std::string::npos) model = line.substr(line.find_first_not_of(" \t", colon + 1));
    break;
  }
  return model + " (" + std::to_string(std::thread::hardware_concurrency()) + " cores)";
}

DataBenchResult bench_data(const DataBenchOptions& opts) {
  if (opts.size <= 0 || opts.batch <= 0 || opts.images <= 0) {
    throw std::invalid_argument("bench data: --size, --batch and --images must be positive");
  }
  DataConfig data;  // dbot's defaults: crop_scale [0.2, 1], hflip
  data.format = "imagefolder";
  data.path = opts.path;
  data.dct_scale = opts.dct_scale;
  const auto source = open_source(data, "train");
  const TransformConfig transform = transform_config(data, opts.size, 3);

  DataBenchResult r;
  r.options = opts;
  r.source = source->describe();
  r.cpu = cpu_description();
  r.torch_version = compat::torch_version();
  for (const int64_t w : opts.workers) {
    if (w <= 0) throw std::invalid_argument("bench data: worker counts must be positive");
    LoaderConfig lc = loader_config(data, opts.batch, /*train=*/true, opts.seed);
    lc.workers = w;
    Loader loader(source, transform, lc);
    int64_t epoch = 0, served = 0;  // batches served in this epoch
    loader.start_epoch(epoch);
    auto next = [&] {
      if (served == loader.iters_per_epoch()) {
        loader.start_epoch(++epoch);
        served = 0;
      }
      ++served;
      return loader.next();
    };
    for (int64_t i = 0; i < w; ++i) next();  // warm-up: one batch per worker
    const int64_t rounds = (opts.images + opts.batch * w - 1) / (opts.batch * w);
    DataBenchRow row;
    row.workers = w;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < rounds * w; ++i) row.images += next().images.size(0);
    row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.rows.push_back(row);
  }
  return r;
}

std::string format_data_bench(const DataBenchResult& r) {
  const auto& o = r.options;
  std::string s = "dbot bench data: LibTorch " + r.torch_version + ", CPU " + r.cpu + "\n" + r.source + "\n";
  const DataConfig defaults;
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "RandomResizedCrop(%lld, scale=(%g, %g), bicubic) + RandomHorizontalFlip, uint8, batch %lld, "
      "dct_scale %s\n\n| workers | images | seconds | images/s | images/s per worker |\n|---|---|---|---|---|\n",
      static_cast<long long>(o.size), defaults.crop_scale[0], defaults.crop_scale[1], static_cast<long long>(o.batch),
      o.dct_scale ? "on" : "off");
  s += buf;
  for (const auto& row : r.rows) {
    std::snprintf(buf, sizeof buf, "| %lld | %lld | %.2f | %.1f | %.1f |\n", static_cast<long long>(row.workers),
                  static_cast<long long>(row.images), row.seconds, row.images_per_s(),
                  row.images_per_s() / static_cast<double>(row.workers));
    s += buf;
  }
  s += "\n";
  for (const auto& row : r.rows) {
    std::snprintf(buf, sizeof buf, "dbot-bench-data: workers=%lld images_per_s=%.2f\n",
                  static_cast<long long>(row.workers), row.images_per_s());
    s += buf;
  }
  return s;
}

}  // namespace dbot::data
