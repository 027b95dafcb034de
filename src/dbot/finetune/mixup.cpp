#include "dbot/finetune/mixup.h"

#include <algorithm>
#include <cmath>

namespace dbot::finetune {

namespace {
double uniform(at::Generator& gen) { return at::rand({1}, gen, at::kDouble).item<double>(); }
int64_t randint(at::Generator& gen, int64_t lo, int64_t hi) {  // [lo, hi)
  return at::randint(lo, hi, {1}, gen, at::kLong).item<int64_t>();
}
double beta(double alpha, at::Generator& gen) {  // Beta(alpha, alpha) = X / (X + Y), X, Y ~ Gamma(alpha)
  const auto g = at::_standard_gamma(at::full({2}, alpha, at::kDouble), gen);
  return (g[0] / (g[0] + g[1])).item<double>();
}
}  // namespace

CutmixBox cutmix_box(int64_t H, int64_t W, double lam, int64_t cy, int64_t cx) {
  const double ratio = std::sqrt(1.0 - lam);
  const auto cut_h = static_cast<int64_t>(static_cast<double>(H) * ratio);
  const auto cut_w = static_cast<int64_t>(static_cast<double>(W) * ratio);
  CutmixBox b;
  b.yl = std::clamp<int64_t>(cy - cut_h / 2, 0, H);
  b.yh = std::clamp<int64_t>(cy + (cut_h + 1) / 2, 0, H);
  b.xl = std::clamp<int64_t>(cx - cut_w / 2, 0, W);
  b.xh = std::clamp<int64_t>(cx + (cut_w + 1) / 2, 0, W);
  b.lam = 1.0 - static_cast<double>((b.yh - b.yl) * (b.xh - b.xl)) / static_cast<double>(H * W);
  return b;
}

at::Tensor mixup_target(const at::Tensor& labels, int64_t num_classes, double lam, double smoothing) {
  const double off = smoothing / static_cast<double>(num_classes), on = 1.0 - smoothing + off;
  auto onehot = [&](const at::Tensor& y) {
    return at::full({y.size(0), num_classes}, off, at::kFloat).scatter_(1, y.to(at::kCPU).unsqueeze(1), on);
  };
  return (onehot(labels) * lam + onehot(labels.flip(0)) * (1.0 - lam)).to(labels.device());
}

at::Tensor mix_batch(at::Tensor& x, const at::Tensor& labels, int64_t num_classes, const MixupConfig& cfg,
                     at::Generator& gen, double* lam_out) {
  at::NoGradGuard no_grad;
  double lam = 1.0;
  if (cfg.active() && uniform(gen) < cfg.prob) {
    const bool cutmix =
        cfg.cutmix_alpha > 0 && (cfg.mixup_alpha <= 0 || uniform(gen) < cfg.switch_prob);  // timm's choice
    lam = beta(cutmix ? cfg.cutmix_alpha : cfg.mixup_alpha, gen);
    if (cutmix) {
      const int64_t H = x.size(2), W = x.size(3);
      const int64_t cy = randint(gen, 0, H), cx = randint(gen, 0, W);
      const auto b = cutmix_box(H, W, lam, cy, cx);
      auto region = x.slice(2, b.yl, b.yh).slice(3, b.xl, b.xh);
      region.copy_(region.flip(0));
      lam = b.lam;
    } else {
      const auto flipped = x.flip(0);  // a copy, taken before x changes
      x.mul_(lam).add_(flipped, 1.0 - lam);
    }
  }
  if (lam_out != nullptr) *lam_out = lam;
  return mixup_target(labels, num_classes, lam, cfg.label_smoothing);
}

void random_erase(at::Tensor& x, double prob, at::Generator& gen) {
  at::NoGradGuard no_grad;
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const double log_lo = std::log(0.3), log_hi = std::log(1.0 / 0.3), area = static_cast<double>(H * W);
  for (int64_t n = 0; n < x.size(0); ++n) {
    if (uniform(gen) > prob) continue;  // timm: erase unless random() > probability
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double target_area = (0.02 + uniform(gen) * (1.0 / 3.0 - 0.02)) * area;
      const double aspect = std::exp(log_lo + uniform(gen) * (log_hi - log_lo));
      const auto h = static_cast<int64_t>(std::lround(std::sqrt(target_area * aspect)));
      const auto w = static_cast<int64_t>(std::lround(std::sqrt(target_area / aspect)));
      if (w < W && h < H) {
        const int64_t top = randint(gen, 0, H - h + 1), left = randint(gen, 0, W - w + 1);
        x[n].slice(1, top, top + h).slice(2, left, left + w).copy_(at::randn({C, h, w}, gen, at::kFloat));
        break;
      }
    }
  }
}

at::Tensor soft_target_cross_entropy(const at::Tensor& logits, const at::Tensor& target) {
  return (-target.to(at::kFloat) * at::log_softmax(logits.to(at::kFloat), -1)).sum(-1).mean();
}

}  // namespace dbot::finetune
