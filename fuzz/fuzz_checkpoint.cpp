// libFuzzer harness for the checkpoint reader (train/checkpoint.h load_checkpoint): any file must either
// load or throw an error naming the file; never crash or hang. The bytes go through a file because that is
// the reader's interface. Seed: a tiny real checkpoint written by DBOT_FUZZ_WRITE_SEED=<path>.
// Run: scripts/fuzz.sh checkpoint 600
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "dbot/train/checkpoint.h"
#include "tiny_config.h"

namespace {
std::string scratch_path() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/dbot-fuzz-" + std::to_string(::getpid()) + ".pt";
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* path = std::getenv("DBOT_FUZZ_WRITE_SEED")) {
    dbot::mkd::Distiller d(dbot::test::tiny_vit(1), dbot::test::tiny_mkd(), 1);  // the golden tests' network
    dbot::train::save_checkpoint(path, d, 0, 0, "model:\n  depth: 1\n");
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  try {
    dbot::train::load_checkpoint(path);
  } catch (const std::runtime_error&) {
    // a clean error naming the file: what the reader promises (LibTorch's own errors are wrapped into these)
  }
  return 0;
}
