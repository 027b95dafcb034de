#include "dbot/finetune/finetune_checkpoint.h"

#include <stdexcept>

#include "dbot/io/files.h"
#include "dbot/io/torch_pickle.h"
#include "dbot/model/layouts.h"
#include "dbot/train/checkpoint.h"

namespace dbot::finetune {

constexpr int64_t kFinetuneFormatVersion = 1;

train::NamedTensors named_parameters(const ClassifierImpl& c) {
  train::NamedTensors out;
  for (const auto& item : c.named_parameters(true)) out.emplace_back(item.key(), item.value());
  return out;
}

void save_finetune_checkpoint(const std::string& path, Classifier& c, const train::AdamW& optimizer, bool partial_grads,
                              int64_t epoch, int64_t iteration, double best_acc1, double acc1, uint64_t seed,
                              const std::string& config_yaml) {
  auto ckpt = train::plain_dict();
  ckpt.insert("format_version", kFinetuneFormatVersion);
  ckpt.insert("kind", std::string("finetune"));
  ckpt.insert("model", train::tensor_dict(model::state_dict(*c)));
  ckpt.insert("model_arch", model::vit_config_to_json(c->cfg));
  ckpt.insert("num_classes", c->num_classes);
  ckpt.insert("optimizer", train::optimizer_dict(optimizer));
  if (partial_grads) ckpt.insert("grad_accum", train::tensor_dict(train::defined_gradients(named_parameters(*c))));
  ckpt.insert("epoch", epoch);
  ckpt.insert("iteration", iteration);
  ckpt.insert("best_acc1", best_acc1);
  ckpt.insert("acc1", acc1);
  ckpt.insert("rng", train::rng_dict(seed));
  ckpt.insert("config", config_yaml);
  const auto bytes = train::pickle_plain(c10::IValue(ckpt));
  io::write_atomic(path, bytes.data(), bytes.size());
}

FinetuneCheckpoint load_finetune_checkpoint(const std::string& path) {
  const c10::IValue root = io::read_torch_save(path);
  if (!root.isGenericDict()) throw std::runtime_error(path + ": not a dbot fine-tuning checkpoint (not a dict)");
  const auto dict = root.toGenericDict();
  if (!dict.contains("kind") || !dict.at("kind").isString() || dict.at("kind").toStringRef() != "finetune") {
    throw std::runtime_error(path + ": not a dbot fine-tuning checkpoint (no kind 'finetune')");
  }
  auto need = [&](const std::string& key) {
    if (!dict.contains(key)) throw std::runtime_error(path + ": fine-tuning checkpoint lacks '" + key + "'");
    return dict.at(key);
  };
  try {
    const auto version = need("format_version").toInt();
    if (version != kFinetuneFormatVersion) {
      throw std::runtime_error(path + ": fine-tuning checkpoint format_version " + std::to_string(version) +
                               " is not supported (reads " + std::to_string(kFinetuneFormatVersion) + ")");
    }
    FinetuneCheckpoint c;
    c.model = train::tensor_map(need("model"), path, "model");
    c.optimizer = train::optimizer_state(need("optimizer"), path);
    if (dict.contains("grad_accum")) c.grad_accum = train::tensor_map(dict.at("grad_accum"), path, "grad_accum");
    c.model_arch = need("model_arch").toStringRef();
    c.config = need("config").toStringRef();
    c.num_classes = need("num_classes").toInt();
    c.epoch = need("epoch").toInt();
    c.iteration = need("iteration").toInt();
    c.best_acc1 = need("best_acc1").toDouble();
    c.acc1 = need("acc1").toDouble();
    c.seed = static_cast<uint64_t>(need("rng").toGenericDict().at("seed").toInt());
    return c;
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    throw std::runtime_error(path + ": malformed fine-tuning checkpoint: " + what.substr(0, what.find('\n')));
  }
}

}  // namespace dbot::finetune
