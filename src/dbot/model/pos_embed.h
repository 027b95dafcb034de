// Fixed 2-D sin-cos position embeddings (MAE's get_2d_sincos_pos_embed), computed in float64, returned
// as float32. For a g x g grid and width D: channels [0, D/2) encode the column index, [D/2, D) the row
// index; each half is [sin(pos * w_k) | cos(pos * w_k)] with w_k = 1 / 10000^(k / (D/4)).
#pragma once

#include <ATen/ATen.h>

namespace dbot::model {

// [g*g (+1), D]; with cls_token the first row is zeros (the CLS slot carries no position).
at::Tensor get_2d_sincos_pos_embed(int64_t embed_dim, int64_t grid_size, bool cls_token);

}  // namespace dbot::model
