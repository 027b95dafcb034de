#include "dbot/train/weights.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "dbot/io/files.h"
#include "dbot/io/safetensors.h"
#include "dbot/model/layouts.h"
#include "dbot/train/pretrained.h"
#include "dbot/version.h"

namespace dbot::train {

namespace {

int64_t count_parameters(const model::TensorMap& state) {
  int64_t n = 0;
  for (const auto& [name, t] : state) n += t.numel();
  return n;
}

}  // namespace

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
    const bool teacher = opts.part == "teacher";
    const auto& state = teacher ? ckpt.teacher : ckpt.model;
    const auto& arch = teacher ? ckpt.teacher_arch : ckpt.model_arch;  // format 3: the teacher may differ
    if (!arch.empty()) result.cfg = model::vit_config_from_json(arch, ckpt_path);  // drop_path_rate 0
    result.cfg.depth = model::count_blocks(state);
    tensors = encoder_tensors(state, result.cfg, what);
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
  if (result.cfg.clip()) {
    throw std::runtime_error(what + ": a CLIP image tower (ln_pre, proj) has no Hugging Face ViTModel layout: "
                                    "use --layout timm");
  }
  io::write_safetensors(weights, model::timm_to_hf(tensors, result.cfg), meta);
  io::write_atomic(config, model::hf_vit_config_json(result.cfg));
  result.files = {weights, config};
  return result;
}

}  // namespace dbot::train
