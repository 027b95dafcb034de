// Weights out of and into dbot: exporting a checkpoint's networks as safetensors in timm or Hugging Face
// layout (`dbot export`). Reading weight files back: train/pretrained.h.
//
// An exported file's "__metadata__": format = pt (what Transformers requires), dbot.version, dbot.part,
// dbot.layout, dbot.stage, dbot.model (the encoder's architecture as JSON, model/layouts.h), dbot.recipe
// (the checkpoint's resolved recipe, YAML); for part = student also dbot.decoder.
#pragma once

#include <string>
#include <vector>

#include "dbot/train/checkpoint.h"

namespace dbot::train {

struct ExportOptions {
  std::string part = "encoder";  // encoder (the student's encoder) | student (encoder + decoder) | teacher
  std::string layout = "timm";   // timm: one .safetensors file | hf: a folder with model.safetensors + config.json
};

struct ExportResult {
  std::vector<std::string> files;  // written, in order
  model::VitConfig cfg;            // the exported encoder's architecture
  size_t tensors = 0;
  int64_t parameters = 0;
};

// student_cfg and decoder: the checkpoint's recipe (model.*, mkd.decoder_*). Throws naming the checkpoint
// when the part does not fit the layout (the Hugging Face layout holds an encoder only).
ExportResult export_weights(const Checkpoint& ckpt, const std::string& ckpt_path, const model::VitConfig& student_cfg,
                            const mkd::DecoderConfig& decoder, const ExportOptions& opts, const std::string& out);

}  // namespace dbot::train
