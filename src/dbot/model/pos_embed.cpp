#include "dbot/model/pos_embed.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace dbot::model {

at::Tensor get_2d_sincos_pos_embed(int64_t embed_dim, int64_t grid_size, bool cls_token) {
  if (embed_dim % 4 != 0) {
    throw std::invalid_argument("sin-cos position embedding needs a width divisible by 4, got " +
                                std::to_string(embed_dim));
  }
  const int64_t quarter = embed_dim / 4, half = embed_dim / 2;
  const int64_t offset = cls_token ? 1 : 0;
  auto table = at::zeros({grid_size * grid_size + offset, embed_dim}, at::kDouble);
  auto t = table.accessor<double, 2>();
  for (int64_t row = 0; row < grid_size; ++row) {
    for (int64_t col = 0; col < grid_size; ++col) {
      const int64_t token = offset + row * grid_size + col;
      for (int64_t k = 0; k < quarter; ++k) {
        const double omega = 1.0 / std::pow(10000.0, static_cast<double>(k) / static_cast<double>(quarter));
        // meshgrid puts w (the column) first: the first half encodes the column.
        t[token][k] = std::sin(col * omega);
        t[token][quarter + k] = std::cos(col * omega);
        t[token][half + k] = std::sin(row * omega);
        t[token][half + quarter + k] = std::cos(row * omega);
      }
    }
  }
  return table.to(at::kFloat);
}

at::Tensor resample_abs_pos_embed(const at::Tensor& pos_embed, int64_t new_grid, int64_t num_prefix_tokens) {
  const int64_t tokens = pos_embed.size(1), dim = pos_embed.size(2);
  const auto grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(tokens - num_prefix_tokens))));
  if (grid * grid != tokens - num_prefix_tokens) {
    throw std::invalid_argument("a position table of " + std::to_string(tokens) + " rows is not " +
                                std::to_string(num_prefix_tokens) + " prefix rows and a square grid");
  }
  if (grid == new_grid) return pos_embed;
  const auto prefix = pos_embed.slice(1, 0, num_prefix_tokens);
  auto patches =
      pos_embed.slice(1, num_prefix_tokens).to(at::kFloat).reshape({1, grid, grid, dim}).permute({0, 3, 1, 2});
  patches = at::_upsample_bicubic2d_aa(patches.contiguous(), {new_grid, new_grid}, /*align_corners=*/false);
  patches = patches.permute({0, 2, 3, 1}).reshape({1, new_grid * new_grid, dim}).to(pos_embed.scalar_type());
  return at::cat({prefix, patches}, 1);
}

}  // namespace dbot::model
