#include "dbot/mkd/teacher.h"

#include <stdexcept>

#include "dbot/model/pos_embed.h"

namespace dbot::mkd {

TeacherImpl::TeacherImpl(model::VitConfig config)
    : model::VisionTransformerImpl([&] {
        config.drop_path_rate = 0.0;
        return config;
      }()) {
  eval();
  for (auto& p : parameters()) p.requires_grad_(false);
}

void TeacherImpl::set_compute_dtype(at::ScalarType dtype) {
  compute_dtype_ = dtype;
  compute_.reset();
  if (dtype == at::kFloat) return;
  at::NoGradGuard no_grad;
  compute_ = std::make_shared<model::VisionTransformerImpl>(cfg);
  compute_->to(parameters().front().device());
  model::load_state_dict(*compute_, model::state_dict(*this), "teacher compute copy");
  compute_->eval();
  auto cast = [&](at::Tensor& t) { t.set_data(t.detach().to(dtype)); };
  for (auto& p : compute_->parameters()) p.requires_grad_(false);
  // Only the matrices: biases stay fp32, as autocast leaves them where an op is outside its lists and casts
  // them itself where it is inside (linear).
  cast(compute_->patch_embed->proj->weight);
  if (compute_->proj.defined()) cast(compute_->proj);
  for (auto& block : compute_->blocks.blocks) {
    for (auto* linear : {&block->attn->qkv, &block->attn->proj, &block->mlp->fc1, &block->mlp->fc2}) {
      cast((*linear)->weight);
    }
  }
}

at::Tensor TeacherImpl::forward_target(const at::Tensor& imgs, const at::Tensor& rows) {
  at::NoGradGuard no_grad;
  auto& net = compute_ ? *compute_ : static_cast<model::VisionTransformerImpl&>(*this);
  at::Tensor x = imgs;
  if (input_scale_.defined()) {
    if (input_scale_.device() != imgs.device()) {  // once, not a host-to-device copy every step
      input_scale_ = input_scale_.to(imgs.device());
      input_shift_ = input_shift_.to(imgs.device());
    }
    x = x.to(at::kFloat) * input_scale_ + input_shift_;
  }
  if (x.size(-1) != cfg.img_size || x.size(-2) != cfg.img_size) {
    x = at::_upsample_bicubic2d_aa(x.to(at::kFloat), {cfg.img_size, cfg.img_size}, false);
  }
  if (!cfg.clip())
    return net.forward_features(x, /*final_norm=*/false, rows);  // [N, 1+L or R, D_teacher], before the norm
  return cfg.proj_dim > 0 ? net.forward_projected(x, rows) : net.forward_features(x, /*final_norm=*/true, rows);
}

int64_t target_width(const model::VitConfig& teacher) {
  return teacher.proj_dim > 0 ? teacher.proj_dim : teacher.embed_dim;
}

void TeacherImpl::set_input_affine(const TeacherInput& input) {
  if (input.scale.size() != input.shift.size() ||
      (!input.scale.empty() && static_cast<int64_t>(input.scale.size()) != cfg.in_chans)) {
    throw std::invalid_argument("teacher input normalization: " + std::to_string(input.scale.size()) + " scales and " +
                                std::to_string(input.shift.size()) + " shifts for " + std::to_string(cfg.in_chans) +
                                " channels");
  }
  input_ = input;
  input_scale_ = input_shift_ = at::Tensor();
  if (input.scale.empty()) return;
  const int64_t c = static_cast<int64_t>(input.scale.size());
  input_scale_ = at::tensor(input.scale, at::kDouble).to(at::kFloat).view({1, c, 1, 1});
  input_shift_ = at::tensor(input.shift, at::kDouble).to(at::kFloat).view({1, c, 1, 1});
}

model::EncoderWeights fit_to_grid(model::EncoderWeights w, const model::VitConfig& student, const std::string& what) {
  if (w.cfg.in_chans != student.in_chans) {
    throw std::runtime_error(what + ": the encoder takes " + std::to_string(w.cfg.in_chans) +
                             " channel(s), the student " + std::to_string(student.in_chans));
  }
  const int64_t grid = student.grid_size();
  w.cfg.img_size = grid * w.cfg.patch_size;
  const auto pos = w.state.find("pos_embed");
  if (pos != w.state.end()) pos->second = model::resample_abs_pos_embed(pos->second, grid);
  return w;
}

}  // namespace dbot::mkd
