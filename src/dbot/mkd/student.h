// MaskedStudent: the student of dBOT as one module (what the optimizer, a gradient all-reduce and a
// checkpoint see): the ViT encoder (timm names, at top level) that sees CLS + the kept patches, and the
// decoder (official dBOT names, at top level) that predicts the teacher's features for every token.
//
//   forward_encoder(imgs [N, C, H, W], noise [N, L]) -> latent [N, 1+K, D], mask [N, L], ids_restore [N, L],
//                                                      ids_masked [N, L-K]
//   forward_decoder(latent, ids_restore)            -> pred [N, 1+L, D_teacher]
//   forward_decoder(latent, ids_restore, gen, rows) -> pred [N, R, D_teacher], the tokens rows [N, R] only
#pragma once

#include "dbot/mkd/decoder.h"
#include "dbot/model/vit.h"

namespace dbot::mkd {

struct Masking {
  at::Tensor x_masked;     // [N, K, D] kept tokens, in noise order
  at::Tensor mask;         // [N, L] 0 = kept, 1 = removed
  at::Tensor ids_restore;  // [N, L] argsort(ids_shuffle)
  at::Tensor ids_keep;     // [N, K]
  at::Tensor ids_masked;   // [N, L-K] the removed patches, in noise order
};

struct EncoderOutput {
  at::Tensor latent;       // [N, 1+K, D] after the final norm
  at::Tensor mask;         // [N, L]
  at::Tensor ids_restore;  // [N, L]
  at::Tensor ids_masked;   // [N, L-K]
};

// How many of L patches the student sees: int(L * (1 - mask_ratio)), as the official random_masking.
inline int64_t kept_count(int64_t L, double mask_ratio) {
  return static_cast<int64_t>(static_cast<double>(L) * (1.0 - mask_ratio));
}

// Random masking per sample by argsort of noise: keep the first kept_count(L, mask_ratio).
Masking random_masking(const at::Tensor& x, const at::Tensor& noise, double mask_ratio);

class MaskedStudentImpl : public model::VisionTransformerImpl {
 public:
  // target_dim: the teacher's width (what decoder_predp predicts).
  MaskedStudentImpl(model::VitConfig encoder_cfg, const DecoderConfig& decoder_cfg, int64_t target_dim,
                    double mask_ratio);

  EncoderOutput forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen);
  at::Tensor forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen,
                             const at::Tensor& rows = {});

  // The official initialization of encoder then decoder from one generator (METHOD.md); the patch conv
  // bias keeps its value unless reset_patch_bias.
  void initialize(at::Generator& gen, bool reset_patch_bias);

  double mask_ratio;
  Decoder decoder;
};
TORCH_MODULE(MaskedStudent);

}  // namespace dbot::mkd
