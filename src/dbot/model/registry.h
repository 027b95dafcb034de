// Model registry: timm-style names -> VitConfig.
// Names are vit_<size>_patch<p>_<img>, size one of tiny (192 wide, 12 deep, 3 heads), small (384, 12, 6),
// base (768, 12, 12), large (1024, 24, 16), huge (1280, 32, 16). The paper's models are
// vit_base_patch16_224, vit_large_patch16_224 and vit_huge_patch14_224; small images use names such as
// vit_tiny_patch4_28 (Fashion-MNIST). A recipe may override the width, depth and heads.
#pragma once

#include <string>
#include <vector>

#include "dbot/model/vit.h"

namespace dbot::model {

// Throws std::invalid_argument listing the known sizes when the name does not parse.
VitConfig vit_config(const std::string& name);

// Names of the standard variants (for --help and error messages).
std::vector<std::string> registered_models();

}  // namespace dbot::model
