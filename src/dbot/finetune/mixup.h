// The batch-level regularizers of fine-tuning, with timm's semantics (timm.data.mixup.Mixup in 'batch' mode,
// timm.data.random_erasing.RandomErasing in 'pixel' mode, timm.loss), drawing from an explicit generator:
//
//   mixup:  x = lam x + (1 - lam) flip(x),   lam ~ Beta(mixup_alpha, mixup_alpha)
//   cutmix: a box of side sqrt(1 - lam) x (H, W) around a uniform centre (clipped to the image) gets flip(x)'s
//           pixels, lam ~ Beta(cutmix_alpha, cutmix_alpha), then lam = 1 - box area / image area (correct_lam)
//   per batch: with probability `prob` one of them (cutmix with probability switch_prob when both are on)
//   targets: lam onehot(y) + (1 - lam) onehot(flip(y)), each smoothed: off = s / C, on = 1 - s + off
//   loss:    mean over samples of sum(-target * log_softmax(logits))  (= label smoothing CE when lam = 1)
//   random erasing (per sample, on normalized images, before mixing): with probability `prob` one rectangle of
//           area U(0.02, 1/3) x H W and aspect exp(U(log 0.3, log 1/0.3)) (10 tries to fit) is replaced by
//           N(0, 1) noise per pixel and channel.
#pragma once

#include <ATen/ATen.h>

namespace dbot::finetune {

struct MixupConfig {
  double mixup_alpha = 0.8;   // 0 = off
  double cutmix_alpha = 1.0;  // 0 = off
  double prob = 1.0;          // probability of mixing a batch at all
  double switch_prob = 0.5;   // cutmix instead of mixup, when both are on
  double label_smoothing = 0.1;
  bool active() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// A cutmix box [yl, yh) x [xl, xh) and its corrected lam, from lam and the centre (cy, cx) (timm's rand_bbox
// with margin 0 and cutmix_bbox_and_lam with correct_lam).
struct CutmixBox {
  int64_t yl, yh, xl, xh;
  double lam;
};
CutmixBox cutmix_box(int64_t height, int64_t width, double lam, int64_t cy, int64_t cx);

// Smoothed, mixed one-hot targets [N, C] (fp32) of labels [N] (int64).
at::Tensor mixup_target(const at::Tensor& labels, int64_t num_classes, double lam, double smoothing);

// Mixes a normalized batch [N, C, H, W] in place (cfg and draws as above) and returns its targets [N, classes];
// without mixing (inactive, or not drawn) the smoothed one-hot targets. `lam_out` receives the lam used.
at::Tensor mix_batch(at::Tensor& images, const at::Tensor& labels, int64_t num_classes, const MixupConfig& cfg,
                     at::Generator& gen, double* lam_out = nullptr);

// Random erasing of each sample of a normalized batch [N, C, H, W], in place (noise drawn on the CPU).
void random_erase(at::Tensor& images, double prob, at::Generator& gen);

// mean_n sum_c -target[n, c] log_softmax(logits)[n, c], in fp32.
at::Tensor soft_target_cross_entropy(const at::Tensor& logits, const at::Tensor& target);

}  // namespace dbot::finetune
