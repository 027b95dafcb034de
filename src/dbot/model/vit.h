// Vision Transformer (timm's VisionTransformer layout and parameter names, MAE's fixed sin-cos positions).
//
// Shapes: N batch, C channels, H = W = img_size, p patch, g = H / p, L = g*g patches, T tokens,
// D width, h heads. Parameter names are exactly timm's (cls_token, pos_embed, patch_embed.proj.*,
// blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*), so a state dict loads
// into timm.create_model(name, num_classes=0) strictly. pos_embed is a buffer: it is fixed, never trained.
//
// Randomness (drop path) comes only from the generator passed to forward; nullptr means eval mode.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <map>
#include <string>
#include <vector>

namespace dbot::model {

struct VitConfig {
  std::string name;  // registry name, e.g. vit_base_patch16_224
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t in_chans = 3;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  double mlp_ratio = 4.0;
  double drop_path_rate = 0.0;  // linear ramp 0 -> rate over the blocks
  // A CLIP image tower (OpenAI / open_clip, as timm's CLIP ViTs): norm_pre (CLIP's ln_pre) on the tokens
  // before the blocks and a bias-free patch conv (timm: `bias = not pre_norm`), QuickGELU x * sigmoid(1.702 x)
  // instead of erf GELU, LayerNorm eps 1e-5, and `proj` [D, proj_dim] after the final norm (ln_post).
  bool pre_norm = false;
  bool quick_gelu = false;
  double norm_eps = 1e-6;
  int64_t proj_dim = 0;  // 0: no projection
  // For a classifier being fine-tuned (finetune/classifier.h): pos_embed a learned parameter (else a fixed
  // buffer), and no final `norm` (timm's global_pool='avg' models normalize the pooled token with fc_norm).
  bool learned_pos = false;
  bool final_norm = true;

  // CLIP's layout (pre_norm or proj): the dBOT target is then taken after ln_post and proj (METHOD.md).
  bool clip() const { return pre_norm || proj_dim > 0; }

  int64_t grid_size() const { return img_size / patch_size; }
  int64_t num_patches() const { return grid_size() * grid_size(); }
  void validate() const;  // throws std::invalid_argument naming the bad field
};

// Per-sample stochastic depth: drops the whole residual branch of a sample with probability `rate`
// and scales the kept ones by 1/(1 - rate) in fp32 (a bf16 x gives an fp32 result). Identity when
// gen == nullptr or rate == 0.
at::Tensor drop_path(const at::Tensor& x, double rate, at::Generator* gen);

// y = x W^T + b for x [..., in] -> [..., out] by ATen's linear, which folds the bias into one GEMM (addmm) on
// the flattened rows. LibTorch's nn::Linear::forward (torch/nn/functional/linear.h) instead runs matmul and
// then += bias for inputs of more than 2 dimensions: one more pass over the output, forward and backward. On the
// CPU under bf16 autocast and autograd, model::linear (linear_gelu.h): the same forward, the bias gradient summed in
// one fp32 pass.
at::Tensor linear(const torch::nn::Linear& l, const at::Tensor& x);

// x [N, T, D] at the tokens rows [N, R] (int64 indices into T): [N, R, D].
at::Tensor take_rows(const at::Tensor& x, const at::Tensor& rows);

// Multi-head self-attention with one fused qkv projection [3D, D], read as (3, heads, head_dim).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t num_heads);
  at::Tensor forward(const at::Tensor& x);  // [N, T, D] -> [N, T, D]: proj(context(x))
  at::Tensor context(const at::Tensor& x);  // [N, T, D] -> [N, T, D]: the heads' outputs side by side, before proj
  // The attention maps softmax(q k^T / sqrt(D/h)) by the unfused path, fp32: [N, T, D] -> [N, h, T, T]. For the
  // analysis tools only (eval/analyze.h); forward picks its kernel by device and length (vit.cpp: attend).
  at::Tensor attention_probs(const at::Tensor& x);
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  int64_t num_heads;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, bool quick_gelu = false);
  at::Tensor forward(const at::Tensor& x);  // fc1 -> exact (erf) GELU or QuickGELU -> fc2
  at::Tensor hidden(const at::Tensor& x);   // fc1 -> GELU: fc2's input
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  bool quick_gelu;
};
TORCH_MODULE(Mlp);

// How a block is built beyond its width: LayerNorm eps and the MLP's activation (VitConfig's CLIP fields).
struct BlockOptions {
  double norm_eps = 1e-6;
  bool quick_gelu = false;
};

// Pre-norm transformer block: x + dp(attn(norm1(x))), then x + dp(mlp(norm2(x))).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t num_heads, double mlp_ratio, double drop_path_rate, const BlockOptions& opts = {});
  at::Tensor forward(const at::Tensor& x, at::Generator* gen = nullptr);  // [N, T, D]
  // forward(x) at the tokens `rows` [N, R] only: [N, T, D] -> [N, R, D]. The attention still reads every token's
  // keys and values; after it each token goes on alone, so proj, the MLP and both residuals run on R rows. Drop
  // path draws the same numbers as forward.
  at::Tensor forward_rows(const at::Tensor& x, const at::Tensor& rows, at::Generator* gen = nullptr);
  // x + dp(l(h)): a residual branch ending in the Linear l, from l's input h. Without drop path or autocast one
  // addmm of h W^T into x + b.
  at::Tensor residual(const at::Tensor& x, const torch::nn::Linear& l, const at::Tensor& h, at::Generator* gen);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  double drop_path_rate;
};
TORCH_MODULE(Block);

// A stack of blocks registered under `prefix` ("blocks" or "decoder_blocks") with a drop-path ramp.
struct BlockStack {
  BlockStack(torch::nn::Module& owner, const std::string& prefix, int64_t depth, int64_t dim, int64_t heads,
             double mlp_ratio, double drop_path_rate, const BlockOptions& opts = {});
  // [N, T, D] -> [N, T, D]; with `rows` [N, R] defined, the output at those tokens only, [N, R, D]: the last block
  // by forward_rows (no block: x at rows).
  at::Tensor forward(at::Tensor x, at::Generator* gen, const at::Tensor& rows = {});
  std::vector<Block> blocks;
};

class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_chans, int64_t embed_dim, int64_t patch_size, bool bias = true);
  at::Tensor forward(const at::Tensor& imgs);  // [N, C, H, W] -> [N, L, D]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(VitConfig cfg);

  // Patch embedding plus position code, no CLS: [N, C, H, W] -> [N, L, D].
  at::Tensor embed_patches(const at::Tensor& imgs);
  // The CLS token with its (zero) position slot: [1, 1, D].
  at::Tensor cls_with_pos();
  // What the first block sees: CLS with its slot, the patches with theirs, and norm_pre when the model has one.
  at::Tensor embed_tokens(const at::Tensor& imgs);  // [N, C, H, W] -> [N, 1+L, D]
  // [N, T, D] -> [N, T, D], or [N, R, D] at the tokens `rows` [N, R] when defined (BlockStack::forward).
  at::Tensor forward_blocks(const at::Tensor& x, at::Generator* gen = nullptr, const at::Tensor& rows = {});
  // Full image: [N, C, H, W] -> [N, 1+L, D]; after the final norm, or before it (the dBOT target). With `rows`
  // [N, R] defined, those tokens' outputs only: [N, R, D].
  at::Tensor forward_features(const at::Tensor& imgs, bool final_norm = true, const at::Tensor& rows = {});
  // CLIP's image tokens: the final norm's output times proj, [N, C, H, W] -> [N, 1+L, proj_dim] (or [N, R, ...]).
  at::Tensor forward_projected(const at::Tensor& imgs, const at::Tensor& rows = {});

  // The official initialization (METHOD.md): xavier_uniform Linear weights (fused qkv shape), zero
  // biases, patch conv weight xavier on its [D, C*p*p] view, LayerNorm (1, 0), cls_token N(0, 0.02).
  // The patch conv bias keeps its value unless reset_patch_bias (PyTorch's default uniform init).
  void initialize_weights(at::Generator& gen, bool reset_patch_bias);

  VitConfig cfg;
  PatchEmbed patch_embed{nullptr};
  at::Tensor cls_token;                    // [1, 1, D]
  at::Tensor pos_embed;                    // [1, 1+L, D], buffer (a parameter with cfg.learned_pos)
  torch::nn::LayerNorm norm_pre{nullptr};  // cfg.pre_norm only
  BlockStack blocks;
  torch::nn::LayerNorm norm{nullptr};  // null without cfg.final_norm
  at::Tensor proj;                     // [D, proj_dim], cfg.proj_dim > 0 only
};
TORCH_MODULE(VisionTransformer);

// Shared initializers (also used by the decoder), drawing from an explicit generator.
void xavier_uniform_(at::Tensor w, int64_t fan_in, int64_t fan_out, at::Generator& gen);
void init_linear(torch::nn::Linear& linear, at::Generator& gen);
void init_layer_norm(torch::nn::LayerNorm& ln);
void init_block(Block& block, at::Generator& gen);

// Parameters and buffers of a module by name (detached, contiguous; they share storage with the module).
using TensorMap = std::map<std::string, at::Tensor>;
TensorMap state_dict(const torch::nn::Module& module);

// A ViT encoder's architecture and its tensors with timm names (what weight files give and teachers take).
struct EncoderWeights {
  VitConfig cfg;
  TensorMap state;
};

// Number of blocks in an encoder state dict ("blocks.{i}." prefixes).
int64_t count_blocks(const TensorMap& state, const std::string& prefix = "blocks.");

// Copies a state dict into a module; every module tensor must be present with the same shape (extra entries
// in state are ignored). Errors name `what`, the tensor and both shapes.
void load_state_dict(torch::nn::Module& module, const TensorMap& state, const std::string& what);

}  // namespace dbot::model
