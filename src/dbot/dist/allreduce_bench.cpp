#include "dbot/dist/allreduce_bench.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "dbot/compat.h"

namespace dbot::dist {

std::vector<AllreduceBenchRow> bench_allreduce(Group& group, const std::vector<int64_t>& sizes_bytes, int iters,
                                               int warmup, c10::Device device) {
  std::vector<AllreduceBenchRow> rows;
  const double n = group.world_size();
  for (const int64_t bytes : sizes_bytes) {
    std::vector<at::Tensor> buffer = {
        at::ones({std::max<int64_t>(1, bytes / 4)}, at::TensorOptions(at::kFloat).device(device))};  // [bytes / 4]
    std::vector<double> times;
    for (int i = 0; i < warmup + iters; ++i) {
      group.barrier();
      const auto t0 = std::chrono::steady_clock::now();
      group.all_reduce_mean(buffer);
      compat::synchronize(device);  // a GPU's division by the world size too
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i >= warmup) times.push_back(dt);
    }
    std::sort(times.begin(), times.end());
    AllreduceBenchRow row;
    row.bytes = buffer[0].numel() * 4;
    row.seconds = times[times.size() / 2];
    row.algbw_gbs = static_cast<double>(row.bytes) / row.seconds / 1e9;
    row.busbw_gbs = row.algbw_gbs * 2 * (n - 1) / n;
    rows.push_back(row);
  }
  return rows;
}

std::string format_allreduce_bench(const std::vector<AllreduceBenchRow>& rows, int world_size,
                                   const std::string& backend, c10::Device device) {
  std::string out = "all-reduce (mean, fp32) across " + std::to_string(world_size) + " process(es), " + backend +
                    ", buffers on " + device.str() +
                    "\n\n| size (MB) | ms per call | algbw (GB/s) | busbw (GB/s) |\n|---|---|---|---|\n";
  char line[160];
  for (const auto& r : rows) {
    std::snprintf(line, sizeof(line), "| %.2f | %.3f | %.3f | %.3f |\n", static_cast<double>(r.bytes) / 1e6,
                  r.seconds * 1e3, r.algbw_gbs, r.busbw_gbs);
    out += line;
  }
  return out;
}

}  // namespace dbot::dist
