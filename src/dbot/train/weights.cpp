#include "dbot/train/weights.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "dbot/io/files.h"
#include "dbot/io/safetensors.h"
#include "dbot/model/layouts.h"
#include "dbot/version.h"

namespace dbot::train {

namespace {

bool is_decoder_name(const std::string& name) { return name == "mask_token" || name.rfind("decoder_", 0) == 0; }

// The encoder's tensors of `state` (timm names), checked against a ViT of `cfg`: every tensor present with
// its shape. Decoder tensors are left out; any other extra tensor is an error naming it.
model::TensorMap encoder_state(const model::TensorMap& state, const model::VitConfig& cfg, const std::string& what) {
  model::VisionTransformer encoder(cfg);
  model::load_state_dict(*encoder, state, what);
  auto out = model::state_dict(*encoder);
  for (const auto& [name, t] : state) {
    if (!out.count(name) && !is_decoder_name(name)) {
      throw std::runtime_error(what + ": tensor '" + name + "' is not part of a ViT encoder of this architecture");
    }
  }
  return out;
}

// The architecture from the tensors' shapes (timm names).
model::VitConfig infer_vit_config(const model::TensorMap& state, const std::string& what) {
  auto need = [&](const std::string& name, int64_t dim) -> const at::Tensor& {
    const auto it = state.find(name);
    if (it == state.end()) throw std::runtime_error(what + ": missing tensor '" + name + "'");
    if (it->second.dim() != dim) {
      throw std::runtime_error(what + ": tensor '" + name + "' has shape " + c10::str(it->second.sizes()) +
                               ", expected " + std::to_string(dim) + " dimensions");
    }
    return it->second;
  };
  model::VitConfig cfg;
  const auto& patch = need("patch_embed.proj.weight", 4);  // [D, C, p, p]
  cfg.embed_dim = patch.size(0);
  cfg.in_chans = patch.size(1);
  cfg.patch_size = patch.size(2);
  const int64_t tokens = need("pos_embed", 3).size(1);  // 1 + g*g
  const auto grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(tokens - 1))));
  if (grid * grid != tokens - 1) {
    throw std::runtime_error(what + ": pos_embed has " + std::to_string(tokens) +
                             " tokens, not 1 + a square grid (a CLS token and g x g patches)");
  }
  cfg.img_size = grid * cfg.patch_size;
  cfg.depth = model::count_blocks(state);
  if (cfg.depth > 0) cfg.mlp_ratio = static_cast<double>(need("blocks.0.mlp.fc1.weight", 2).size(0)) / cfg.embed_dim;
  if (cfg.embed_dim % 64 != 0) {
    throw std::runtime_error(what + ": the file has no dbot.model metadata and the number of heads of a " +
                             std::to_string(cfg.embed_dim) +
                             "-wide encoder cannot be inferred (width / 64 is not whole)");
  }
  cfg.num_heads = cfg.embed_dim / 64;
  cfg.name = model::weights_file_model_name(cfg);
  return cfg;
}

int64_t count_parameters(const model::TensorMap& state) {
  int64_t n = 0;
  for (const auto& [name, t] : state) n += t.numel();
  return n;
}

}  // namespace

bool is_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[9] = {};
  in.read(head, 9);
  return in.gcount() == 9 && head[8] == '{';  // u64 header size, then the JSON object
}

ExportResult export_weights(const Checkpoint& ckpt, const std::string& ckpt_path, const model::VitConfig& student_cfg,
                            const mkd::DecoderConfig& decoder, const ExportOptions& opts, const std::string& out) {
  const std::string what = ckpt_path + " (" + opts.part + ")";
  if (opts.layout != "timm" && opts.layout != "hf") throw std::runtime_error("unknown layout '" + opts.layout + "'");
  ExportResult result;
  result.cfg = student_cfg;
  result.cfg.drop_path_rate = 0.0;
  model::TensorMap tensors;
  std::map<std::string, std::string> meta = {{"format", "pt"},
                                             {"dbot.version", kVersion},
                                             {"dbot.part", opts.part},
                                             {"dbot.layout", opts.layout},
                                             {"dbot.stage", std::to_string(ckpt.stage)},
                                             {"dbot.recipe", ckpt.config}};
  if (opts.part == "encoder" || opts.part == "teacher") {
    const auto& state = opts.part == "teacher" ? ckpt.teacher : ckpt.model;
    result.cfg.depth = model::count_blocks(state);
    tensors = encoder_state(state, result.cfg, what);
  } else if (opts.part == "student") {
    if (opts.layout == "hf") {
      throw std::runtime_error(what +
                               ": the Hugging Face layout holds an encoder only (use --part encoder or "
                               "--layout timm)");
    }
    tensors = ckpt.model;
    const nlohmann::ordered_json d = {{"embed_dim", decoder.embed_dim},
                                      {"depth", decoder.depth},
                                      {"num_heads", decoder.num_heads},
                                      {"mlp_ratio", decoder.mlp_ratio},
                                      {"target_dim", ckpt.model.at("decoder_predp.weight").size(0)}};
    meta["dbot.decoder"] = d.dump();
  } else {
    throw std::runtime_error("unknown part '" + opts.part + "': expected encoder, student or teacher");
  }
  meta["dbot.model"] = model::vit_config_to_json(result.cfg);
  result.tensors = tensors.size();
  result.parameters = count_parameters(tensors);
  if (opts.layout == "timm") {
    const auto parent = std::filesystem::path(out).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) throw std::runtime_error("cannot create the folder '" + parent.string() + "': " + ec.message());
    io::write_safetensors(out, tensors, meta);
    result.files = {out};
    return result;
  }
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) throw std::runtime_error("cannot create the folder '" + out + "': " + ec.message());
  const std::string weights = out + "/model.safetensors", config = out + "/config.json";
  io::write_safetensors(weights, model::timm_to_hf(tensors, result.cfg), meta);
  io::write_atomic(config, model::hf_vit_config_json(result.cfg));
  result.files = {weights, config};
  return result;
}

EncoderWeights read_encoder(const std::string& path, const std::string& which, const model::VitConfig& checkpoint_cfg) {
  EncoderWeights w;
  if (!is_safetensors(path)) {
    const Checkpoint ckpt = load_checkpoint(path);
    const auto& state = which == "teacher" ? ckpt.teacher : ckpt.model;
    w.cfg = checkpoint_cfg;
    w.cfg.depth = model::count_blocks(state);
    w.cfg.drop_path_rate = 0.0;
    w.state = encoder_state(state, w.cfg, path + " (" + which + ")");
    return w;
  }
  auto st = io::read_safetensors(path);
  const bool hf = st.tensors.count("embeddings.cls_token") > 0;
  model::TensorMap state = hf ? model::hf_to_timm(st.tensors, path) : std::move(st.tensors);
  const auto meta = st.metadata.find("dbot.model");
  w.cfg = meta != st.metadata.end() ? model::vit_config_from_json(meta->second, path) : infer_vit_config(state, path);
  w.state = encoder_state(state, w.cfg, path);
  return w;
}

}  // namespace dbot::train
