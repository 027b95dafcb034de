// The student's MAE-style decoder (names as the official dBOT code): decoder_embed (D -> Dd), mask_token,
// fixed sin-cos decoder_pos_embed, decoder_blocks, decoder_norm, decoder_predp (Dd -> D_teacher).
// Its parameters are registered on the module that owns it (the MaskedStudent), at top level, so the
// student's state dict has exactly the official names.
#pragma once

#include "dbot/model/vit.h"

namespace dbot::mkd {

struct DecoderConfig {
  int64_t embed_dim = 512;  // Dd
  int64_t depth = 8;
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  double drop_path_rate = 0.0;
};

struct Decoder {
  // encoder_dim: the student width D; target_dim: the teacher width; grid_size: g (L = g*g).
  Decoder(torch::nn::Module& owner, const DecoderConfig& cfg, int64_t encoder_dim, int64_t target_dim,
          int64_t grid_size);

  // latent [N, 1+K, D] (CLS + kept tokens in noise order), ids_restore [N, L] -> pred [N, 1+L, D_teacher]; with
  // `rows` [N, R] defined (token indices, CLS = 0), the prediction at those tokens only, [N, R, D_teacher]: the last
  // block runs them alone after its attention (model::BlockImpl::forward_rows).
  at::Tensor forward(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen = nullptr,
                     const at::Tensor& rows = {});

  // x [N, 1+K, Dd] -> [N, 1+L, Dd]: a mask token for every removed patch, unshuffled back to the patch order
  // (CLS first). As the official code under autocast, the concatenation promotes to the wider of the two
  // dtypes, so the fp32 mask_token is never rounded to bf16/fp16.
  at::Tensor insert_mask_tokens(const at::Tensor& x, const at::Tensor& ids_restore) const;

  // Official init: xavier Linear weights, zero biases, LayerNorm (1, 0), mask_token N(0, 0.02).
  void initialize_weights(at::Generator& gen);

  DecoderConfig cfg;
  int64_t grid_size;
  torch::nn::Linear decoder_embed{nullptr};
  at::Tensor mask_token;         // [1, 1, Dd]
  at::Tensor decoder_pos_embed;  // [1, 1+L, Dd], buffer
  model::BlockStack decoder_blocks;
  torch::nn::LayerNorm decoder_norm{nullptr};
  torch::nn::Linear decoder_predp{nullptr};
};

}  // namespace dbot::mkd
