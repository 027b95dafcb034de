// `dbot bench allreduce`: the all-reduce the Trainer's gradient sync runs (Group::all_reduce_mean of one flat
// fp32 buffer), timed for a range of sizes across the job's processes. Prints, per size, the time per call
// and the bandwidths nccl-tests report: algbw = bytes / time, busbw = algbw x 2 (n - 1) / n (what each
// process sends and receives in a ring; comparable across process counts).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dbot/dist/process_group.h"

namespace dbot::dist {

struct AllreduceBenchRow {
  int64_t bytes = 0;
  double seconds = 0;  // per call, median over the timed calls
  double algbw_gbs = 0, busbw_gbs = 0;
};

// Every rank calls it with the same arguments; warmup untimed calls, then `iters` timed ones per size, of
// buffers on `device` (a GPU's go through NCCL when the group has it).
std::vector<AllreduceBenchRow> bench_allreduce(Group& group, const std::vector<int64_t>& sizes_bytes, int iters,
                                               int warmup, c10::Device device = c10::kCPU);
std::string format_allreduce_bench(const std::vector<AllreduceBenchRow>& rows, int world_size,
                                   const std::string& backend, c10::Device device);

}  // namespace dbot::dist
