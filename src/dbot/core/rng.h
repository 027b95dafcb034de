// Keyed randomness: every random draw in dbot comes from a CPU generator derived from (seed, purpose, index),
// so the seed is the whole random state, a run resumes exactly, and CPU and GPU runs draw the same numbers
// (draws are made on CPU and copied to the device; see core::to_device).
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>

namespace dbot::core {

enum class RngPurpose : uint64_t { kInit = 1, kStep = 2, kShuffle = 3, kEval = 4, kAugment = 5 };

// A CPU generator seeded by splitmix64 over (seed, purpose, index).
at::Generator derive_generator(uint64_t seed, RngPurpose purpose, uint64_t index);

}  // namespace dbot::core
