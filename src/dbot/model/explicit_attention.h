// explicit_attention: multi-head attention as timm 0.4.12 and the official dBOT code write it,
// softmax(q k^T * hd^-0.5) v, from the qkv projection's output [N, T, 3D] (read as (3, heads, hd), timm's order)
// to proj's input [N, T, D] (the heads side by side). Where the sgemm loop is usable (OpenBLAS under LibTorch 1.x,
// LibTorch's MKL under 2.x; fp32 CPU outside autocast: model/batched_product) one autograd function reads q, k and v in
// place from the packed [N, T, 3D] and writes the heads' outputs, and backward the packed gradient, in place: no
// per-head copies, no stack of three gradients. Elsewhere the same formula in LibTorch's operations (split_heads,
// attention_map, scaled_bmm).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace dbot::model {

// [N, T, 3D] -> q, k, v [N, h, T, D/h] views. unbind's backward stacks the three gradients into one tensor, where
// three selects would each scatter into a zero-filled [3, N, h, T, D/h] and add.
std::vector<at::Tensor> split_heads(const at::Tensor& qkv_out, int64_t num_heads);

// softmax(q k^T * hd^-0.5): q, k [N, h, T, hd] -> [N, h, T, T]. The scale is the product's alpha.
at::Tensor attention_map(const at::Tensor& q, const at::Tensor& k);

// softmax(q k^T * hd^-0.5) v for every head: qkv_out [N, T, 3D] -> [N, T, D].
at::Tensor explicit_attention(const at::Tensor& qkv_out, int64_t num_heads);

// Whether explicit_attention(qkv_out, ...) runs the in-place BLAS kernel (for the tests).
bool blas_attention(const at::Tensor& qkv_out);

}  // namespace dbot::model
