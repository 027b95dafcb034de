// Weight layouts of a ViT encoder: dbot's own names are timm's (model/vit.h); this file maps them to and
// from Hugging Face Transformers' ViTModel names and writes the architecture down as JSON, so that a
// weights file says what network it holds.
//
//   timm                               Hugging Face ViTModel
//   cls_token                          embeddings.cls_token
//   pos_embed                          embeddings.position_embeddings
//   patch_embed.proj.{weight,bias}     embeddings.patch_embeddings.projection.{weight,bias}
//   blocks.i.norm1                     encoder.layer.i.layernorm_before
//   blocks.i.attn.qkv [3D, D]          encoder.layer.i.attention.attention.{query,key,value} [D, D] each
//   blocks.i.attn.proj                 encoder.layer.i.attention.output.dense
//   blocks.i.norm2                     encoder.layer.i.layernorm_after
//   blocks.i.mlp.fc1 / fc2             encoder.layer.i.intermediate.dense / output.dense
//   norm                               layernorm
// Hugging Face's ViTModel adds a pooler (dense + tanh on CLS) that self-supervised pretraining never trains;
// dbot writes none, so the model loads with ViTModel.from_pretrained(dir, add_pooling_layer=False).
#pragma once

#include <string>

#include "dbot/model/vit.h"

namespace dbot::model {

// {"img_size": .., "patch_size": .., "in_chans": .., "embed_dim": .., "depth": .., "num_heads": ..,
//  "mlp_ratio": ..}, plus "pre_norm", "quick_gelu", "norm_eps" and "proj_dim" for a CLIP tower: what rebuilds
// the encoder (the "dbot.model" metadata of an exported file). Files without the CLIP keys are plain ViTs.
std::string vit_config_to_json(const VitConfig& cfg);
// The name given to an architecture read from a weights file (not a registry name): vit_d<D>x<depth>_patch<p>_<img>.
std::string weights_file_model_name(const VitConfig& cfg);
// Throws naming `what` when a field is missing or the architecture is invalid.
VitConfig vit_config_from_json(const std::string& json, const std::string& what);

// timm names -> Hugging Face ViTModel names (every tensor of the encoder, nothing else, else an error).
TensorMap timm_to_hf(const TensorMap& timm, const VitConfig& cfg);
// Hugging Face ViTModel names -> timm names; `pooler.*` is dropped. Errors name `what` and the tensor.
TensorMap hf_to_timm(const TensorMap& hf, const std::string& what);

// OpenAI / open_clip image-tower names (CLIP's `visual.` prefix removed) -> dbot's:
//   class_embedding [D] -> cls_token [1, 1, D]      positional_embedding [1+L, D] -> pos_embed [1, 1+L, D]
//   conv1.weight -> patch_embed.proj.weight         ln_pre -> norm_pre        ln_post -> norm     proj -> proj
//   transformer.resblocks.i.{ln_1, attn.in_proj_{weight,bias}, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}
//     -> blocks.i.{norm1, attn.qkv.{weight,bias}, attn.proj, norm2, mlp.fc1, mlp.fc2}
// Any other tensor (an attention pooler, layer scale, ...) is an error naming `what` and the tensor.
TensorMap clip_to_timm(const TensorMap& clip, const std::string& what);

// The config.json of a Hugging Face ViTModel of this architecture (exact GELU, LayerNorm eps 1e-6, qkv bias).
std::string hf_vit_config_json(const VitConfig& cfg);

}  // namespace dbot::model
