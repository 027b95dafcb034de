#include "dbot/model/layouts.h"

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace dbot::model {

namespace {

// Per-block name pairs (timm suffix, Hugging Face suffix) for everything but the fused qkv.
const std::vector<std::pair<std::string, std::string>>& block_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"norm1", "layernorm_before"}, {"attn.proj", "attention.output.dense"},
      {"norm2", "layernorm_after"},  {"mlp.fc1", "intermediate.dense"},
      {"mlp.fc2", "output.dense"},
  };
  return names;
}
const std::vector<std::pair<std::string, std::string>>& top_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"cls_token", "embeddings.cls_token"},
      {"pos_embed", "embeddings.position_embeddings"},
      {"patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"},
      {"patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"},
      {"norm.weight", "layernorm.weight"},
      {"norm.bias", "layernorm.bias"},
  };
  return names;
}
const char* const kQkv[] = {"query", "key", "value"};  // the order of timm's fused rows

const at::Tensor& need(const TensorMap& m, const std::string& name, const std::string& what) {
  const auto it = m.find(name);
  if (it == m.end()) throw std::runtime_error(what + ": missing tensor '" + name + "'");
  return it->second;
}

}  // namespace

std::string vit_config_to_json(const VitConfig& cfg) {
  nlohmann::ordered_json j = {{"img_size", cfg.img_size},  {"patch_size", cfg.patch_size},
                              {"in_chans", cfg.in_chans},  {"embed_dim", cfg.embed_dim},
                              {"depth", cfg.depth},        {"num_heads", cfg.num_heads},
                              {"mlp_ratio", cfg.mlp_ratio}};
  if (cfg.clip()) {
    j["pre_norm"] = cfg.pre_norm;
    j["quick_gelu"] = cfg.quick_gelu;
    j["norm_eps"] = cfg.norm_eps;
    j["proj_dim"] = cfg.proj_dim;
  }
  return j.dump();
}

std::string weights_file_model_name(const VitConfig& cfg) {
  return std::string(cfg.clip() ? "clip" : "vit") + "_d" + std::to_string(cfg.embed_dim) + "x" +
         std::to_string(cfg.depth) + "_patch" + std::to_string(cfg.patch_size) + "_" + std::to_string(cfg.img_size);
}

VitConfig vit_config_from_json(const std::string& json, const std::string& what) {
  VitConfig cfg;
  try {
    const auto j = nlohmann::json::parse(json);
    cfg.img_size = j.at("img_size").get<int64_t>();
    cfg.patch_size = j.at("patch_size").get<int64_t>();
    cfg.in_chans = j.at("in_chans").get<int64_t>();
    cfg.embed_dim = j.at("embed_dim").get<int64_t>();
    cfg.depth = j.at("depth").get<int64_t>();
    cfg.num_heads = j.at("num_heads").get<int64_t>();
    cfg.mlp_ratio = j.at("mlp_ratio").get<double>();
    cfg.pre_norm = j.value("pre_norm", cfg.pre_norm);
    cfg.quick_gelu = j.value("quick_gelu", cfg.quick_gelu);
    cfg.norm_eps = j.value("norm_eps", cfg.norm_eps);
    cfg.proj_dim = j.value("proj_dim", cfg.proj_dim);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(what + ": the architecture '" + json + "' is unreadable: " + e.what());
  }
  cfg.name = weights_file_model_name(cfg);
  try {
    cfg.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(what + ": " + e.what());
  }
  return cfg;
}

TensorMap timm_to_hf(const TensorMap& timm, const VitConfig& cfg) {
  const std::string what = "timm -> Hugging Face names";
  if (cfg.clip()) {
    throw std::runtime_error(
        "a CLIP image tower (ln_pre, QuickGELU, proj) has no Hugging Face ViTModel layout: "
        "export it with the timm layout");
  }
  TensorMap hf;
  for (const auto& [from, to] : top_names()) hf[to] = need(timm, from, what);
  const int64_t D = cfg.embed_dim;
  for (int64_t i = 0; i < cfg.depth; ++i) {
    const std::string t = "blocks." + std::to_string(i) + ".", h = "encoder.layer." + std::to_string(i) + ".";
    for (const auto& [from, to] : block_names()) {
      hf[h + to + ".weight"] = need(timm, t + from + ".weight", what);
      hf[h + to + ".bias"] = need(timm, t + from + ".bias", what);
    }
    // qkv.weight [3D, D] = rows of query, key, value; qkv.bias [3D] likewise.
    const auto& w = need(timm, t + "attn.qkv.weight", what);
    const auto& b = need(timm, t + "attn.qkv.bias", what);
    for (int64_t k = 0; k < 3; ++k) {
      hf[h + "attention.attention." + kQkv[k] + ".weight"] = w.slice(0, k * D, (k + 1) * D).contiguous();
      hf[h + "attention.attention." + kQkv[k] + ".bias"] = b.slice(0, k * D, (k + 1) * D).contiguous();
    }
  }
  if (hf.size() != timm.size() + 4 * static_cast<size_t>(cfg.depth)) {  // each qkv pair became three pairs
    throw std::runtime_error(what + ": the encoder has tensors this layout does not name (" +
                             std::to_string(timm.size()) + " tensors for depth " + std::to_string(cfg.depth) + ")");
  }
  return hf;
}

TensorMap hf_to_timm(const TensorMap& hf, const std::string& what) {
  static const std::regex layer(R"(encoder\.layer\.([0-9]+)\.(.*))");
  TensorMap timm;
  std::map<std::string, std::map<std::string, at::Tensor>> qkv;  // block prefix -> "query.weight" -> T
  for (const auto& [name, t] : hf) {
    if (name.rfind("pooler.", 0) == 0) continue;
    std::string to;  // the timm name, empty when there is none
    for (const auto& [timm_name, hf_name] : top_names()) {
      if (name == hf_name) to = timm_name;
    }
    std::smatch m;
    if (to.empty() && std::regex_match(name, m, layer)) {
      const std::string prefix = "blocks." + m[1].str() + ".", rest = m[2].str();
      for (const auto& [timm_name, hf_name] : block_names()) {
        for (const char* suffix : {".weight", ".bias"}) {
          if (rest == hf_name + suffix) to = prefix + timm_name + suffix;
        }
      }
      if (to.empty() && rest.rfind("attention.attention.", 0) == 0) {
        qkv[prefix][rest.substr(20)] = t;
        continue;
      }
    }
    if (to.empty()) throw std::runtime_error(what + ": tensor '" + name + "' is not part of a Hugging Face ViTModel");
    timm[to] = t;
  }
  for (const auto& [prefix, parts] : qkv) {
    if (parts.size() != 6) {
      throw std::runtime_error(what + ": block " + prefix + " has " + std::to_string(parts.size()) +
                               " query/key/value tensors, expected 6 (weight and bias of each)");
    }
    for (const char* suffix : {"weight", "bias"}) {
      std::vector<at::Tensor> rows;
      for (const char* k : kQkv) rows.push_back(need(parts, std::string(k) + "." + suffix, what + " (" + prefix + ")"));
      timm[prefix + "attn.qkv." + suffix] = at::cat(rows, 0);
    }
  }
  return timm;
}

TensorMap clip_to_timm(const TensorMap& clip, const std::string& what) {
  static const std::regex block(R"(transformer\.resblocks\.([0-9]+)\.(.*))");
  static const std::map<std::string, std::string> top = {
      {"conv1.weight", "patch_embed.proj.weight"},
      {"ln_pre.weight", "norm_pre.weight"},
      {"ln_pre.bias", "norm_pre.bias"},
      {"ln_post.weight", "norm.weight"},
      {"ln_post.bias", "norm.bias"},
      {"proj", "proj"},
  };
  static const std::map<std::string, std::string> in_block = {
      {"ln_1.weight", "norm1.weight"},
      {"ln_1.bias", "norm1.bias"},
      {"attn.in_proj_weight", "attn.qkv.weight"},
      {"attn.in_proj_bias", "attn.qkv.bias"},
      {"attn.out_proj.weight", "attn.proj.weight"},
      {"attn.out_proj.bias", "attn.proj.bias"},
      {"ln_2.weight", "norm2.weight"},
      {"ln_2.bias", "norm2.bias"},
      {"mlp.c_fc.weight", "mlp.fc1.weight"},
      {"mlp.c_fc.bias", "mlp.fc1.bias"},
      {"mlp.c_proj.weight", "mlp.fc2.weight"},
      {"mlp.c_proj.bias", "mlp.fc2.bias"},
  };
  TensorMap out;
  for (const auto& [name, t] : clip) {
    std::smatch m;
    if (name == "class_embedding") {
      out["cls_token"] = t.reshape({1, 1, -1});  // [D] -> [1, 1, D]
    } else if (name == "positional_embedding") {
      out["pos_embed"] = t.unsqueeze(0);  // [1+L, D] -> [1, 1+L, D]
    } else if (top.count(name)) {
      out[top.at(name)] = t;
    } else if (std::regex_match(name, m, block) && in_block.count(m[2].str())) {
      out["blocks." + m[1].str() + "." + in_block.at(m[2].str())] = t;
    } else {
      throw std::runtime_error(what + ": tensor '" + name + "' is not part of a CLIP image tower dbot can build");
    }
  }
  return out;
}

std::string hf_vit_config_json(const VitConfig& cfg) {
  const nlohmann::ordered_json j = {
      {"architectures", {"ViTModel"}},
      {"model_type", "vit"},
      {"hidden_size", cfg.embed_dim},
      {"num_hidden_layers", cfg.depth},
      {"num_attention_heads", cfg.num_heads},
      {"intermediate_size", static_cast<int64_t>(cfg.embed_dim * cfg.mlp_ratio)},
      {"hidden_act", "gelu"},  // exact (erf) GELU, as timm's nn.GELU
      {"hidden_dropout_prob", 0.0},
      {"attention_probs_dropout_prob", 0.0},
      {"initializer_range", 0.02},
      {"layer_norm_eps", 1e-6},
      {"image_size", cfg.img_size},
      {"patch_size", cfg.patch_size},
      {"num_channels", cfg.in_chans},
      {"qkv_bias", true},
      {"encoder_stride", cfg.patch_size},
      {"dtype", "float32"},
  };
  return j.dump(2) + "\n";
}

}  // namespace dbot::model
