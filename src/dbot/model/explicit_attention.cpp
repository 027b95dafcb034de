// explicit_attention: softmax(q k^T * hd^-0.5) v from the packed qkv output. Contract: explicit_attention.h.
#include "dbot/model/explicit_attention.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <stdexcept>

#include "dbot/model/batched_product.h"
#include "dbot/model/softmax_rows.h"

namespace dbot::model {

std::vector<at::Tensor> split_heads(const at::Tensor& qkv_out, int64_t num_heads) {
  const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3;
  return qkv_out.reshape({N, T, 3, num_heads, D / num_heads}).permute({2, 0, 3, 1, 4}).unbind(0);
}

namespace {
double head_scale(int64_t head_dim) { return 1.0 / std::sqrt(static_cast<double>(head_dim)); }
}  // namespace

// The scale is the batched product's alpha: a separate multiply would be one more pass over the [T, T] maps forward
// and one backward (5% of a ViT-S/16 bf16 step), where alpha costs nothing forward and scales the [T, hd] gradients
// backward. It also rounds once where (q k^T) * scale rounds twice in bf16.
at::Tensor attention_map(const at::Tensor& q, const at::Tensor& k) {
  const int64_t N = q.size(0), h = q.size(1), T = q.size(2), hd = q.size(3);
  const auto s = scaled_bmm(q.reshape({N * h, T, hd}), k.reshape({N * h, T, hd}).transpose(1, 2), head_scale(hd));
  return s.view({N, h, T, T}).softmax(-1);
}

namespace {
// The heads of a packed [N, T, 3D] tensor as [N, h, T, hd] matrices in place (row stride 3D).
struct Heads {
  MatrixBatch q, k, v;
};
Heads heads_of(const at::Tensor& packed, int64_t h) {
  const int64_t N = packed.size(0), T = packed.size(1), hd = packed.size(2) / (3 * h);
  const auto view = packed.view({N, T, 3, h, hd}).permute({2, 0, 3, 1, 4});  // [3, N, h, T, hd]
  return {matrix_batch(view[0]), matrix_batch(view[1]), matrix_batch(view[2])};
}
// [N, T, D] as the heads' [N, h, T, hd] matrices in place (row stride D).
MatrixBatch heads_in(const at::Tensor& x, int64_t h) {
  return matrix_batch(x.view({x.size(0), x.size(1), h, x.size(2) / h}).transpose(1, 2));
}

// Forward: P = softmax(scale q k^T) [N, h, T, T] (the softmax in place over the scores), out [N, T, D] = P v, heads
// side by side.
struct Forward {
  at::Tensor probs, out;
};
Forward blas_forward(const at::Tensor& packed, int64_t h) {
  const int64_t N = packed.size(0), T = packed.size(1), D = packed.size(2) / 3;
  const auto in = heads_of(packed, h);
  auto probs = at::empty({N, h, T, T}, packed.options());
  blas_gemm(in.q, in.k.t(), matrix_batch(probs), head_scale(D / h));
  softmax_rows_(probs);
  Forward f{probs, at::empty({N, T, D}, packed.options())};
  blas_gemm(matrix_batch(f.probs), in.v, heads_in(f.out, h), 1.0);
  return f;
}

// Backward, from g = dL/dout [N, T, D]: dv = P^T g, dP = g v^T, dS = softmax'(dP), dq = scale dS k,
// dk = scale dS^T q, written straight into the packed gradient [N, T, 3D].
at::Tensor blas_backward(const at::Tensor& packed, const at::Tensor& probs, const at::Tensor& grad, int64_t h) {
  const int64_t N = packed.size(0), T = packed.size(1), D = packed.size(2) / 3;
  const double scale = head_scale(D / h);
  const auto in = heads_of(packed, h);
  const auto g = heads_in(grad, h);
  auto grad_packed = at::empty_like(packed);  // every element written below
  const auto out = heads_of(grad_packed, h);
  const auto p = matrix_batch(probs);
  blas_gemm(p.t(), g, out.v, 1.0);
  auto grad_probs = at::empty({N, h, T, T}, packed.options());
  blas_gemm(g, in.v.t(), matrix_batch(grad_probs), 1.0);
  softmax_backward_rows_(grad_probs, probs);  // now the scores' gradient
  const auto s = matrix_batch(grad_probs);
  blas_gemm(s, in.k, out.q, scale);
  blas_gemm(s.t(), in.q, out.k, scale);
  return grad_packed;
}

struct BlasAttention : torch::autograd::Function<BlasAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& packed, int64_t heads) {
    auto f = blas_forward(packed, heads);
    ctx->save_for_backward({packed});
    ctx->saved_data["probs"] = f.probs;
    ctx->saved_data["heads"] = heads;
    return f.out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    // The kernel's gradient is not itself differentiable: say so rather than return one that autograd cannot follow.
    if (at::GradMode::is_enabled())
      throw std::runtime_error("explicit_attention: no second derivative through the in-place BLAS attention");
    const auto packed = ctx->get_saved_variables()[0];
    const auto grad = grad_out[0].contiguous();
    return {blas_backward(packed, ctx->saved_data["probs"].toTensor(), grad, ctx->saved_data["heads"].toInt()),
            at::Tensor()};
  }
};
}  // namespace

bool blas_attention(const at::Tensor& qkv_out) {
  return blas_loop_usable() && qkv_out.dim() == 3 && qkv_out.is_cpu() && qkv_out.scalar_type() == at::kFloat &&
         qkv_out.layout() == at::kStrided;
}

at::Tensor explicit_attention(const at::Tensor& qkv_out, int64_t num_heads) {
  if (blas_attention(qkv_out)) {
    const auto packed = qkv_out.contiguous();
    if (at::GradMode::is_enabled() && packed.requires_grad()) return BlasAttention::apply(packed, num_heads);
    return blas_forward(packed, num_heads).out;
  }
  const int64_t N = qkv_out.size(0), T = qkv_out.size(1), D = qkv_out.size(2) / 3, hd = D / num_heads;
  const auto q_k_v = split_heads(qkv_out, num_heads);
  const auto probs = attention_map(q_k_v[0], q_k_v[1]).view({N * num_heads, T, T});
  const auto out = scaled_bmm(probs, q_k_v[2].reshape({N * num_heads, T, hd}));  // [N h, T, hd]
  return out.view({N, num_heads, T, hd}).transpose(1, 2).reshape({N, T, D});
}

}  // namespace dbot::model
