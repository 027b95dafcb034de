#include "dbot/mkd/student.h"

#include "dbot/model/layer_norm.h"

namespace dbot::mkd {

Masking random_masking(const at::Tensor& x, const at::Tensor& noise, double mask_ratio) {
  const int64_t N = x.size(0), L = x.size(1);
  const int64_t len_keep = kept_count(L, mask_ratio);
  TORCH_CHECK(noise.sizes() == at::IntArrayRef({N, L}), "noise must be [N, L] = [", N, ", ", L, "], got ",
              noise.sizes());
  TORCH_CHECK(len_keep >= 1, "mask_ratio ", mask_ratio, " keeps no patch out of ", L);
  auto ids_shuffle = std::get<1>(at::sort(noise, 1));  // ascending: small noise is kept
  auto ids_restore = std::get<1>(at::sort(ids_shuffle, 1));
  auto ids_keep = ids_shuffle.slice(1, 0, len_keep);  // [N, K]
  auto x_masked = model::take_rows(x, ids_keep);
  // Binary mask in the original patch order: 0 is keep, 1 is remove.
  auto mask = at::ones({N, L}, x.options().dtype(at::kFloat));
  mask.slice(1, 0, len_keep).zero_();
  mask = at::gather(mask, 1, ids_restore);
  return {x_masked, mask, ids_restore, ids_keep, ids_shuffle.slice(1, len_keep)};
}

MaskedStudentImpl::MaskedStudentImpl(model::VitConfig encoder_cfg, const DecoderConfig& decoder_cfg, int64_t target_dim,
                                     double ratio)
    : model::VisionTransformerImpl(std::move(encoder_cfg)),
      mask_ratio(ratio),
      decoder(*this, decoder_cfg, cfg.embed_dim, target_dim, cfg.grid_size()) {}

EncoderOutput MaskedStudentImpl::forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen) {
  auto x = embed_patches(imgs);  // [N, L, D]
  auto m = random_masking(x, noise, mask_ratio);
  auto cls = cls_with_pos().expand({x.size(0), -1, -1});
  x = at::cat({cls.to(m.x_masked.scalar_type()), m.x_masked}, 1);  // [N, 1+K, D]
  x = model::layer_norm(norm, forward_blocks(x, gen));
  return {x, m.mask, m.ids_restore, m.ids_masked};
}

at::Tensor MaskedStudentImpl::forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore,
                                              at::Generator* gen, const at::Tensor& rows) {
  return decoder.forward(latent, ids_restore, gen, rows);
}

void MaskedStudentImpl::initialize(at::Generator& gen, bool reset_patch_bias) {
  initialize_weights(gen, reset_patch_bias);
  decoder.initialize_weights(gen);
}

}  // namespace dbot::mkd
