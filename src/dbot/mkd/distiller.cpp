#include "dbot/mkd/distiller.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/core/runtime.h"

namespace dbot::mkd {

at::Tensor normalize_target(const at::Tensor& target) {
  auto t = target.to(at::kFloat);  // computed in fp32 even under bf16 autocast
  const int64_t D = t.size(-1);
  if (D < 2) return (t - t.mean(-1, true)) / (at::var(t, {-1}, /*unbiased=*/true, /*keepdim=*/true) + 1e-6).sqrt();
  // The same value in one fused pass: with c = (D-1)/D, var_unbiased = var_biased / c, so
  // (t - mean) / sqrt(var_unbiased + 1e-6) = sqrt(c) (t - mean) / sqrt(var_biased + c 1e-6), which is LayerNorm
  // without affine at eps c 1e-6, times sqrt(c). (mean, var, subtract, divide took ~3% of the demo's CPU step.)
  const double c = static_cast<double>(D - 1) / static_cast<double>(D);
  return at::layer_norm(t, {D}, {}, {}, c * 1e-6).mul_(std::sqrt(c));
}

LossSpec loss_spec(const std::string& loss, const model::VitConfig& teacher) {
  if (loss != "auto" && loss != "smooth_l1" && loss != "cosine") {
    throw std::invalid_argument("mkd.loss must be auto, smooth_l1 or cosine, got '" + loss + "'");
  }
  LossSpec spec;
  spec.cls = !teacher.clip();
  spec.cosine = loss == "cosine" || (loss == "auto" && teacher.clip());
  return spec;
}

void check_target(const std::string& target) {
  if (target != "teacher" && target != "pixels") {
    throw std::invalid_argument("mkd.target must be teacher or pixels, got '" + target + "'");
  }
}

namespace {
at::Tensor per_token_loss(const at::Tensor& target, const at::Tensor& pred, const LossSpec& spec) {  // [N, T]
  const auto p = pred.to(at::kFloat);
  return spec.cosine ? 1.0 - at::cosine_similarity(p, target.to(at::kFloat), /*dim=*/-1, /*eps=*/1e-8)
                     : at::smooth_l1_loss(p, normalize_target(target), at::Reduction::None, /*beta=*/2.0).mean(-1);
}

at::Tensor per_patch_pixel_loss(const at::Tensor& target, const at::Tensor& pred, bool norm_pix) {  // [N, T]
  auto t = target.to(at::kFloat);
  if (norm_pix) t = normalize_target(t);  // the same per-token rule as dBOT's target: unbiased var, eps 1e-6
  return (pred.to(at::kFloat) - t).pow(2).mean(-1);
}
}  // namespace

at::Tensor forward_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask,
                        const LossSpec& spec) {
  const auto per_token = per_token_loss(target, pred, spec);  // [N, 1+L]
  // Token weights [N, 1+L]: CLS 1 (0 without it), masked patches 1, visible patches 0.
  auto weight = at::cat({at::full({mask.size(0), 1}, spec.cls ? 1.0 : 0.0, mask.options()), mask}, 1);
  return (per_token * weight).sum() / weight.sum();
}

at::Tensor loss_rows(const at::Tensor& ids_masked, bool cls) {
  const auto patches = ids_masked + 1;  // [N, M]: token = patch + 1, CLS is token 0
  return cls ? at::cat({at::zeros({patches.size(0), 1}, patches.options()), patches}, 1) : patches;
}

at::Tensor forward_loss_rows(const at::Tensor& target, const at::Tensor& pred, const LossSpec& spec) {
  return per_token_loss(target, pred, spec).mean();
}

at::Tensor patchify(const at::Tensor& imgs, int64_t p) {
  const int64_t N = imgs.size(0), C = imgs.size(1), h = imgs.size(2) / p, w = imgs.size(3) / p;
  // [N, C, h, p, w, p] -> [N, h, w, p, p, C] (MAE's einsum 'nchpwq->nhwpqc') -> [N, L, p*p*C]
  return imgs.reshape({N, C, h, p, w, p}).permute({0, 2, 4, 3, 5, 1}).reshape({N, h * w, p * p * C});
}

at::Tensor pixel_loss(const at::Tensor& target, const at::Tensor& pred, const at::Tensor& mask, bool norm_pix) {
  const auto per_patch = per_patch_pixel_loss(target, pred.slice(1, 1), norm_pix);  // [N, L]: CLS dropped
  return (per_patch * mask).sum() / mask.sum();
}

at::Tensor pixel_loss_rows(const at::Tensor& target, const at::Tensor& pred, bool norm_pix) {
  return per_patch_pixel_loss(target, pred, norm_pix).mean();
}

Distiller::Distiller(model::VitConfig student_config, MkdConfig config, uint64_t seed_, const StartWeights& start)
    : student_cfg(std::move(student_config)), cfg(std::move(config)), seed(seed_) {
  student_cfg.validate();
  if (!(cfg.mask_ratio >= 0.0 && cfg.mask_ratio < 1.0)) {
    throw std::invalid_argument("mkd.mask_ratio must be in [0, 1), got " + std::to_string(cfg.mask_ratio));
  }
  if (cfg.teacher_depth > student_cfg.depth) {
    throw std::invalid_argument("mkd.teacher_depth " + std::to_string(cfg.teacher_depth) +
                                " exceeds the student depth " + std::to_string(student_cfg.depth));
  }
  loss_spec(cfg.loss, student_cfg);  // rejects an unknown mkd.loss before any work
  check_target(cfg.target);
  if (pixels() && start.teacher) throw std::invalid_argument("mkd.target pixels takes no teacher file");
  target_dim_ = pixels()        ? student_cfg.patch_size * student_cfg.patch_size * student_cfg.in_chans
                : start.teacher ? target_width(start.teacher->cfg)
                                : student_cfg.embed_dim;
  student = make_student();
  initialize_student(1, /*reset_patch_bias=*/true);
  if (!start.student.empty()) load_student_start(start.student, start.student_what);
  if (start.teacher) {
    make_teacher(start.teacher->cfg, start.teacher->state, start.teacher_what);
    teacher->set_input_affine(start.teacher_input);
    return;
  }
  // The stage-0 network: a copy of the student's own initialization.
  model::VitConfig teacher_cfg = student_cfg;
  if (cfg.teacher_depth >= 0) teacher_cfg.depth = cfg.teacher_depth;
  make_teacher(teacher_cfg, model::state_dict(*student), "teacher from student");
}

// The student's encoder from a file (every tensor), and its decoder when the file has one (all of it).
void Distiller::load_student_start(const model::TensorMap& state, const std::string& what) {
  bool has_decoder = false;
  for (const auto& [name, t] : state) has_decoder = has_decoder || name.rfind("decoder_", 0) == 0;
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : model::state_dict(*student)) {
    const bool decoder = name.rfind("decoder_", 0) == 0 || name == "mask_token";
    const auto it = state.find(name);
    if (it == state.end()) {
      if (decoder && !has_decoder) continue;  // keeps its official initialization
      throw std::runtime_error(what + ": missing tensor '" + name + "' for the student");
    }
    if (it->second.sizes() != t.sizes()) {
      throw std::runtime_error(what + ": tensor '" + name + "' has shape " + c10::str(it->second.sizes()) +
                               ", the student's is " + c10::str(t.sizes()));
    }
    t.copy_(it->second);
  }
}

MaskedStudent Distiller::make_student() const {
  return MaskedStudent(student_cfg, cfg.decoder, target_dim_, cfg.mask_ratio);
}

void Distiller::to(c10::Device device, at::ScalarType amp_dtype) {
  device_ = device;
  amp_dtype_ = amp_dtype;
  student->to(device);
  teacher->to(device);
  teacher->set_compute_dtype(amp_dtype);
}

void Distiller::make_teacher(model::VitConfig teacher_cfg, const model::TensorMap& state, const std::string& what) {
  if (!pixels() && target_width(teacher_cfg) != target_dim_) {
    throw std::runtime_error(what + ": a teacher of " + std::to_string(target_width(teacher_cfg)) +
                             " target features for a decoder predicting " + std::to_string(target_dim_));
  }
  teacher = Teacher(std::move(teacher_cfg));
  teacher->to(device_);
  // Entries the teacher lacks (a student's decoder, blocks beyond its depth) are ignored.
  model::load_state_dict(*teacher, state, what);
  teacher->set_compute_dtype(amp_dtype_);
}

void Distiller::set_target_dim(int64_t dim) {
  if (dim == target_dim_) return;
  target_dim_ = dim;
  at::NoGradGuard no_grad;
  auto& predp = student->decoder.decoder_predp;  // [D_teacher, Dd], [D_teacher]: new shapes, initialized later
  predp->weight.set_data(at::empty({dim, predp->weight.size(1)}, predp->weight.options()));
  predp->bias.set_data(at::empty({dim}, predp->bias.options()));
  predp->weight.mutable_grad().reset();  // a gradient buffer of the old shape would not accumulate
  predp->bias.mutable_grad().reset();
}

void Distiller::load(int64_t stage, const model::TensorMap& student_state, const model::TensorMap& teacher_state,
                     const model::VitConfig& teacher_cfg, const TeacherInput& teacher_input, const std::string& what) {
  stage_ = stage;
  const auto predp = student_state.find("decoder_predp.weight");
  if (predp != student_state.end()) set_target_dim(predp->second.size(0));
  model::load_state_dict(*student, student_state, what + " (model)");
  make_teacher(teacher_cfg, teacher_state, what + " (teacher)");
  teacher->set_input_affine(teacher_input);
}

void Distiller::initialize_student(uint64_t stage_index, bool reset_patch_bias) {
  auto gen = core::derive_generator(seed, core::RngPurpose::kInit, stage_index);
  if (device_.is_cpu()) {
    student->initialize(gen, reset_patch_bias);
    return;
  }
  // Draw on the CPU (the same numbers as a CPU run), then copy into the device tensors in place.
  MaskedStudent fresh = make_student();
  model::load_state_dict(*fresh, model::state_dict(*student), "student");  // carries the patch conv bias
  fresh->initialize(gen, reset_patch_bias);
  model::load_state_dict(*student, model::state_dict(*fresh), "re-initialized student");
}

void Distiller::initialize_predictor(uint64_t stage_index) {
  at::NoGradGuard no_grad;
  auto gen = core::derive_generator(seed, core::RngPurpose::kInit, stage_index);
  auto& predp = student->decoder.decoder_predp;  // [D_target, Dd]
  // init_linear's draws, made on the CPU and then copied: a GPU run gets the same numbers.
  auto weight = at::empty(predp->weight.sizes());
  model::xavier_uniform_(weight, predp->weight.size(1), predp->weight.size(0), gen);
  predp->weight.copy_(weight);
  predp->bias.zero_();
}

EncoderOutput Distiller::forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen) {
  return student->forward_encoder(imgs, noise, gen);
}

at::Tensor Distiller::forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen,
                                      const at::Tensor& rows) {
  return student->forward_decoder(latent, ids_restore, gen, rows);
}

at::Tensor Distiller::forward_teacher(const at::Tensor& imgs, const at::Tensor& rows) {
  return teacher->forward_target(imgs, rows);
}

at::Tensor Distiller::forward_target(const at::Tensor& imgs, const at::Tensor& rows) {
  return pixels() ? patchify(imgs, student_cfg.patch_size) : forward_teacher(imgs, rows);
}

at::Tensor Distiller::forward(const at::Tensor& imgs, at::Generator& gen, int64_t rank, int64_t world_size) {
  const int64_t N = imgs.size(0), L = student_cfg.num_patches();
  at::Tensor noise = at::rand({N * world_size, L}, gen, at::kFloat);  // [N w, L]
  at::Generator local = gen;
  if (world_size > 1) {
    noise = noise.slice(0, rank, N * world_size, world_size).contiguous();  // [N, L]: this rank's samples
    const auto seeds = at::randint(std::numeric_limits<int64_t>::max(), {world_size}, gen, at::kLong);
    local = compat::make_cpu_generator(static_cast<uint64_t>(seeds[rank].item<int64_t>()));
  }
  auto enc = forward_encoder(imgs, core::to_device(noise, imgs.device()), &local);
  // Only the tokens of weight 1 in forward_loss / pixel_loss go on past the last blocks' attention, in the decoder
  // and in the teacher: the same loss and gradients as the full composition (the test
  // Distiller.LossTokensOnlyGiveThePlainLossAndGradients).
  if (pixels()) {
    const auto pred = forward_decoder(enc.latent, enc.ids_restore, &local, loss_rows(enc.ids_masked, false));
    const auto target = model::take_rows(patchify(imgs, student_cfg.patch_size), enc.ids_masked);
    return pixel_loss_rows(target, pred, cfg.norm_pix_loss);
  }
  const auto spec = loss_spec(cfg.loss, teacher->cfg);
  const auto rows = loss_rows(enc.ids_masked, spec.cls);  // [N, R]
  const auto pred = forward_decoder(enc.latent, enc.ids_restore, &local, rows);
  return forward_loss_rows(forward_teacher(imgs, rows), pred, spec);
}

void Distiller::next_stage() {
  if (pixels()) throw std::logic_error("mkd.target pixels trains one stage");
  const int64_t previous_dim = target_dim_;
  set_target_dim(student_cfg.embed_dim);
  make_teacher(student_cfg, model::state_dict(*student), "teacher from student");
  ++stage_;
  if (cfg.reinit_student) {
    initialize_student(static_cast<uint64_t>(stage_), cfg.reset_patch_bias);
  } else if (target_dim_ != previous_dim) {
    initialize_predictor(static_cast<uint64_t>(stage_));
  }
}

std::vector<std::pair<std::string, at::Tensor>> Distiller::named_student_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : student->named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace dbot::mkd
