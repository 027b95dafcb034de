#include "dbot/io/config.h"

#include <optional>
#include <sstream>
#include <stdexcept>

#include "dbot/io/files.h"
#include "dbot/model/registry.h"
#include "dbot/train/schedule.h"

namespace dbot::io {

namespace {

// The schema with its defaults. Keep in sync with docs in README.md ("Recipes").
const char* kDefaults = R"(
model:
  name: vit_tiny_patch4_28   # registry name vit_<size>_patch<p>_<img>
  in_chans: 1
  embed_dim: 0               # 0 = from the name
  depth: 0                   # 0 = from the name
  num_heads: 0               # 0 = from the name
  drop_path: 0.0             # stochastic depth, encoder and decoder (linear ramp)
mkd:
  stage_epochs: [0, 800, 1600]   # stage boundaries in epochs: K stages
  mask_ratio: 0.75
  teacher_depth: -1          # stage-0 teacher: -1 = the student's depth, 0 = zero-block teacher
  reset_patch_bias: false    # official: the patch conv bias carries over between stages
  decoder_embed_dim: 512
  decoder_depth: 8
  decoder_num_heads: 16
data:
  dataset: fashion_mnist
  root: /usr/share/datasets/fashion-mnist
  train_limit: 0
  test_limit: 0
  crop_scale: [0.2, 1.0]
  hflip: true
  mean: [0.2860]
  std: [0.3530]
optim:
  batch_size: 256            # per process
  accum_iter: 1
  blr: 1.5e-4
  lr: 0.0                    # absolute peak lr; 0 = blr * batch_size * accum_iter * world_size / 256
  min_lr: 0.0
  warmup_epochs: 40
  weight_decay: 0.05
  betas: [0.9, 0.95]
  eps: 1.0e-8
  clip_grad: 0.0             # 0 = no clipping
train:
  seed: 0
  threads: 0                 # 0 = all cores
  precision: auto            # auto (bf16 where the CPU has it) | bf16 | fp32
  log_every: 50
  checkpoint_every: 500
eval:
  knn_k: 20
  knn_temperature: 0.07
  linprobe_epochs: 20
  linprobe_lr: 1.0e-3
  linprobe_batch_size: 256
  linprobe_weight_decay: 1.0e-4
  batch_size: 500
)";

void merge(YAML::Node dst, const YAML::Node& src, const std::string& prefix, const std::string& origin) {
  if (!src.IsMap())
    throw std::runtime_error(origin + ": '" + (prefix.empty() ? "<root>" : prefix) + "' must be a mapping");
  for (const auto& kv : src) {
    const auto key = kv.first.as<std::string>();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    const YAML::Node& cdst = dst;
    if (!cdst[key]) throw std::runtime_error(origin + ": unknown recipe key '" + path + "'");
    if (cdst[key].IsMap()) {
      merge(dst[key], kv.second, path, origin);
    } else {
      if (kv.second.IsMap()) throw std::runtime_error(origin + ": '" + path + "' must not be a mapping");
      dst[key] = YAML::Clone(kv.second);
    }
  }
}

// The node at a dotted key ("optim.lr"), sharing the tree's memory; nullopt when a segment is missing.
std::optional<YAML::Node> lookup(const YAML::Node& tree, const std::string& dotted) {
  YAML::Node node = tree;
  std::stringstream ss(dotted);
  for (std::string seg; std::getline(ss, seg, '.');) {
    const YAML::Node& cnode = node;
    if (!cnode.IsMap() || !cnode[seg]) return std::nullopt;
    node.reset(cnode[seg]);
  }
  return node;
}

template <typename T>
T get(const YAML::Node& tree, const std::string& dotted, const std::string& origin) {
  const auto node = lookup(tree, dotted);
  if (!node) throw std::runtime_error(origin + ": missing key '" + dotted + "'");
  try {
    return node->as<T>();
  } catch (const YAML::Exception&) {
    std::stringstream v;
    v << *node;
    throw std::runtime_error(origin + ": key '" + dotted + "' has an invalid value '" + v.str() + "'");
  }
}

}  // namespace

double OptimConfig::peak_lr(int64_t world_size) const {
  if (lr > 0.0) return lr;
  return blr * static_cast<double>(batch_size * accum_iter * world_size) / 256.0;
}

std::string RunConfig::to_yaml() const {
  YAML::Emitter out;
  out << tree;
  return std::string(out.c_str()) + "\n";
}

YAML::Node default_tree() { return YAML::Load(kDefaults); }

void apply_override(YAML::Node tree, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw std::runtime_error("--set '" + assignment + "': expected key=value, e.g. optim.blr=1e-3");
  }
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  const auto target = lookup(tree, key);
  if (!target) throw std::runtime_error("--set: unknown recipe key '" + key + "'");
  if (target->IsMap()) throw std::runtime_error("--set: '" + key + "' is a section, not a value");
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error("--set " + key + ": cannot parse value '" + value + "'");
  }
  const auto dot = key.rfind('.');
  YAML::Node parent = dot == std::string::npos ? tree : *lookup(tree, key.substr(0, dot));
  parent[key.substr(dot == std::string::npos ? 0 : dot + 1)] = parsed;
}

RunConfig build_config(const YAML::Node& tree, const std::string& origin) {
  RunConfig c;
  c.tree = YAML::Clone(tree);
  auto S = [&](const std::string& k) { return get<std::string>(tree, k, origin); };
  auto I = [&](const std::string& k) { return get<int64_t>(tree, k, origin); };
  auto D = [&](const std::string& k) { return get<double>(tree, k, origin); };
  auto B = [&](const std::string& k) { return get<bool>(tree, k, origin); };
  auto V = [&](const std::string& k) { return get<std::vector<double>>(tree, k, origin); };

  try {
    c.model = model::vit_config(S("model.name"));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(origin + ": model.name: " + e.what());
  }
  c.model.in_chans = I("model.in_chans");
  if (I("model.embed_dim") > 0) c.model.embed_dim = I("model.embed_dim");
  if (I("model.depth") > 0) c.model.depth = I("model.depth");
  if (I("model.num_heads") > 0) c.model.num_heads = I("model.num_heads");
  c.model.drop_path_rate = D("model.drop_path");
  try {
    c.model.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(origin + ": " + e.what());
  }

  c.stage_epochs = get<std::vector<int64_t>>(tree, "mkd.stage_epochs", origin);
  try {
    train::validate_stage_epochs(c.stage_epochs);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(origin + ": " + e.what());
  }
  c.mkd.mask_ratio = D("mkd.mask_ratio");
  c.mkd.teacher_depth = I("mkd.teacher_depth");
  c.mkd.reset_patch_bias = B("mkd.reset_patch_bias");
  c.mkd.decoder.embed_dim = I("mkd.decoder_embed_dim");
  c.mkd.decoder.depth = I("mkd.decoder_depth");
  c.mkd.decoder.num_heads = I("mkd.decoder_num_heads");
  c.mkd.decoder.drop_path_rate = c.model.drop_path_rate;
  if (c.mkd.decoder.num_heads <= 0 || c.mkd.decoder.embed_dim % c.mkd.decoder.num_heads != 0 ||
      c.mkd.decoder.embed_dim % 4 != 0) {
    throw std::runtime_error(origin + ": mkd.decoder_embed_dim must be divisible by 4 and by mkd.decoder_num_heads");
  }

  c.data.dataset = S("data.dataset");
  c.data.root = S("data.root");
  c.data.train_limit = I("data.train_limit");
  c.data.test_limit = I("data.test_limit");
  c.data.crop_scale = V("data.crop_scale");
  c.data.hflip = B("data.hflip");
  c.data.mean = V("data.mean");
  c.data.std = V("data.std");
  if (static_cast<int64_t>(c.data.mean.size()) != c.model.in_chans ||
      static_cast<int64_t>(c.data.std.size()) != c.model.in_chans) {
    throw std::runtime_error(origin + ": data.mean and data.std need model.in_chans (" +
                             std::to_string(c.model.in_chans) + ") values");
  }

  c.optim.batch_size = I("optim.batch_size");
  c.optim.accum_iter = I("optim.accum_iter");
  c.optim.blr = D("optim.blr");
  c.optim.lr = D("optim.lr");
  c.optim.min_lr = D("optim.min_lr");
  c.optim.warmup_epochs = D("optim.warmup_epochs");
  c.optim.clip_grad = D("optim.clip_grad");
  c.optim.adamw.weight_decay = D("optim.weight_decay");
  const auto betas = V("optim.betas");
  if (betas.size() != 2) throw std::runtime_error(origin + ": optim.betas must be [beta1, beta2]");
  c.optim.adamw.beta1 = betas[0];
  c.optim.adamw.beta2 = betas[1];
  c.optim.adamw.eps = D("optim.eps");
  if (c.optim.batch_size <= 0 || c.optim.accum_iter <= 0) {
    throw std::runtime_error(origin + ": optim.batch_size and optim.accum_iter must be positive");
  }

  c.train.seed = static_cast<uint64_t>(I("train.seed"));
  c.train.threads = I("train.threads");
  c.train.precision = S("train.precision");
  if (c.train.precision != "auto" && c.train.precision != "bf16" && c.train.precision != "fp32") {
    throw std::runtime_error(origin + ": train.precision must be auto, bf16 or fp32, got '" + c.train.precision + "'");
  }
  c.train.log_every = I("train.log_every");
  c.train.checkpoint_every = I("train.checkpoint_every");

  c.eval.knn_k = I("eval.knn_k");
  c.eval.knn_temperature = D("eval.knn_temperature");
  c.eval.linprobe_epochs = I("eval.linprobe_epochs");
  c.eval.linprobe_lr = D("eval.linprobe_lr");
  c.eval.linprobe_batch_size = I("eval.linprobe_batch_size");
  c.eval.linprobe_weight_decay = D("eval.linprobe_weight_decay");
  c.eval.batch_size = I("eval.batch_size");
  return c;
}

namespace {
// The defaults with a YAML document (a recipe, or a checkpoint's config) merged on top.
YAML::Node layered_on_defaults(const std::string& yaml_text, const std::string& origin) {
  YAML::Node tree = default_tree();
  YAML::Node given;
  try {
    given = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": invalid YAML: " + e.what());
  }
  if (!given.IsNull()) merge(tree, given, "", origin);
  return tree;
}
}  // namespace

RunConfig load_config(const std::string& recipe_path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!recipe_path.empty()) {
    const auto bytes = read_file(recipe_path);
    text.assign(bytes.begin(), bytes.end());
  }
  const std::string origin = recipe_path.empty() ? "<defaults>" : recipe_path;
  YAML::Node tree = layered_on_defaults(text, origin);
  for (const auto& o : overrides) apply_override(tree, o);
  return build_config(tree, origin);
}

RunConfig config_from_yaml(const std::string& yaml_text, const std::string& origin) {
  return build_config(layered_on_defaults(yaml_text, origin), origin);
}

}  // namespace dbot::io
