#include "dbot/train/pretrained.h"

#include <cmath>
#include <fstream>
#include <optional>
#include <stdexcept>

#include "dbot/io/safetensors.h"
#include "dbot/io/torch_pickle.h"
#include "dbot/model/layouts.h"
#include "dbot/model/registry.h"
#include "dbot/train/checkpoint.h"

namespace dbot::train {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool is_decoder_name(const std::string& name) { return name == "mask_token" || starts_with(name, "decoder_"); }

// Tensors a pretrained file may hold that no encoder uses: classification heads and their norms.
bool is_head_name(const std::string& name) {
  for (const char* p : {"head.", "head_dist.", "fc_norm.", "pre_logits.", "classifier."}) {
    if (starts_with(name, p)) return true;
  }
  return false;
}

// The heads of a `width`-wide encoder: the registry's sizes, else 64 channels per head.
int64_t infer_heads(int64_t width, const std::string& what) {
  for (const auto& name : model::registered_models()) {
    const auto cfg = model::vit_config(name);
    if (cfg.embed_dim == width) return cfg.num_heads;
  }
  if (width % 64 != 0) {
    throw std::runtime_error(what + ": the number of heads of a " + std::to_string(width) +
                             "-wide encoder cannot be inferred (width / 64 is not whole): give it "
                             "(mkd.teacher.num_heads, or dbot.model metadata)");
  }
  return width / 64;
}

// The architecture from the tensors' shapes (timm names; norm_pre and proj make a CLIP tower).
model::VitConfig infer_vit_config(const model::TensorMap& state, int64_t num_heads, const std::string& what) {
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
  if (tokens < 2 || grid * grid != tokens - 1) {
    throw std::runtime_error(what + ": pos_embed has " + std::to_string(tokens) +
                             " tokens, not 1 + a square grid (a CLS token and g x g patches)");
  }
  cfg.img_size = grid * cfg.patch_size;
  cfg.depth = model::count_blocks(state);
  if (cfg.depth > 0) cfg.mlp_ratio = static_cast<double>(need("blocks.0.mlp.fc1.weight", 2).size(0)) / cfg.embed_dim;
  cfg.num_heads = num_heads > 0 ? num_heads : infer_heads(cfg.embed_dim, what);
  if (cfg.embed_dim % cfg.num_heads != 0) {
    throw std::runtime_error(what + ": " + std::to_string(cfg.num_heads) + " heads do not divide the width " +
                             std::to_string(cfg.embed_dim));
  }
  cfg.pre_norm = state.count("norm_pre.weight") > 0;
  if (state.count("proj")) cfg.proj_dim = need("proj", 2).size(1);  // [D, P]
  if (cfg.pre_norm) cfg.norm_eps = 1e-5;                            // CLIP's (PyTorch's default), as timm's
  cfg.name = model::weights_file_model_name(cfg);
  return cfg;
}

// An OpenAI / open_clip CLIP model or image tower: its image tower with dbot's names.
model::TensorMap clip_tower(const model::TensorMap& state, Pretrained& p, const std::string& path) {
  const bool whole = state.count("visual.class_embedding") > 0;
  model::TensorMap tower;
  size_t text = 0;
  for (const auto& [name, t] : state) {
    if (!whole) {
      tower[name] = t;
    } else if (starts_with(name, "visual.")) {
      tower[name.substr(7)] = t;
    } else {
      ++text;
    }
  }
  if (text > 0) p.ignored.push_back("the text tower (" + std::to_string(text) + " tensors)");
  p.source += whole ? ", OpenAI/open_clip CLIP names (image tower)" : ", OpenAI/open_clip CLIP names";
  p.clip_names = true;
  return model::clip_to_timm(tower, path);
}

model::TensorMap tensors_of(const c10::impl::GenericDict& dict, std::vector<std::string>& ignored) {
  model::TensorMap out;
  for (const auto& item : dict) {
    if (!item.key().isString()) continue;
    if (item.value().isTensor()) {
      out[item.key().toStringRef()] = item.value().toTensor().contiguous();
    } else {
      ignored.push_back(item.key().toStringRef() + " (not a tensor)");
    }
  }
  return out;
}

// The state dict inside a torch.save file that is not a dbot checkpoint: unwraps "state_dict", "model" or
// "teacher" (the first present), then strips "module." and "backbone." prefixes.
model::TensorMap torch_save_state(const c10::IValue& root, Pretrained& p, const std::string& path) {
  if (!root.isGenericDict()) throw std::runtime_error(path + ": holds no dict of tensors");
  auto dict = root.toGenericDict();
  p.source = "torch.save dict";
  for (const char* wrapper : {"state_dict", "model", "teacher"}) {
    if (dict.contains(wrapper) && dict.at(wrapper).isGenericDict()) {
      dict = dict.at(wrapper).toGenericDict();
      p.source += std::string(", '") + wrapper + "' wrapper";
      break;
    }
  }
  model::TensorMap raw = tensors_of(dict, p.ignored);
  if (raw.empty()) throw std::runtime_error(path + ": no tensors found (looked under state_dict, model, teacher)");
  model::TensorMap state;
  for (auto& [name, t] : raw) {
    std::string n = name;
    for (bool again = true; again;) {
      again = false;
      for (const char* prefix : {"module.", "backbone."}) {
        if (starts_with(n, prefix)) {
          if (p.source.find(std::string("'") + prefix) == std::string::npos) {
            p.source += std::string(", '") + prefix + "' prefix";
          }
          n = n.substr(std::string(prefix).size());
          again = true;
        }
      }
    }
    state[n] = t;
  }
  return state;
}

// Refuses what dbot cannot build, drops heads (and the decoder unless kept), and makes HF names timm's.
model::TensorMap sort_out(model::TensorMap state, const PretrainedOptions& opts, Pretrained& p,
                          const std::string& path) {
  if (state.count("class_embedding") || state.count("visual.class_embedding")) state = clip_tower(state, p, path);
  if (state.count("vision_model.embeddings.class_embedding")) {
    throw std::runtime_error(path +
                             ": Hugging Face CLIP names (vision_model.*): not supported; use the OpenAI / "
                             "open_clip checkpoint of the model");
  }
  if (state.count("dist_token")) {
    throw std::runtime_error(path +
                             ": a distilled DeiT (dist_token: two prefix tokens): not supported; use the "
                             "non-distilled model");
  }
  model::TensorMap hf;
  for (auto it = state.begin(); it != state.end();) {
    std::string n = it->first;
    if (starts_with(n, "vit.")) n = n.substr(4);
    if (starts_with(n, "pooler.")) {  // Hugging Face's pooler: dbot trains none
      p.ignored.push_back(it->first);
      it = state.erase(it);
    } else if (starts_with(n, "embeddings.") || starts_with(n, "encoder.layer.") || starts_with(n, "layernorm.")) {
      hf[n] = it->second;
      it = state.erase(it);
    } else {
      ++it;
    }
  }
  if (!hf.empty()) {
    p.source += ", Hugging Face names";
    for (auto& [n, t] : model::hf_to_timm(hf, path)) state[n] = t;
  }
  size_t dropped_decoder = 0;  // listed as one item: an MAE/dBOT decoder is dozens of tensors
  for (auto it = state.begin(); it != state.end();) {
    if (is_head_name(it->first)) {
      p.ignored.push_back(it->first);
      it = state.erase(it);
    } else if (is_decoder_name(it->first)) {
      if (opts.keep_decoder) {
        p.decoder[it->first] = it->second;
      } else {
        ++dropped_decoder;
      }
      it = state.erase(it);
    } else {
      ++it;
    }
  }
  if (dropped_decoder > 0) {
    p.ignored.push_back("the MAE/dBOT decoder (" + std::to_string(dropped_decoder) + " tensors)");
  }
  return state;
}

}  // namespace

model::TensorMap encoder_tensors(const model::TensorMap& state, const model::VitConfig& cfg, const std::string& what) {
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

bool is_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[9] = {};
  in.read(head, 9);
  return in.gcount() == 9 && head[8] == '{';  // u64 header size, then the JSON object
}

Pretrained read_pretrained(const std::string& path, const PretrainedOptions& opts) {
  Pretrained p;
  model::TensorMap state;
  std::optional<model::VitConfig> cfg;
  if (is_safetensors(path)) {
    auto st = io::read_safetensors(path);
    p.source = "safetensors";
    const auto meta = st.metadata.find("dbot.model");
    if (meta != st.metadata.end()) {
      cfg = model::vit_config_from_json(meta->second, path);
      p.source += " (dbot.model metadata)";
    }
    const auto recipe = st.metadata.find("dbot.recipe");
    if (recipe != st.metadata.end()) p.recipe = recipe->second;
    state = std::move(st.tensors);
  } else {
    const c10::IValue root = io::read_torch_save(path);
    if (is_checkpoint(root)) {
      const Checkpoint ckpt = checkpoint_from_value(root, path);
      const bool teacher = opts.which == "teacher";
      state = teacher ? ckpt.teacher : ckpt.model;
      const auto& arch = teacher ? ckpt.teacher_arch : ckpt.model_arch;
      if (!arch.empty()) {
        cfg = model::vit_config_from_json(arch, path);
      } else if (opts.checkpoint_cfg != nullptr) {
        cfg = *opts.checkpoint_cfg;
        cfg->depth = model::count_blocks(state);
      }
      p.source = "dbot checkpoint (" + opts.which + ")";
      p.recipe = ckpt.config;
    } else {
      state = torch_save_state(root, p, path);
    }
  }
  state = sort_out(std::move(state), opts, p, path);
  p.arch_from_shapes = !cfg;
  if (!cfg) {
    cfg = infer_vit_config(state, opts.num_heads, path);
    cfg->quick_gelu = p.clip_names;  // OpenAI's activation; metadata, when there is some, says
  } else if (opts.num_heads > 0) {
    cfg->num_heads = opts.num_heads;  // over the metadata's (shapes: infer_vit_config took it)
  }
  if (opts.act != "auto" && opts.act != "gelu" && opts.act != "quick_gelu") {
    throw std::invalid_argument("activation must be auto, gelu or quick_gelu, got '" + opts.act + "'");
  }
  if (opts.act != "auto") cfg->quick_gelu = opts.act == "quick_gelu";
  cfg->drop_path_rate = 0.0;
  if (!opts.need_final_norm && !state.count("norm.weight") && !state.count("norm.bias")) {
    state["norm.weight"] = at::ones({cfg->embed_dim});
    state["norm.bias"] = at::zeros({cfg->embed_dim});
    p.source += ", no final norm (identity)";
  }
  p.encoder.cfg = *cfg;
  p.encoder.state = encoder_tensors(state, *cfg, path);
  return p;
}

mkd::StartWeights read_start_weights(const model::VitConfig& student, const mkd::MkdConfig& cfg,
                                     const std::vector<double>& data_mean, const std::vector<double>& data_std) {
  mkd::StartWeights start;
  if (!cfg.teacher_init.empty()) {
    PretrainedOptions opts;
    opts.num_heads = cfg.teacher_num_heads;
    opts.act = cfg.teacher_act;
    opts.need_final_norm = false;  // the target is taken before it
    const auto p = read_pretrained(cfg.teacher_init, opts);
    start.teacher = mkd::fit_to_grid(p.encoder, student, cfg.teacher_init);
    start.teacher_what = cfg.teacher_init;
    for (size_t c = 0; c < cfg.teacher_mean.size(); ++c) {  // sizes checked by the recipe
      start.teacher_input.scale.push_back(data_std[c] / cfg.teacher_std[c]);
      start.teacher_input.shift.push_back((data_mean[c] - cfg.teacher_mean[c]) / cfg.teacher_std[c]);
    }
    start.log.push_back("teacher (stage 0): " + cfg.teacher_init + ": " + p.summary());
    const auto spec = mkd::loss_spec(cfg.loss, p.encoder.cfg);
    start.log.push_back(std::string("loss (stage 1): ") +
                        (spec.cosine ? "1 - cosine similarity" : "SmoothL1 (beta 2) on the normalized target") +
                        (spec.cls ? ", masked patches and CLS" : ", masked patches (CLS dropped)"));
  }
  if (!cfg.student_init.empty()) {
    PretrainedOptions opts;
    opts.num_heads = student.num_heads;
    opts.keep_decoder = true;
    const auto p = read_pretrained(cfg.student_init, opts);
    if (p.encoder.cfg.patch_size != student.patch_size || p.encoder.cfg.embed_dim != student.embed_dim ||
        p.encoder.cfg.depth != student.depth || p.encoder.cfg.clip()) {
      throw std::runtime_error(cfg.student_init + ": a " + p.encoder.cfg.name + " encoder cannot start a " +
                               student.name + " student (width, depth and patch size must match; a CLIP tower " +
                               "can only be a teacher)");
    }
    start.student = mkd::fit_to_grid(p.encoder, student, cfg.student_init).state;
    for (const auto& [name, t] : p.decoder) start.student[name] = t;
    start.student_what = cfg.student_init;
    start.log.push_back("student init: " + cfg.student_init + ": " + p.summary() +
                        (p.decoder.empty() ? "; no decoder in the file" : "; with its decoder"));
  }
  return start;
}

std::string Pretrained::summary() const {
  const auto& c = encoder.cfg;
  std::string s = source + ": ViT " + std::to_string(c.embed_dim) + " wide, " + std::to_string(c.depth) + " blocks, " +
                  std::to_string(c.num_heads) + " heads, patch " + std::to_string(c.patch_size) + ", " +
                  std::to_string(c.grid_size()) + "x" + std::to_string(c.grid_size()) + " grid, " +
                  std::to_string(c.in_chans) + " channel(s)";
  if (c.clip()) {
    s += std::string(", CLIP tower (") + (c.pre_norm ? "ln_pre, " : "") + (c.quick_gelu ? "QuickGELU" : "GELU") +
         (c.proj_dim > 0 ? ", proj to " + std::to_string(c.proj_dim) : std::string()) + ")";
  }
  if (!ignored.empty()) {
    s += "; ignored " + std::to_string(ignored.size()) + ":";
    for (size_t i = 0; i < ignored.size(); ++i) s += (i ? ", " : " ") + ignored[i];
  }
  return s;
}

}  // namespace dbot::train
