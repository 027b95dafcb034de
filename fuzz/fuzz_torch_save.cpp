// libFuzzer harness for dbot's reader of torch.save files (io/torch_pickle.h, the pickle machine, over
// io/torch_zip.h) and the pretrained-weights path on top of it: any bytes must parse or throw a
// std::runtime_error naming the input; never crash, hang or allocate without bound. In memory (no file),
// so it runs far faster than fuzz_checkpoint. Seeds: a dbot checkpoint written by DBOT_FUZZ_WRITE_SEED=<path>
// and the Python-written teacher tests/data/teachers/*.pth (an OrderedDict with _metadata, BUILD, ...).
// Run: scripts/fuzz.sh torch_save 600
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "dbot/io/torch_pickle.h"
#include "dbot/train/checkpoint.h"
#include "tiny_config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* path = std::getenv("DBOT_FUZZ_WRITE_SEED")) {
    dbot::mkd::Distiller d(dbot::test::tiny_vit(1), dbot::test::tiny_mkd(), 1);
    dbot::train::save_checkpoint(path, d, 0, 0, "model:\n  depth: 1\n");
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<char> bytes(data, data + size);
  try {
    const c10::IValue root = dbot::io::parse_torch_save(bytes, "fuzz input");
    if (dbot::train::is_checkpoint(root)) dbot::train::checkpoint_from_value(root, "fuzz input");
  } catch (const std::runtime_error&) {
    // a clean error naming the input: what the reader promises
  }
  return 0;
}
