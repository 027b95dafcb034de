// Weights out of and into dbot: exporting a checkpoint's networks as safetensors in timm or Hugging Face
// layout (`dbot export`), and reading a ViT encoder from any weights file dbot understands (`dbot eval`,
// `dbot extract`).
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

// A ViT encoder's architecture and tensors with timm names.
struct EncoderWeights {
  model::VitConfig cfg;
  model::TensorMap state;
};

// The encoder in `path`: a dbot checkpoint (`which` = model: the student's encoder; teacher: the teacher),
// whose architecture is `checkpoint_cfg` with the depth it holds; or a safetensors file in timm or Hugging
// Face layout, whose architecture comes from its dbot.model metadata, else from the tensors' shapes (heads:
// width / 64, as every timm ViT size but huge). Errors name the file and the tensor.
EncoderWeights read_encoder(const std::string& path, const std::string& which, const model::VitConfig& checkpoint_cfg);

// True when the file starts like a safetensors file (not a zip: dbot checkpoints are torch.save zips).
bool is_safetensors(const std::string& path);

}  // namespace dbot::train
