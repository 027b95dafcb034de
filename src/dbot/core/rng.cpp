#include "dbot/core/rng.h"

#include "dbot/compat.h"

namespace dbot::core {

at::Generator derive_generator(uint64_t seed, RngPurpose purpose, uint64_t index) {
  // splitmix64 over the triple: distinct, well-mixed seeds for every (purpose, index).
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return compat::make_cpu_generator(mix(mix(mix(seed) ^ static_cast<uint64_t>(purpose)) ^ index));
}

}  // namespace dbot::core
