#include "dbot/mkd/decoder.h"

#include "dbot/model/layer_norm.h"
#include "dbot/model/pos_embed.h"

namespace dbot::mkd {

namespace nn = torch::nn;

Decoder::Decoder(nn::Module& owner, const DecoderConfig& config, int64_t encoder_dim, int64_t target_dim, int64_t grid)
    : cfg(config),
      grid_size(grid),
      decoder_embed(owner.register_module("decoder_embed", nn::Linear(encoder_dim, config.embed_dim))),
      mask_token(owner.register_parameter("mask_token", at::zeros({1, 1, config.embed_dim}))),
      decoder_pos_embed(owner.register_buffer(
          "decoder_pos_embed", model::get_2d_sincos_pos_embed(config.embed_dim, grid, true).unsqueeze(0))),
      decoder_blocks(owner, "decoder_blocks", config.depth, config.embed_dim, config.num_heads, config.mlp_ratio,
                     config.drop_path_rate),
      decoder_norm(
          owner.register_module("decoder_norm", nn::LayerNorm(nn::LayerNormOptions({config.embed_dim}).eps(1e-6)))),
      decoder_predp(owner.register_module("decoder_predp", nn::Linear(config.embed_dim, target_dim))) {}

at::Tensor Decoder::insert_mask_tokens(const at::Tensor& x, const at::Tensor& ids_restore) const {
  const int64_t N = x.size(0), L = ids_restore.size(1), K = x.size(1) - 1;
  const auto dtype = at::promote_types(x.scalar_type(), mask_token.scalar_type());
  auto mask_tokens = mask_token.to(dtype).expand({N, L - K, -1});
  auto shuffled = at::cat({x.slice(1, 1).to(dtype), mask_tokens}, 1);  // [N, L, Dd]
  auto unshuffled = model::take_rows(shuffled, ids_restore);           // [N, L, Dd]
  return at::cat({x.slice(1, 0, 1).to(dtype), unshuffled}, 1);         // [N, 1+L, Dd]
}

at::Tensor Decoder::forward(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen,
                            const at::Tensor& rows) {
  auto x = insert_mask_tokens(model::linear(decoder_embed, latent), ids_restore) + decoder_pos_embed;  // [N, 1+L, Dd]
  x = decoder_blocks.forward(x, gen, rows);              // [N, 1+L or R, Dd]
  return model::linear(decoder_predp, model::layer_norm(decoder_norm, x));  // [N, 1+L or R, D_teacher]
}

void Decoder::initialize_weights(at::Generator& gen) {
  at::NoGradGuard no_grad;
  decoder_pos_embed.copy_(model::get_2d_sincos_pos_embed(cfg.embed_dim, grid_size, true).unsqueeze(0));
  mask_token.normal_(0.0, 0.02, gen);
  model::init_linear(decoder_embed, gen);
  for (auto& block : decoder_blocks.blocks) model::init_block(block, gen);
  model::init_layer_norm(decoder_norm);
  model::init_linear(decoder_predp, gen);
}

}  // namespace dbot::mkd
