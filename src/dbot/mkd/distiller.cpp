#include "dbot/mkd/distiller.h"

#include <stdexcept>

#include "dbot/compat.h"

namespace dbot::mkd {

Masking random_masking(const at::Tensor& x, const at::Tensor& noise, double mask_ratio) {
  const int64_t N = x.size(0), L = x.size(1), D = x.size(2);
  const auto len_keep = static_cast<int64_t>(static_cast<double>(L) * (1.0 - mask_ratio));
  TORCH_CHECK(noise.sizes() == at::IntArrayRef({N, L}), "noise must be [N, L] = [", N, ", ", L, "], got ",
              noise.sizes());
  TORCH_CHECK(len_keep >= 1, "mask_ratio ", mask_ratio, " keeps no patch out of ", L);
  auto ids_shuffle = std::get<1>(at::sort(noise, 1));  // ascending: small noise is kept
  auto ids_restore = std::get<1>(at::sort(ids_shuffle, 1));
  auto ids_keep = ids_shuffle.slice(1, 0, len_keep);  // [N, K]
  auto x_masked = at::gather(x, 1, ids_keep.unsqueeze(-1).expand({-1, -1, D}));
  // Binary mask in the original patch order: 0 is keep, 1 is remove.
  auto mask = at::ones({N, L}, x.options().dtype(at::kFloat));
  mask.slice(1, 0, len_keep).zero_();
  mask = at::gather(mask, 1, ids_restore);
  return {x_masked, mask, ids_restore, ids_keep};
}

at::Tensor normalize_target(const at::Tensor& target) {
  auto t = target.to(at::kFloat);  // computed in fp32 even under bf16 autocast
  auto mean = t.mean(-1, true);
  auto var = at::var(t, {-1}, /*unbiased=*/true, /*keepdim=*/true);
  return (t - mean) / (var + 1e-6).sqrt();
}

at::Tensor forward_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask) {
  auto t = normalize_target(target);
  auto per_token = at::smooth_l1_loss(pred.to(at::kFloat), t, at::Reduction::None, /*beta=*/2.0).mean(-1);
  // Token weights [N, 1+L]: CLS 1, masked patches 1, visible patches 0.
  auto weight = at::cat({at::ones({mask.size(0), 1}, mask.options()), mask}, 1);
  return (per_token * weight).sum() / weight.sum();
}

at::Generator derive_generator(uint64_t seed, RngPurpose purpose, uint64_t index) {
  // splitmix64 over the triple: distinct, well-mixed seeds for every (purpose, index).
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return compat::make_cpu_generator(mix(mix(mix(seed) ^ static_cast<uint64_t>(purpose)) ^ index));
}

Distiller::Distiller(model::VitConfig student_config, MkdConfig config, uint64_t seed_)
    : student_cfg(std::move(student_config)), cfg(std::move(config)), seed(seed_) {
  student_cfg.validate();
  if (!(cfg.mask_ratio >= 0.0 && cfg.mask_ratio < 1.0)) {
    throw std::invalid_argument("mkd.mask_ratio must be in [0, 1), got " + std::to_string(cfg.mask_ratio));
  }
  if (cfg.teacher_depth > student_cfg.depth) {
    throw std::invalid_argument("mkd.teacher_depth " + std::to_string(cfg.teacher_depth) +
                                " exceeds the student depth " + std::to_string(student_cfg.depth));
  }
  student = model::VisionTransformer(student_cfg);
  decoder = Decoder(cfg.decoder, student_cfg.embed_dim, student_cfg.embed_dim, student_cfg.grid_size());
  initialize_student(1, /*reset_patch_bias=*/true);

  // The stage-0 network: a copy of the student's own random initialization.
  make_teacher(cfg.teacher_depth >= 0 ? cfg.teacher_depth : student_cfg.depth);
}

void Distiller::make_teacher(int64_t depth) {
  model::VitConfig teacher_cfg = student_cfg;
  teacher_cfg.drop_path_rate = 0.0;
  teacher_cfg.depth = depth;
  teacher = model::VisionTransformer(teacher_cfg);
  // The decoder is dropped; student blocks beyond `depth` are ignored.
  model::load_state_dict(*teacher, model::state_dict(*student), "teacher from student");
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);
}

void Distiller::prepare_resume(int64_t stage, int64_t teacher_depth) {
  stage_ = stage;
  make_teacher(teacher_depth);
}

void Distiller::initialize_student(uint64_t stage_index, bool reset_patch_bias) {
  auto gen = derive_generator(seed, RngPurpose::kInit, stage_index);
  student->initialize_weights(gen, reset_patch_bias);
  decoder->initialize_weights(gen);
}

EncoderOutput Distiller::forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen) {
  auto x = student->embed_patches(imgs);  // [N, L, D]
  auto m = random_masking(x, noise, cfg.mask_ratio);
  auto cls = student->cls_with_pos().expand({x.size(0), -1, -1});
  x = at::cat({cls.to(m.x_masked.scalar_type()), m.x_masked}, 1);  // [N, 1+K, D]
  x = student->norm(student->forward_blocks(x, gen));
  return {x, m.mask, m.ids_restore};
}

at::Tensor Distiller::forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen) {
  return decoder->forward(latent, ids_restore, gen);
}

at::Tensor Distiller::forward_teacher(const at::Tensor& imgs) {
  at::NoGradGuard no_grad;
  return teacher->forward_features(imgs, /*final_norm=*/false);  // [N, 1+L, D_teacher], before the norm
}

at::Tensor Distiller::forward(const at::Tensor& imgs, at::Generator& gen) {
  auto noise = at::rand({imgs.size(0), student_cfg.num_patches()}, gen, at::TensorOptions().dtype(at::kFloat));
  auto enc = forward_encoder(imgs, noise, &gen);
  auto pred = forward_decoder(enc.latent, enc.ids_restore, &gen);
  auto target = forward_teacher(imgs);
  return forward_loss(target, pred, enc.mask);
}

void Distiller::next_stage() {
  make_teacher(student_cfg.depth);
  ++stage_;
  initialize_student(static_cast<uint64_t>(stage_), cfg.reset_patch_bias);
}

std::vector<std::pair<std::string, at::Tensor>> Distiller::named_student_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : student->named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : decoder->named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

void Distiller::train(bool on) {
  student->train(on);
  decoder->train(on);
}

}  // namespace dbot::mkd
