// Teacher: a frozen ViT encoder whose last block's output (before the final norm) is dBOT's target; for a CLIP
// image tower (cfg.clip()) the target is every token after ln_post and the projection (METHOD.md).
// It has its own config (the student's shape, a zero-block network at stage 0, or a pretrained encoder of
// any width, depth and patch size from a file: fit_to_grid), never needs gradients, and keeps a compute copy of its
// weights in the autocast dtype, made once per stage: autocast caches casts only for leaves that require grad, so a
// frozen fp32 teacher would be re-cast every step. The fp32 weights stay the teacher's state (what checkpoints hold and
// the next stage copies).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dbot/model/vit.h"

namespace dbot::mkd {

// A per-channel affine map of the images a teacher sees (see TeacherImpl::set_input_affine); empty = none.
struct TeacherInput {
  std::vector<double> scale, shift;
};

class TeacherImpl : public model::VisionTransformerImpl {
 public:
  explicit TeacherImpl(model::VitConfig cfg);  // frozen (requires_grad false), eval mode

  // Makes (or drops, for kFloat) the compute copy: Linear and Conv weights in `dtype`; biases, LayerNorm
  // parameters, cls_token and positions in fp32: exactly what autocast computes with. Call again after the
  // weights change (load, stage switch).
  void set_compute_dtype(at::ScalarType dtype);
  at::ScalarType compute_dtype() const { return compute_dtype_; }

  // The dBOT target: [N, C, H, W] -> [N, 1+L, target_width(cfg)], the last block's output before the final
  // norm (a CLIP tower: after the final norm, times proj when it has one), without autograd. Run it under the same
  // autocast as the student. Images of another size than cfg.img_size (a teacher of another patch size) are resized to
  // it first: bicubic, antialiased. With `rows` [N, R] defined (token indices, CLS = 0): those tokens only, [N, R,
  // ...], the last block running them alone after its attention.
  at::Tensor forward_target(const at::Tensor& imgs, const at::Tensor& rows = {});

  // The teacher's own input normalization as a per-channel affine map of the student's normalized images:
  // x_teacher = x * scale + shift (scale = std_data / std_teacher, shift = (mean_data - mean_teacher) /
  // std_teacher). Empty: the student's normalization (identity).
  void set_input_affine(const TeacherInput& input);
  const TeacherInput& input_affine() const { return input_; }

 private:
  at::ScalarType compute_dtype_ = at::kFloat;
  TeacherInput input_;
  at::Tensor input_scale_, input_shift_;  // input_ as fp32 [1, C, 1, 1], moved to the images' device once
  std::shared_ptr<model::VisionTransformerImpl> compute_;  // null: compute with the fp32 weights
};
TORCH_MODULE(Teacher);

// What a teacher's target holds per token: proj_dim for a CLIP tower with a projection, else the width.
int64_t target_width(const model::VitConfig& teacher);

// A pretrained encoder made to give the student's token grid g: its input size becomes g x its patch size
// (so a /14 teacher of a 224 px /16 student takes 196 px images, as the paper's CLIP-L/14 teacher) and
// its position table is resampled to g x g (model::resample_abs_pos_embed). Errors name `what` when the
// channel count differs from the student's.
model::EncoderWeights fit_to_grid(model::EncoderWeights weights, const model::VitConfig& student,
                                  const std::string& what);

}  // namespace dbot::mkd
