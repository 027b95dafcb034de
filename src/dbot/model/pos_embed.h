// Fixed 2-D sin-cos position embeddings (MAE's get_2d_sincos_pos_embed), computed in float64, returned
// as float32. For a g x g grid and width D: channels [0, D/2) encode the column index, [D/2, D) the row
// index; each half is [sin(pos * w_k) | cos(pos * w_k)] with w_k = 1 / 10000^(k / (D/4)).
#pragma once

#include <ATen/ATen.h>

namespace dbot::model {

// [g*g (+1), D]; with cls_token the first row is zeros (the CLS slot carries no position).
at::Tensor get_2d_sincos_pos_embed(int64_t embed_dim, int64_t grid_size, bool cls_token);

// A learned or fixed position table for another grid, as timm's resample_abs_pos_embed (defaults): the
// prefix (CLS) rows are kept, the g x g patch rows are resized to new_grid x new_grid by bicubic
// interpolation with antialiasing (F.interpolate(..., antialias=True), align_corners false) in fp32.
// [1, prefix + g*g, D] -> [1, prefix + new_grid^2, D], in the input's dtype; unchanged when the grid is.
at::Tensor resample_abs_pos_embed(const at::Tensor& pos_embed, int64_t new_grid, int64_t num_prefix_tokens = 1);

}  // namespace dbot::model
