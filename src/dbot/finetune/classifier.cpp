#include "dbot/finetune/classifier.h"

#include <cmath>
#include <stdexcept>

#include "dbot/model/pos_embed.h"

namespace dbot::finetune {

model::VitConfig classifier_config(model::VitConfig cfg, double drop_path_rate) {
  cfg.learned_pos = true;
  cfg.final_norm = false;
  cfg.drop_path_rate = drop_path_rate;
  return cfg;
}

ClassifierImpl::ClassifierImpl(model::VitConfig cfg, int64_t classes)
    : model::VisionTransformerImpl(classifier_config(cfg, cfg.drop_path_rate)),
      fc_norm(register_module("fc_norm",
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg.embed_dim}).eps(cfg.norm_eps)))),
      head(register_module("head", torch::nn::Linear(cfg.embed_dim, classes))),
      num_classes(classes) {
  if (classes < 2) throw std::invalid_argument("a classifier needs at least 2 classes, got " + std::to_string(classes));
}

at::Tensor ClassifierImpl::forward(const at::Tensor& imgs, at::Generator* gen) {
  auto x = forward_blocks(embed_tokens(imgs), gen);  // [N, 1+L, D]
  return head(fc_norm(x.slice(1, 1).mean(1)));       // global average of the patch tokens -> [N, classes]
}

namespace {
void init_head(Classifier& c, double std, at::Generator& gen) {
  at::NoGradGuard no_grad;
  model::init_layer_norm(c->fc_norm);
  c->head->weight.normal_(0.0, std, gen).clamp_(-2.0, 2.0);  // timm trunc_normal_(std, a=-2, b=2)
  c->head->bias.zero_();
}
}  // namespace

void load_encoder(Classifier& c, const model::TensorMap& encoder, const std::string& what, double head_init_std,
                  at::Generator& gen) {
  at::NoGradGuard no_grad;
  for (auto& item : c->named_parameters(true)) {
    const auto& name = item.key();
    if (name.rfind("fc_norm.", 0) == 0 || name.rfind("head.", 0) == 0) continue;
    const auto it = encoder.find(name);
    if (it == encoder.end()) throw std::runtime_error(what + ": missing tensor '" + name + "' for the classifier");
    at::Tensor src = it->second;
    if (name == "pos_embed" && src.sizes() != item.value().sizes() && src.dim() == 3) {
      src = model::resample_abs_pos_embed(src, c->cfg.grid_size());  // another grid: timm's resampling
    }
    if (src.sizes() != item.value().sizes()) {
      throw std::runtime_error(what + ": tensor '" + name + "' has shape " + c10::str(src.sizes()) +
                               ", the classifier's is " + c10::str(item.value().sizes()));
    }
    item.value().copy_(src);
  }
  init_head(c, head_init_std, gen);
}

void init_from_scratch(Classifier& c, double head_init_std, at::Generator& gen) {
  c->initialize_weights(gen, /*reset_patch_bias=*/true);
  init_head(c, head_init_std, gen);
}

int64_t layer_id(const std::string& name, int64_t depth) {
  if (name == "cls_token" || name == "pos_embed" || name.rfind("patch_embed", 0) == 0) return 0;
  if (name.rfind("blocks.", 0) == 0) return std::stoll(name.substr(7, name.find('.', 7) - 7)) + 1;
  return depth + 1;
}

train::ParamGroupRule layer_decay_rule(int64_t depth, double layer_decay) {
  return [depth, layer_decay](const std::string& name, const at::Tensor& p) {
    train::ParamGroup g;
    g.lr_scale = std::pow(layer_decay, static_cast<double>(depth + 1 - layer_id(name, depth)));
    g.decay = !(p.dim() == 1 || name == "pos_embed" || name == "cls_token");
    return g;
  };
}

}  // namespace dbot::finetune
