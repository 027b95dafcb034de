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

}  // namespace dbot::model
