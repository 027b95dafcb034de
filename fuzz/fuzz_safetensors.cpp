// libFuzzer harness for the safetensors reader (io/safetensors.h): any byte string must either parse or
// throw std::runtime_error naming the problem; never crash, hang, leak or allocate more than the input holds.
// Seeds: tests/data/safetensors/ and a file written by DBOT_FUZZ_WRITE_SEED=<path>.
// Run: scripts/fuzz.sh safetensors 600
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "dbot/io/safetensors.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* path = std::getenv("DBOT_FUZZ_WRITE_SEED")) {  // a second seed: four dtypes, an empty tensor
    const std::map<std::string, at::Tensor> seed = {{"a", at::arange(6, at::kFloat).reshape({2, 3})},
                                                    {"b", at::ones({2}, at::kBFloat16)},
                                                    {"c", at::tensor({1, 2}, at::kLong)},
                                                    {"d", at::zeros({0}, at::kByte)}};
    dbot::io::write_safetensors(path, seed, {{"format", "pt"}, {"dbot.model", "{}"}});
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    dbot::io::parse_safetensors(reinterpret_cast<const char*>(data), size, "fuzz.safetensors");
  } catch (const std::runtime_error&) {
    // a clean, named error: what the reader promises
  }
  return 0;
}
