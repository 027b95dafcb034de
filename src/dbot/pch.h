// Precompiled header: the heavy LibTorch headers, parsed once per target.
#pragma once
#include <torch/torch.h>
