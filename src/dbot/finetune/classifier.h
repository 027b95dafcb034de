// The fine-tuning network (METHOD.md, "Fine-tuning"): the ViT encoder with a learnable position table, the
// patch tokens' global average -> fc_norm (LayerNorm) -> head (Linear). Parameter names are timm's
// VisionTransformer(global_pool='avg', num_classes=C) (no final `norm`), so its state dict loads strictly there.
//
// Also MAE's layer-wise lr decay (util/lr_decay.py param_groups_lrd) as an AdamW group rule: cls_token, pos_embed
// and patch_embed are layer 0, block i is layer i+1, fc_norm and head are layer depth+1; lr scale
// layer_decay^(depth+1 - layer); no weight decay for 1-D parameters (biases, norms), pos_embed and cls_token.
#pragma once

#include <string>

#include "dbot/model/vit.h"
#include "dbot/train/optim.h"

namespace dbot::finetune {

class ClassifierImpl : public model::VisionTransformerImpl {
 public:
  // cfg: the encoder's architecture (learned_pos and final_norm are set here); drop path from cfg.
  ClassifierImpl(model::VitConfig cfg, int64_t num_classes);
  // [N, C, H, W] -> logits [N, num_classes]; drop path draws from gen (nullptr: eval mode).
  at::Tensor forward(const at::Tensor& imgs, at::Generator* gen = nullptr);

  torch::nn::LayerNorm fc_norm{nullptr};
  torch::nn::Linear head{nullptr};
  int64_t num_classes;
};
TORCH_MODULE(Classifier);

// The architecture of a classifier over an encoder of `encoder` shape.
model::VitConfig classifier_config(model::VitConfig encoder, double drop_path_rate);

// Loads an encoder's tensors (timm names; `norm.*` is dropped as MAE's fine-tuning does; a position table of
// another grid is resampled as timm does), then initializes fc_norm (1, 0) and the head (weight
// trunc-normal(std head_init_std) from gen, bias 0). Errors name `what` and the missing or misshapen tensor.
void load_encoder(Classifier& c, const model::TensorMap& encoder, const std::string& what, double head_init_std,
                  at::Generator& gen);
// Random initialization (the supervised baseline, --from-scratch): the dBOT initialization of the encoder
// (xavier Linear weights, sin-cos positions as the learnable start), then fc_norm and the head as above.
void init_from_scratch(Classifier& c, double head_init_std, at::Generator& gen);

// MAE's layer id of a parameter name for a ViT of `depth` blocks.
int64_t layer_id(const std::string& name, int64_t depth);
// The AdamW group rule of layer-wise lr decay (layer_decay 1: every scale 1).
train::ParamGroupRule layer_decay_rule(int64_t depth, double layer_decay);

}  // namespace dbot::finetune
