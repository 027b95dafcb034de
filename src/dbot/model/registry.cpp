#include "dbot/model/registry.h"

#include <map>
#include <regex>
#include <stdexcept>

namespace dbot::model {

namespace {
struct Size {
  int64_t embed_dim, depth, num_heads;
};
const std::map<std::string, Size>& sizes() {
  static const std::map<std::string, Size> table = {
      {"tiny", {192, 12, 3}},    {"small", {384, 12, 6}},  {"base", {768, 12, 12}},
      {"large", {1024, 24, 16}}, {"huge", {1280, 32, 16}},
  };
  return table;
}
}  // namespace

VitConfig vit_config(const std::string& name) {
  static const std::regex pattern(R"(vit_([a-z]+)_patch([0-9]+)_([0-9]+))");
  std::smatch m;
  if (!std::regex_match(name, m, pattern) || sizes().count(m[1].str()) == 0) {
    std::string known;
    for (const auto& n : registered_models()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model '" + name +
                                "': expected vit_<tiny|small|base|large|huge>_patch<p>_<img>, e.g. " + known);
  }
  const Size s = sizes().at(m[1].str());
  VitConfig cfg;
  cfg.name = name;
  cfg.patch_size = std::stoll(m[2].str());
  cfg.img_size = std::stoll(m[3].str());
  cfg.embed_dim = s.embed_dim;
  cfg.depth = s.depth;
  cfg.num_heads = s.num_heads;
  return cfg;
}

std::vector<std::string> registered_models() {
  return {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224",
          "vit_huge_patch14_224", "vit_tiny_patch4_28",    "vit_small_patch4_28"};
}

}  // namespace dbot::model
