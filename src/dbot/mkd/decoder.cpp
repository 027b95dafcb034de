#include "dbot/mkd/decoder.h"

#include "dbot/model/pos_embed.h"

namespace dbot::mkd {

namespace nn = torch::nn;

DecoderImpl::DecoderImpl(const DecoderConfig& config, int64_t encoder_dim, int64_t target_dim, int64_t grid)
    : cfg(config),
      grid_size(grid),
      decoder_embed(register_module("decoder_embed", nn::Linear(encoder_dim, config.embed_dim))),
      mask_token(register_parameter("mask_token", at::zeros({1, 1, config.embed_dim}))),
      decoder_pos_embed(register_buffer("decoder_pos_embed",
                                        model::get_2d_sincos_pos_embed(config.embed_dim, grid, true).unsqueeze(0))),
      decoder_blocks(*this, "decoder_blocks", config.depth, config.embed_dim, config.num_heads, config.mlp_ratio,
                     config.drop_path_rate),
      decoder_norm(register_module("decoder_norm", nn::LayerNorm(nn::LayerNormOptions({config.embed_dim}).eps(1e-6)))),
      decoder_predp(register_module("decoder_predp", nn::Linear(config.embed_dim, target_dim))) {}

at::Tensor DecoderImpl::forward(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen) {
  auto x = decoder_embed(latent);  // [N, 1+K, Dd]
  const int64_t N = x.size(0), L = ids_restore.size(1), K = x.size(1) - 1;
  // Append a mask token for every removed patch, then unshuffle back to the patch order (CLS stays first).
  auto mask_tokens = mask_token.to(x.scalar_type()).expand({N, L - K, -1});
  auto shuffled = at::cat({x.slice(1, 1), mask_tokens}, 1);            // [N, L, Dd]
  auto index = ids_restore.unsqueeze(-1).expand({-1, -1, x.size(2)});  // [N, L, Dd]
  auto unshuffled = at::gather(shuffled, 1, index);                    // [N, L, Dd]
  x = at::cat({x.slice(1, 0, 1), unshuffled}, 1) + decoder_pos_embed;  // [N, 1+L, Dd]
  x = decoder_blocks.forward(x, gen);
  return decoder_predp(decoder_norm(x));  // [N, 1+L, D_teacher]
}

void DecoderImpl::initialize_weights(at::Generator& gen) {
  at::NoGradGuard no_grad;
  decoder_pos_embed.copy_(model::get_2d_sincos_pos_embed(cfg.embed_dim, grid_size, true).unsqueeze(0));
  mask_token.normal_(0.0, 0.02, gen);
  model::init_linear(decoder_embed, gen);
  for (auto& block : decoder_blocks.blocks) model::init_block(block, gen);
  model::init_layer_norm(decoder_norm);
  model::init_linear(decoder_predp, gen);
}

}  // namespace dbot::mkd
