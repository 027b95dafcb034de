#include "dbot/mkd/distiller.h"

#include <stdexcept>

#include "dbot/core/runtime.h"

namespace dbot::mkd {

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
  student = make_student();
  initialize_student(1, /*reset_patch_bias=*/true);
  // The stage-0 network: a copy of the student's own random initialization.
  make_teacher(cfg.teacher_depth >= 0 ? cfg.teacher_depth : student_cfg.depth, model::state_dict(*student),
               "teacher from student");
}

MaskedStudent Distiller::make_student() const {
  return MaskedStudent(student_cfg, cfg.decoder, student_cfg.embed_dim, cfg.mask_ratio);
}

void Distiller::to(c10::Device device, at::ScalarType amp_dtype) {
  device_ = device;
  amp_dtype_ = amp_dtype;
  student->to(device);
  teacher->to(device);
  teacher->set_compute_dtype(amp_dtype);
}

void Distiller::make_teacher(int64_t depth, const model::TensorMap& state, const std::string& what) {
  model::VitConfig teacher_cfg = student_cfg;
  teacher_cfg.depth = depth;
  teacher = Teacher(teacher_cfg);
  teacher->to(device_);
  // Entries the teacher lacks (a student's decoder, blocks beyond `depth`) are ignored.
  model::load_state_dict(*teacher, state, what);
  teacher->set_compute_dtype(amp_dtype_);
}

void Distiller::load(int64_t stage, const model::TensorMap& student_state, const model::TensorMap& teacher_state,
                     const std::string& what) {
  stage_ = stage;
  model::load_state_dict(*student, student_state, what + " (model)");
  make_teacher(model::count_blocks(teacher_state), teacher_state, what + " (teacher)");
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

EncoderOutput Distiller::forward_encoder(const at::Tensor& imgs, const at::Tensor& noise, at::Generator* gen) {
  return student->forward_encoder(imgs, noise, gen);
}

at::Tensor Distiller::forward_decoder(const at::Tensor& latent, const at::Tensor& ids_restore, at::Generator* gen) {
  return student->forward_decoder(latent, ids_restore, gen);
}

at::Tensor Distiller::forward_teacher(const at::Tensor& imgs) { return teacher->forward_target(imgs); }

at::Tensor Distiller::forward(const at::Tensor& imgs, at::Generator& gen) {
  auto noise = core::to_device(at::rand({imgs.size(0), student_cfg.num_patches()}, gen, at::kFloat), imgs.device());
  auto enc = forward_encoder(imgs, noise, &gen);
  auto pred = forward_decoder(enc.latent, enc.ids_restore, &gen);
  auto target = forward_teacher(imgs);
  return forward_loss(target, pred, enc.mask);
}

void Distiller::next_stage() {
  make_teacher(student_cfg.depth, model::state_dict(*student), "teacher from student");
  ++stage_;
  initialize_student(static_cast<uint64_t>(stage_), cfg.reset_patch_bias);
}

std::vector<std::pair<std::string, at::Tensor>> Distiller::named_student_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : student->named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace dbot::mkd
