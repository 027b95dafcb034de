// The paper's two analysis tools (METHOD.md, "Analysis tools"), run on an encoder over full images:
//
// 1. Average attention distance per layer and head: the softmax attention maps (unfused path), CLS row and
//    column dropped without renormalizing, each query->key weight times the pixel distance between the two
//    patches (patch size x Euclidean grid distance), summed over keys, averaged over queries and images.
//    A uniform map over 1+L tokens at 224/16 gives ~115 px (L/(1+L) of the mean pairwise patch distance).
// 2. Singular-value share per layer: each block's output patch tokens (before the final norm, CLS dropped),
//    every token L2-normalized (no centering), the singular values s of that [L, D] matrix per image; for
//    k = 1..5 the share sum(s[:k]) / sum(s), averaged over images. Lower = less redundant features.
//
// Both are linear in the per-image quantities, so batches are accumulated as sums and divided at the end.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dbot/core/runtime.h"
#include "dbot/data/source.h"
#include "dbot/model/vit.h"

namespace dbot::eval {

constexpr int64_t kTopSingularValues = 5;  // k = 1..5

// Pixel distance between the patches of a g x g grid (row-major positions): [L, L], patch * grid distance.
at::Tensor patch_distances(int64_t grid, int64_t patch_size);

// Attention maps [N, h, 1+L, 1+L] (CLS first) -> [h]: each head's mean attention distance in pixels, summed
// over the N images (divide by the image count for the mean).
at::Tensor attention_distance_sum(const at::Tensor& attn, int64_t grid, int64_t patch_size);

// Patch tokens [N, L, D] -> [k_max]: the top-k singular-value shares of each image's L2-normalized tokens,
// summed over the N images.
at::Tensor singular_value_share_sum(const at::Tensor& tokens, int64_t k_max = kTopSingularValues);

struct Analysis {
  std::string label;              // how figures and tables name it
  at::Tensor attention_distance;  // [depth, heads], pixels
  at::Tensor sv_share;            // [depth, kTopSingularValues]
  int64_t images = 0;
  int64_t img_size = 0, patch_size = 0;
};

// Adds one batch of normalized images [B, C, H, W] (on the encoder's device) to a's sums (sized on the first
// call), without autograd.
void accumulate(Analysis& a, model::VisionTransformer& encoder, const at::Tensor& images);
// The sums divided by the image count: the means.
Analysis finish(Analysis sums);

// Runs the encoder over the first max_images images of source (the eval transform, normalized with
// data.mean/std) in batches on the runtime's device, and averages both tools over them.
Analysis analyze_encoder(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> source,
                         const data::DataConfig& dc, int64_t batch_size, int64_t max_images,
                         const core::Runtime& runtime);

// Writes <dir>/analysis.json (every number, atomically), the gnuplot data and scripts, and draws
// attention_distance.png and singular_values.png (several analyses overlaid, one colour each) with gnuplot.
// Returns the figures drawn; when gnuplot is missing the scripts are still written and the message says so.
struct AnalysisFiles {
  std::vector<std::string> written;
  std::string note;  // non-empty when the figures could not be drawn
};
AnalysisFiles write_analysis(const std::vector<Analysis>& analyses, const std::string& dir);

// A plain-text table per analysis: per layer the mean, min and max attention distance over heads, and the
// top-1 and top-5 singular-value shares.
std::string analysis_table(const Analysis& a);

}  // namespace dbot::eval
