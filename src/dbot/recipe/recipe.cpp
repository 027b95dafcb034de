#include "dbot/recipe/recipe.h"

#include <optional>
#include <sstream>
#include <stdexcept>

#include "dbot/io/files.h"
#include "dbot/model/registry.h"
#include "dbot/train/schedule.h"

namespace dbot::recipe {

namespace {

// Keys whose YAML form differs from the struct fields they fill.
struct YamlOnly {
  std::string model_name = "vit_tiny_patch4_28";    // registry name: vit_<size>_patch<p>_<img>
  int64_t embed_dim = 0, depth = 0, num_heads = 0;  // 0 = from the name
  std::vector<double> betas;                        // AdamW (beta1, beta2)
  std::vector<double> finetune_betas;               // fine-tuning's AdamW (beta1, beta2)
  int64_t seed = 0;
};

// The recipe's defaults: the config structs' own, plus what a recipe means by default (Fashion-MNIST:
// one input channel, a tiny ViT on 28 px).
void recipe_defaults(Recipe& r, YamlOnly& y) {
  r.model.in_chans = 1;
  y.betas = {r.optim.adamw.beta1, r.optim.adamw.beta2};
  y.finetune_betas = {r.finetune.adamw.beta1, r.finetune.adamw.beta2};
  y.seed = static_cast<int64_t>(r.train.seed);
}

// The schema: every recipe key and the field it fills, in the order of the resolved YAML.
template <typename F>
void schema(Recipe& r, YamlOnly& y, F&& f) {
  f("model.name", y.model_name);
  f("model.in_chans", r.model.in_chans);
  f("model.embed_dim", y.embed_dim);
  f("model.depth", y.depth);
  f("model.num_heads", y.num_heads);
  f("model.drop_path", r.model.drop_path_rate);  // encoder and decoder (linear ramp)
  f("mkd.stage_epochs", r.mkd.stage_epochs);
  f("mkd.mask_ratio", r.mkd.mask_ratio);
  f("mkd.teacher_depth", r.mkd.teacher_depth);
  f("mkd.reset_patch_bias", r.mkd.reset_patch_bias);
  f("mkd.reinit_student", r.mkd.reinit_student);
  f("mkd.teacher.init", r.mkd.teacher_init);
  f("mkd.teacher.num_heads", r.mkd.teacher_num_heads);
  f("mkd.teacher.act", r.mkd.teacher_act);
  f("mkd.teacher.mean", r.mkd.teacher_mean);
  f("mkd.teacher.std", r.mkd.teacher_std);
  f("mkd.student.init", r.mkd.student_init);
  f("mkd.loss", r.mkd.loss);
  f("mkd.target", r.mkd.target);
  f("mkd.norm_pix_loss", r.mkd.norm_pix_loss);
  f("mkd.decoder_embed_dim", r.mkd.decoder.embed_dim);
  f("mkd.decoder_depth", r.mkd.decoder.depth);
  f("mkd.decoder_num_heads", r.mkd.decoder.num_heads);
  f("data.format", r.data.format);
  f("data.path", r.data.path);
  f("data.eval_path", r.data.eval_path);
  f("data.train_limit", r.data.train_limit);
  f("data.test_limit", r.data.test_limit);
  f("data.crop_scale", r.data.crop_scale);
  f("data.hflip", r.data.hflip);
  f("data.crop_pct", r.data.crop_pct);
  f("data.dct_scale", r.data.dct_scale);
  f("data.workers", r.data.workers);
  f("data.skip_bad", r.data.skip_bad);
  f("data.cache_dir", r.data.cache_dir);
  f("data.mean", r.data.mean);
  f("data.std", r.data.std);
  f("optim.batch_size", r.optim.batch_size);
  f("optim.accum_iter", r.optim.accum_iter);
  f("optim.blr", r.optim.blr);
  f("optim.lr", r.optim.lr);
  f("optim.min_lr", r.optim.min_lr);
  f("optim.warmup_epochs", r.optim.warmup_epochs);
  f("optim.weight_decay", r.optim.adamw.weight_decay);
  f("optim.betas", y.betas);
  f("optim.eps", r.optim.adamw.eps);
  f("optim.clip_grad", r.optim.clip_grad);
  f("train.seed", y.seed);
  f("train.device", r.runtime.device);
  f("train.precision", r.runtime.precision);
  f("train.threads", r.runtime.threads);
  f("train.log_every", r.train.log_every);
  f("train.checkpoint_every", r.train.checkpoint_every);
  f("finetune.epochs", r.finetune.epochs);
  f("finetune.warmup_epochs", r.finetune.warmup_epochs);
  f("finetune.batch_size", r.finetune.batch_size);
  f("finetune.accum_iter", r.finetune.accum_iter);
  f("finetune.blr", r.finetune.blr);
  f("finetune.lr", r.finetune.lr);
  f("finetune.min_lr", r.finetune.min_lr);
  f("finetune.layer_decay", r.finetune.layer_decay);
  f("finetune.drop_path", r.finetune.drop_path);
  f("finetune.clip_grad", r.finetune.clip_grad);
  f("finetune.weight_decay", r.finetune.adamw.weight_decay);
  f("finetune.betas", y.finetune_betas);
  f("finetune.eps", r.finetune.adamw.eps);
  f("finetune.mixup", r.finetune.mix.mixup_alpha);
  f("finetune.cutmix", r.finetune.mix.cutmix_alpha);
  f("finetune.mixup_prob", r.finetune.mix.prob);
  f("finetune.mixup_switch_prob", r.finetune.mix.switch_prob);
  f("finetune.smoothing", r.finetune.mix.label_smoothing);
  f("finetune.reprob", r.finetune.reprob);
  f("finetune.crop_scale", r.finetune.crop_scale);
  f("finetune.head_init_std", r.finetune.head_init_std);
  f("finetune.rand_augment", r.finetune.rand_augment);
  f("finetune.num_classes", r.finetune.num_classes);
  f("eval.knn_k", r.eval.knn_k);
  f("eval.knn_temperature", r.eval.knn_temperature);
  f("eval.linprobe_epochs", r.eval.linprobe_epochs);
  f("eval.linprobe_lr", r.eval.linprobe_lr);
  f("eval.linprobe_batch_size", r.eval.linprobe_batch_size);
  f("eval.linprobe_weight_decay", r.eval.linprobe_weight_decay);
  f("eval.linprobe_schedule", r.eval.linprobe_schedule);
  f("eval.linprobe_protocol", r.eval.linprobe_protocol);
  f("eval.mae_epochs", r.eval.mae.epochs);
  f("eval.mae_warmup_epochs", r.eval.mae.warmup_epochs);
  f("eval.mae_batch_size", r.eval.mae.batch_size);
  f("eval.mae_blr", r.eval.mae.blr);
  f("eval.mae_lr", r.eval.mae.lr);
  f("eval.mae_min_lr", r.eval.mae.min_lr);
  f("eval.mae_weight_decay", r.eval.mae.weight_decay);
  f("eval.mae_crop_scale", r.eval.mae.crop_scale);
  f("eval.batch_size", r.eval.batch_size);
}

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

// Checks and derived fields after the schema has filled r; errors name the key and the origin.
void finish(Recipe& r, const YamlOnly& y, const std::string& origin) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(origin + ": " + what); };
  const model::VitConfig given = r.model;
  try {
    r.model = model::vit_config(y.model_name);
  } catch (const std::invalid_argument& e) {
    fail(std::string("model.name: ") + e.what());
  }
  r.model.in_chans = given.in_chans;
  r.model.drop_path_rate = given.drop_path_rate;
  if (y.embed_dim > 0) r.model.embed_dim = y.embed_dim;
  if (y.depth > 0) r.model.depth = y.depth;
  if (y.num_heads > 0) r.model.num_heads = y.num_heads;
  try {
    r.model.validate();
    train::validate_stage_epochs(r.mkd.stage_epochs);
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  r.mkd.decoder.drop_path_rate = r.model.drop_path_rate;
  const auto& dec = r.mkd.decoder;
  if (dec.num_heads <= 0 || dec.embed_dim % dec.num_heads != 0 || dec.embed_dim % 4 != 0) {
    fail("mkd.decoder_embed_dim must be divisible by 4 and by mkd.decoder_num_heads");
  }
  if (static_cast<int64_t>(r.data.mean.size()) != r.model.in_chans ||
      static_cast<int64_t>(r.data.std.size()) != r.model.in_chans) {
    fail("data.mean and data.std need model.in_chans (" + std::to_string(r.model.in_chans) + ") values");
  }
  const auto& tm = r.mkd.teacher_mean;
  const auto& ts = r.mkd.teacher_std;
  if (tm.size() != ts.size() || (!tm.empty() && static_cast<int64_t>(tm.size()) != r.model.in_chans)) {
    fail("mkd.teacher.mean and mkd.teacher.std need model.in_chans (" + std::to_string(r.model.in_chans) +
         ") values each, or none (the data's normalization)");
  }
  for (const double s : ts) {
    if (!(s > 0)) fail("mkd.teacher.std values must be positive");
  }
  if (!tm.empty() && r.mkd.teacher_init.empty()) fail("mkd.teacher.mean/std need mkd.teacher.init");
  const auto& act = r.mkd.teacher_act;
  if (act != "auto" && act != "gelu" && act != "quick_gelu") {
    fail("mkd.teacher.act must be auto, gelu or quick_gelu, got '" + act + "'");
  }
  const auto& loss = r.mkd.loss;
  try {
    mkd::loss_spec(loss, model::VitConfig{});  // checks the name only: the teacher is not read yet
    mkd::check_target(r.mkd.target);
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  if (r.mkd.target == "pixels") {  // MAE: one stage, no teacher
    if (r.mkd.stage_epochs.size() != 2) fail("mkd.target pixels (MAE) trains one stage: mkd.stage_epochs [0, E]");
    if (!r.mkd.teacher_init.empty()) fail("mkd.target pixels takes no mkd.teacher.init");
    if (loss != "auto") fail("mkd.target pixels has its own loss (MAE's): leave mkd.loss auto");
  }
  if (y.betas.size() != 2) fail("optim.betas must be [beta1, beta2]");
  if (y.finetune_betas.size() != 2) fail("finetune.betas must be [beta1, beta2]");
  r.finetune.adamw.beta1 = y.finetune_betas[0];
  r.finetune.adamw.beta2 = y.finetune_betas[1];
  try {
    r.finetune.validate();
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  r.optim.adamw.beta1 = y.betas[0];
  r.optim.adamw.beta2 = y.betas[1];
  if (r.optim.batch_size <= 0 || r.optim.accum_iter <= 0)
    fail("optim.batch_size and optim.accum_iter must be positive");
  if (y.seed < 0) fail("train.seed must be >= 0");
  r.train.seed = static_cast<uint64_t>(y.seed);
  r.eval.seed = r.train.seed;
  const auto& p = r.runtime.precision;
  if (p != "auto" && p != "bf16" && p != "fp16" && p != "fp32") {
    fail("train.precision must be auto, bf16, fp16 or fp32, got '" + p + "'");
  }
  const auto& ls = r.eval.linprobe_schedule;
  if (ls != "cosine" && ls != "constant") fail("eval.linprobe_schedule must be cosine or constant, got '" + ls + "'");
  const auto& lp = r.eval.linprobe_protocol;
  if (lp != "features" && lp != "mae") fail("eval.linprobe_protocol must be features or mae, got '" + lp + "'");
  try {
    r.eval.mae.validate();
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  const auto& d = r.runtime.device;
  if (d != "auto" && d != "cpu" && d.rfind("cuda", 0) != 0) {
    fail("train.device must be auto, cpu, cuda or cuda:N, got '" + d + "'");
  }
}

}  // namespace

std::string Recipe::to_yaml() const {
  YAML::Emitter out;
  out << tree;
  return std::string(out.c_str()) + "\n";
}

YAML::Node default_tree() {
  Recipe r;
  YamlOnly y;
  recipe_defaults(r, y);
  YAML::Node tree(YAML::NodeType::Map);
  schema(r, y, [&](const std::string& key, const auto& value) { set_key(tree, key, value); });
  return tree;
}

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

Recipe build_config(const YAML::Node& tree, const std::string& origin) {
  Recipe r;
  YamlOnly y;
  schema(r, y,
         [&](const std::string& key, auto& field) { field = get<std::decay_t<decltype(field)>>(tree, key, origin); });
  finish(r, y, origin);
  r.tree = YAML::Clone(tree);
  return r;
}

namespace {
// Recipes and checkpoints written before the image-data formats name the IDX data with data.dataset
// (fashion_mnist) and data.root: read them as data.format idx and data.path.
void upgrade_legacy_keys(YAML::Node given, const std::string& origin) {
  if (!given.IsMap() || !given["data"] || !given["data"].IsMap()) return;
  YAML::Node data = given["data"];
  if (data["dataset"]) {
    if (data["dataset"].as<std::string>() != "fashion_mnist") {
      throw std::runtime_error(origin + ": data.dataset is now data.format (idx, imagefolder, folder or filelist)");
    }
    if (!data["format"]) data["format"] = "idx";
    data.remove("dataset");
  }
  if (data["root"]) {
    if (!data["path"]) data["path"] = data["root"].as<std::string>();
    data.remove("root");
  }
}

// The defaults with a YAML document (a recipe, or a checkpoint's config) merged on top.
YAML::Node layered_on_defaults(const std::string& yaml_text, const std::string& origin) {
  YAML::Node tree = default_tree();
  YAML::Node given;
  try {
    given = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": invalid YAML: " + e.what());
  }
  if (!given.IsNull()) {
    upgrade_legacy_keys(given, origin);
    merge(tree, given, "", origin);
  }
  return tree;
}
}  // namespace

Recipe load_config(const std::string& recipe_path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!recipe_path.empty()) {
    const auto bytes = io::read_file(recipe_path);
    text.assign(bytes.begin(), bytes.end());
  }
  const std::string origin = recipe_path.empty() ? "<defaults>" : recipe_path;
  YAML::Node tree = layered_on_defaults(text, origin);
  for (const auto& o : overrides) apply_override(tree, o);
  return build_config(tree, origin);
}

Recipe config_from_yaml(const std::string& yaml_text, const std::string& origin) {
  return build_config(layered_on_defaults(yaml_text, origin), origin);
}

}  // namespace dbot::recipe
