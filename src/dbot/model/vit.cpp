#include "dbot/model/vit.h"

#include <torch/nn/functional/activation.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "dbot/compat.h"
#include "dbot/core/runtime.h"
#include "dbot/model/explicit_attention.h"
#include "dbot/model/layer_norm.h"
#include "dbot/model/linear_gelu.h"
#include "dbot/model/pos_embed.h"

namespace dbot::model {

namespace nn = torch::nn;

void VitConfig::validate() const {
  auto fail = [&](const std::string& what) { throw std::invalid_argument("model '" + name + "': " + what); };
  if (patch_size <= 0 || img_size <= 0) fail("img_size and patch_size must be positive");
  if (img_size % patch_size != 0) {
    fail("image size " + std::to_string(img_size) + " is not divisible by patch size " + std::to_string(patch_size));
  }
  if (in_chans <= 0) fail("in_chans must be positive");
  if (num_heads <= 0 || embed_dim % num_heads != 0) {
    fail("embed_dim " + std::to_string(embed_dim) + " is not divisible by num_heads " + std::to_string(num_heads));
  }
  if (embed_dim % 4 != 0) fail("embed_dim must be divisible by 4 (sin-cos position embedding)");
  if (depth < 0) fail("depth must be >= 0");
  if (drop_path_rate < 0 || drop_path_rate >= 1) fail("drop_path must be in [0, 1)");
  if (!(norm_eps > 0)) fail("norm_eps must be positive");
  if (proj_dim < 0) fail("proj_dim must be >= 0");
}

at::Tensor drop_path(const at::Tensor& x, double rate, at::Generator* gen) {
  if (gen == nullptr || rate <= 0.0) return x;
  const double keep = 1.0 - rate;
  // One Bernoulli draw per sample, broadcast over tokens and channels, drawn on the CPU generator (the same
  // numbers on every device). The 1/keep scale stays fp32: under bf16 autocast the product promotes to fp32
  // (the residual stream's dtype) instead of rounding 1/keep to bf16 (up to 0.4% off).
  auto mask = at::empty({x.size(0), 1, 1}, at::kFloat).bernoulli_(keep, *gen).div_(keep);
  return x * core::to_device(mask, x.device());
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads)
    : qkv(register_module("qkv", nn::Linear(nn::LinearOptions(dim, 3 * dim).bias(true)))),
      proj(register_module("proj", nn::Linear(dim, dim))),
      num_heads(heads) {}

namespace {
// The attention kernel by device, sequence length and pass. On the CPU, LibTorch 2.x's fused SDPA kernel takes
// 2.4-3.1x the explicit matmul-softmax-matmul's time at 9-17 tokens and 1.0-1.4x at 50-65, forward and backward. At
// 197 tokens it takes 0.7-0.9x forward in fp32 and bf16, the same forward + backward in fp32, but 1.5-1.7x forward +
// backward in bf16. So on the CPU: SDPA from 128 tokens, and in a reduced precision only where autograd records
// nothing (the frozen teacher, evaluation). Figures: bench/attention_kernels.py, docs/PERFORMANCE.md. CUDA always
// takes the fused kernel (flash / memory-efficient: no [T, T] map in memory). LibTorch 1.x has none: explicit
// everywhere.
constexpr int64_t kCpuFusedAttentionMinTokens = 128;
bool cpu_explicit_attention(const at::Tensor& qkv_out) {  // [N, T, 3D]
  if (qkv_out.size(1) < kCpuFusedAttentionMinTokens) return true;
  return qkv_out.scalar_type() != at::kFloat && qkv_out.requires_grad() && at::GradMode::is_enabled();
}
at::Tensor attend(const at::Tensor& qkv_out, int64_t num_heads) {  // [N, T, 3D] -> [N, T, D]
  if (!compat::has_fused_attention() || (qkv_out.is_cpu() && cpu_explicit_attention(qkv_out)))
    return explicit_attention(qkv_out, num_heads);
  const auto q_k_v = split_heads(qkv_out, num_heads);
  const auto out = compat::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);  // [N, h, T, D/h]
  return out.transpose(1, 2).reshape({qkv_out.size(0), qkv_out.size(1), qkv_out.size(2) / 3});
}
}  // namespace

at::Tensor linear(const nn::Linear& l, const at::Tensor& x) { return linear(x, l->weight, l->bias); }

at::Tensor take_rows(const at::Tensor& x, const at::Tensor& rows) {
  // index_select on the flattened [N*T, D] rows, not gather with rows expanded over D: the same values, but it copies
  // whole rows where gather reads one index per element, 7-15x faster forward and 1.3-5.5x forward + backward at the
  // demo's and ViT-Tiny's shapes on LibTorch 1.13 and 2.15 (docs/PERFORMANCE.md, 2026-12-06 Zen 3).
  const int64_t N = x.size(0), T = x.size(1), R = rows.size(1), D = x.size(2);
  const auto flat = (rows + at::arange(N, rows.options()).mul_(T).unsqueeze(1)).reshape({-1});  // [N*R]
  return x.reshape({N * T, D}).index_select(0, flat).view({N, R, D});
}

at::Tensor AttentionImpl::context(const at::Tensor& x) { return attend(linear(qkv, x), num_heads); }

at::Tensor AttentionImpl::forward(const at::Tensor& x) { return linear(proj, context(x)); }

at::Tensor AttentionImpl::attention_probs(const at::Tensor& x) {
  const auto q_k_v = split_heads(qkv(x).to(at::kFloat), num_heads);
  return attention_map(q_k_v[0], q_k_v[1]);  // [N, h, T, T]
}

MlpImpl::MlpImpl(int64_t dim, int64_t hidden, bool quick)
    : fc1(register_module("fc1", nn::Linear(dim, hidden))),
      fc2(register_module("fc2", nn::Linear(hidden, dim))),
      quick_gelu(quick) {}

at::Tensor MlpImpl::hidden(const at::Tensor& x) {
  if (!quick_gelu) return linear_gelu(x, fc1->weight, fc1->bias);
  const auto h = linear(fc1, x);
  return h * at::sigmoid(1.702 * h);  // QuickGELU: OpenAI CLIP's
}

at::Tensor MlpImpl::forward(const at::Tensor& x) { return linear(fc2, hidden(x)); }

BlockImpl::BlockImpl(int64_t dim, int64_t heads, double mlp_ratio, double dpr, const BlockOptions& opts)
    : norm1(register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({dim}).eps(opts.norm_eps)))),
      norm2(nullptr),
      attn(register_module("attn", Attention(dim, heads))),
      mlp(nullptr),
      drop_path_rate(dpr) {
  // Registration order = timm's state-dict order: norm1, attn, norm2, mlp.
  norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({dim}).eps(opts.norm_eps)));
  mlp = register_module("mlp", Mlp(dim, static_cast<int64_t>(dim * mlp_ratio), opts.quick_gelu));
}

at::Tensor BlockImpl::residual(const at::Tensor& x, const nn::Linear& l, const at::Tensor& h, at::Generator* gen) {
  const bool dropped = gen != nullptr && drop_path_rate > 0.0;
  if (dropped || compat::autocast_enabled(x.device().type()) || x.scalar_type() != h.scalar_type() ||
      l->weight.scalar_type() != x.scalar_type() || !l->bias.defined())
    return x + drop_path(linear(l, h), drop_path_rate, gen);
  // x + (h W^T + b) as one addmm into x + b: the product accumulates into the residual sum (beta = 1), where
  // addmm(b, h, W^T) then add would write the branch and read it back. Autograd: AddBackward, AddmmBackward.
  const int64_t D = x.size(-1);
  auto out = at::add(x.reshape({-1, D}), l->bias);  // [N T, D], fresh
  out.addmm_(h.reshape({-1, h.size(-1)}), l->weight.t());
  return out.view(x.sizes());
}

at::Tensor BlockImpl::forward(const at::Tensor& x, at::Generator* gen) {
  const auto y = residual(x, attn->proj, attn->context(layer_norm(norm1, x)), gen);
  return residual(y, mlp->fc2, mlp->hidden(layer_norm(norm2, y)), gen);
}

at::Tensor BlockImpl::forward_rows(const at::Tensor& x, const at::Tensor& rows, at::Generator* gen) {
  const auto context = attn->context(layer_norm(norm1, x));  // [N, T, D]: every token attends to every token
  const auto y = residual(take_rows(x, rows), attn->proj, take_rows(context, rows), gen);
  return residual(y, mlp->fc2, mlp->hidden(layer_norm(norm2, y)), gen);  // [N, R, D]
}

BlockStack::BlockStack(nn::Module& owner, const std::string& prefix, int64_t depth, int64_t dim, int64_t heads,
                       double mlp_ratio, double drop_path_rate, const BlockOptions& opts) {
  auto list = owner.register_module(prefix, nn::ModuleList());
  for (int64_t i = 0; i < depth; ++i) {
    // Stochastic depth decay rule: linear from 0 at the first block to drop_path_rate at the last.
    const double rate = depth > 1 ? drop_path_rate * static_cast<double>(i) / static_cast<double>(depth - 1) : 0.0;
    blocks.emplace_back(dim, heads, mlp_ratio, rate, opts);
    list->push_back(blocks.back());
  }
}

at::Tensor BlockStack::forward(at::Tensor x, at::Generator* gen, const at::Tensor& rows) {
  if (!rows.defined()) {
    for (auto& block : blocks) x = block->forward(x, gen);
    return x;
  }
  if (blocks.empty()) return take_rows(x, rows);
  for (size_t i = 0; i + 1 < blocks.size(); ++i) x = blocks[i]->forward(x, gen);
  return blocks.back()->forward_rows(x, rows, gen);
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size, bool bias)
    : proj(register_module(
          "proj", nn::Conv2d(nn::Conv2dOptions(in_chans, embed_dim, patch_size).stride(patch_size).bias(bias)))) {}

at::Tensor PatchEmbedImpl::forward(const at::Tensor& imgs) {
  // The stride-p convolution as one GEMM over the patches: its weight gradient is then a plain mm, where the
  // convolution's backward took 4% of the demo's CPU step. [N, C, g p, g p] -> [N, g, g, C, p, p] -> [N, L, C p p],
  // the order of the weight's [D, C, p, p] view as [D, C p p].
  const int64_t N = imgs.size(0), C = imgs.size(1), p = proj->weight.size(2), g = imgs.size(2) / p;
  const auto patches = imgs.reshape({N, C, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}).reshape({N, g * g, C * p * p});
  return at::linear(patches, proj->weight.view({proj->weight.size(0), -1}), proj->bias);  // [N, L, D]
}

namespace {
at::Tensor initial_pos_embed(const VitConfig& cfg) {  // [1, 1+L, D]: MAE's fixed sin-cos table, CLS row zero
  return get_2d_sincos_pos_embed(cfg.embed_dim, cfg.grid_size(), true).unsqueeze(0);
}
}  // namespace

VisionTransformerImpl::VisionTransformerImpl(VitConfig config)
    : cfg((config.validate(), std::move(config))),
      patch_embed(
          register_module("patch_embed", PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch_size, !cfg.pre_norm))),
      cls_token(register_parameter("cls_token", at::zeros({1, 1, cfg.embed_dim}))),
      pos_embed(cfg.learned_pos ? register_parameter("pos_embed", initial_pos_embed(cfg))
                                : register_buffer("pos_embed", initial_pos_embed(cfg))),
      norm_pre(cfg.pre_norm
                   ? register_module("norm_pre", nn::LayerNorm(nn::LayerNormOptions({cfg.embed_dim}).eps(cfg.norm_eps)))
                   : nn::LayerNorm(nullptr)),
      blocks(*this, "blocks", cfg.depth, cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.drop_path_rate,
             BlockOptions{cfg.norm_eps, cfg.quick_gelu}),
      norm(cfg.final_norm
               ? register_module("norm", nn::LayerNorm(nn::LayerNormOptions({cfg.embed_dim}).eps(cfg.norm_eps)))
               : nn::LayerNorm(nullptr)) {
  if (cfg.proj_dim > 0) proj = register_parameter("proj", at::zeros({cfg.embed_dim, cfg.proj_dim}));
}

at::Tensor VisionTransformerImpl::embed_patches(const at::Tensor& imgs) {
  TORCH_CHECK(
      imgs.dim() == 4 && imgs.size(1) == cfg.in_chans && imgs.size(2) == cfg.img_size && imgs.size(3) == cfg.img_size,
      "model '", cfg.name, "' expects images [N, ", cfg.in_chans, ", ", cfg.img_size, ", ", cfg.img_size, "], got ",
      imgs.sizes());
  return patch_embed(imgs) + pos_embed.slice(1, 1);
}

at::Tensor VisionTransformerImpl::cls_with_pos() { return cls_token + pos_embed.slice(1, 0, 1); }

at::Tensor VisionTransformerImpl::forward_blocks(const at::Tensor& x, at::Generator* gen, const at::Tensor& rows) {
  return blocks.forward(x, gen, rows);
}

at::Tensor VisionTransformerImpl::embed_tokens(const at::Tensor& imgs) {
  auto x = embed_patches(imgs);
  x = at::cat({cls_with_pos().expand({x.size(0), -1, -1}), x}, 1);  // [N, 1+L, D]
  return norm_pre ? layer_norm(norm_pre, x) : x;
}

at::Tensor VisionTransformerImpl::forward_features(const at::Tensor& imgs, bool final_norm, const at::Tensor& rows) {
  auto x = forward_blocks(embed_tokens(imgs), nullptr, rows);
  TORCH_CHECK(!final_norm || norm, "model '", cfg.name, "' has no final norm");
  return final_norm ? layer_norm(norm, x) : x;
}

at::Tensor VisionTransformerImpl::forward_projected(const at::Tensor& imgs, const at::Tensor& rows) {
  TORCH_CHECK(proj.defined(), "model '", cfg.name, "' has no output projection (proj_dim 0)");
  return at::matmul(forward_features(imgs, /*final_norm=*/true, rows), proj);  // [N, 1+L or R, D] @ [D, P]
}

void xavier_uniform_(at::Tensor w, int64_t fan_in, int64_t fan_out, at::Generator& gen) {
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  w.uniform_(-bound, bound, gen);
}

void init_linear(nn::Linear& linear, at::Generator& gen) {
  xavier_uniform_(linear->weight, linear->weight.size(1), linear->weight.size(0), gen);
  if (linear->bias.defined()) linear->bias.zero_();
}

void init_layer_norm(nn::LayerNorm& ln) {
  ln->weight.fill_(1.0);
  ln->bias.zero_();
}

void init_block(Block& block, at::Generator& gen) {
  init_layer_norm(block->norm1);
  init_linear(block->attn->qkv, gen);
  init_linear(block->attn->proj, gen);
  init_layer_norm(block->norm2);
  init_linear(block->mlp->fc1, gen);
  init_linear(block->mlp->fc2, gen);
}

void VisionTransformerImpl::initialize_weights(at::Generator& gen, bool reset_patch_bias) {
  at::NoGradGuard no_grad;
  pos_embed.copy_(get_2d_sincos_pos_embed(cfg.embed_dim, cfg.grid_size(), true).unsqueeze(0));
  auto& w = patch_embed->proj->weight;  // [D, C, p, p], initialized as the Linear [D, C*p*p]
  const int64_t fan_in = w.size(1) * w.size(2) * w.size(3);
  xavier_uniform_(w, fan_in, w.size(0), gen);
  if (reset_patch_bias && patch_embed->proj->bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));  // PyTorch's Conv2d default
    patch_embed->proj->bias.uniform_(-bound, bound, gen);
  }
  cls_token.normal_(0.0, 0.02, gen);
  if (norm_pre) init_layer_norm(norm_pre);
  for (auto& block : blocks.blocks) init_block(block, gen);
  if (norm) init_layer_norm(norm);
  if (proj.defined()) xavier_uniform_(proj, proj.size(0), proj.size(1), gen);
}

TensorMap state_dict(const nn::Module& module) {
  TensorMap out;
  for (const auto& item : module.named_parameters(true)) out[item.key()] = item.value().detach().contiguous();
  for (const auto& item : module.named_buffers(true)) out[item.key()] = item.value().detach().contiguous();
  return out;
}

int64_t count_blocks(const TensorMap& state, const std::string& prefix) {
  std::set<int64_t> ids;
  for (const auto& [k, v] : state) {
    if (k.rfind(prefix, 0) != 0) continue;
    const auto rest = k.substr(prefix.size());
    ids.insert(std::stoll(rest.substr(0, rest.find('.'))));
  }
  return static_cast<int64_t>(ids.size());
}

void load_state_dict(nn::Module& module, const TensorMap& state, const std::string& what) {
  at::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, at::Tensor& to) {
    auto it = state.find(name);
    if (it == state.end()) throw std::runtime_error(what + ": missing tensor '" + name + "'");
    if (it->second.sizes() != to.sizes()) {
      throw std::runtime_error(what + ": tensor '" + name + "' has shape " + c10::str(it->second.sizes()) +
                               ", the model expects " + c10::str(to.sizes()));
    }
    to.copy_(it->second);
  };
  for (auto& item : module.named_parameters(true)) copy(item.key(), item.value());
  for (auto& item : module.named_buffers(true)) copy(item.key(), item.value());
}

}  // namespace dbot::model
