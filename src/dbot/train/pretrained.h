// Pretrained ViT encoders from weight files of any origin: for teachers (mkd.teacher.init), for the
// student's initialization (mkd.student.init) and for evaluation (`dbot eval`, `dbot extract`).
//
// Files read:
// - dbot checkpoints (`which`: the student "model" or the "teacher"), architecture from the checkpoint (v3),
//   else from `checkpoint_cfg` (the caller's recipe), else from the shapes;
// - safetensors: dbot's export (architecture in its dbot.model metadata), timm names or Hugging Face ViT
//   names (architecture from the shapes);
// - torch.save files of timm, MAE, DeiT, DINO and dBOT (io/torch_pickle.h): the state dict is found under a
//   "state_dict", "model" or "teacher" wrapper, "module." and "backbone." prefixes are stripped.
// Classification heads (timm's head/head_dist, Hugging Face's classifier and pooler), fc_norm, pre_logits, the
// MAE/dBOT decoder and mask_token are dropped and listed in
// `ignored` (the decoder is kept when asked). Any other tensor the encoder has no place for, a missing
// tensor or a wrong shape is a one-line error naming the file and the tensor. Heads cannot be read from
// shapes: `num_heads` when given, else the registry's heads for that width (tiny 3 ... huge 16), else
// width / 64. A distilled DeiT (dist_token) is refused with a message.
// CLIP image towers with OpenAI / open_clip names (a whole CLIP model: the "visual." tensors, the text tower
// is ignored and listed; or the tower alone) become a CLIP-flavoured encoder (model::clip_to_timm, VitConfig's
// pre_norm, proj_dim, LayerNorm eps 1e-5); a file cannot say its activation: `act` (auto: QuickGELU for these
// names, OpenAI's and open_clip's *-quickgelu models; gelu for open_clip's others).
#pragma once

#include <string>
#include <vector>

#include "dbot/mkd/distiller.h"
#include "dbot/model/vit.h"

namespace dbot::train {

struct PretrainedOptions {
  std::string which = "model";                       // a dbot checkpoint's network: model | teacher
  const model::VitConfig* checkpoint_cfg = nullptr;  // a format-2 dbot checkpoint's architecture (its recipe)
  int64_t num_heads = 0;                             // 0: metadata, else the registry's, else width / 64
  bool need_final_norm = true;  // false: a file without norm.* (MAE's global-pool models) gets an identity norm
  bool keep_decoder = false;    // also return decoder_* and mask_token
  std::string act = "auto";     // the MLP activation: auto (QuickGELU for CLIP names, else GELU) | gelu | quick_gelu
};

struct Pretrained {
  model::EncoderWeights encoder;     // drop_path_rate 0
  model::TensorMap decoder;          // decoder_* and mask_token, when keep_decoder and present
  std::vector<std::string> ignored;  // tensors dropped by name (heads, decoder, ...)
  std::string source;                // what the file was read as, e.g. "torch.save dict, 'model' wrapper"
  std::string recipe;                // the recipe the file carries (a checkpoint's config, dbot.recipe), YAML
  bool arch_from_shapes = false;     // the architecture was inferred (heads: see above)
  bool clip_names = false;           // the file had OpenAI / open_clip CLIP names
  std::string summary() const;       // one line: source, architecture, what was ignored
};

Pretrained read_pretrained(const std::string& path, const PretrainedOptions& opts = {});

// The encoder tensors of `state` for a ViT of `cfg`: every tensor present with its shape; decoder tensors
// are left out; any other extra tensor is an error naming it and `what`.
model::TensorMap encoder_tensors(const model::TensorMap& state, const model::VitConfig& cfg, const std::string& what);

// The files of mkd.teacher_init (any encoder: fit to the student's grid, no final norm needed) and
// mkd.student_init (the student's architecture, with its decoder when the file has one) read for a new
// run; empty when neither is set. Each file gives a line in `log`.
// data_mean/data_std: the images' normalization, for mkd.teacher.mean/std (the teacher's own).
mkd::StartWeights read_start_weights(const model::VitConfig& student, const mkd::MkdConfig& cfg,
                                     const std::vector<double>& data_mean, const std::vector<double>& data_std);

// True when the file starts like a safetensors file (dbot checkpoints and torch.save files are zips).
bool is_safetensors(const std::string& path);

}  // namespace dbot::train
