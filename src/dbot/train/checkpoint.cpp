#include "dbot/train/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>

#include <set>
#include <stdexcept>

#include "dbot/io/files.h"

namespace dbot::train {

namespace {

c10::Dict<std::string, at::Tensor> to_dict(const TensorMap& m) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, v] : m) d.insert(k, v);
  return d;
}

TensorMap to_map(const c10::IValue& v, const std::string& path, const std::string& key) {
  if (!v.isGenericDict()) throw std::runtime_error(path + ": checkpoint entry '" + key + "' is not a dict");
  TensorMap out;
  for (const auto& item : v.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor()) {
      throw std::runtime_error(path + ": checkpoint entry '" + key + "' must map names to tensors");
    }
    out[item.key().toStringRef()] = item.value().toTensor();
  }
  return out;
}

}  // namespace

std::vector<char> pickle_plain(const c10::IValue& value) {
  // As torch::pickle_save, but without the type tags LibTorch adds to dicts and lists
  // (torch.jit._pickle.restore_type_tag), which torch.load(weights_only=True) rejects.
  std::vector<char> pickle_data;
  torch::jit::Pickler pickler(
      [&](const char* buf, size_t size) { pickle_data.insert(pickle_data.end(), buf, buf + size); }, nullptr, nullptr,
      nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  std::vector<char> container;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* bytes, size_t len) {
    const char* b = static_cast<const char*>(bytes);
    container.insert(container.end(), b, b + len);
    return len;
  });
  torch::jit::writeArchiveAndTensors("data", pickle_data.data(), pickle_data.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  return container;
}

void save_checkpoint(const std::string& path, const mkd::Distiller& d, const AdamW* optimizer, int64_t epoch,
                     int64_t iteration, const std::string& config_yaml) {
  c10::impl::GenericDict ckpt(c10::StringType::get(), c10::AnyType::get());
  ckpt.insert("format_version", kCheckpointFormatVersion);
  TensorMap model = state_dict(*d.student);
  for (auto& [k, v] : state_dict(*d.decoder)) model[k] = v;
  ckpt.insert("model", to_dict(model));
  ckpt.insert("teacher", to_dict(state_dict(*d.teacher)));
  if (optimizer != nullptr) {
    TensorMap m, v;
    for (size_t i = 0; i < optimizer->params().size(); ++i) {
      m[optimizer->params()[i].first] = optimizer->exp_avg()[i];
      v[optimizer->params()[i].first] = optimizer->exp_avg_sq()[i];
    }
    c10::impl::GenericDict opt(c10::StringType::get(), c10::AnyType::get());
    opt.insert("step", optimizer->step_count());
    opt.insert("exp_avg", to_dict(m));
    opt.insert("exp_avg_sq", to_dict(v));
    opt.insert("weight_decay", optimizer->config().weight_decay);
    c10::impl::GenericList betas(c10::AnyType::get());  // a plain list (typed lists pickle with JIT helpers)
    betas.push_back(optimizer->config().beta1);
    betas.push_back(optimizer->config().beta2);
    opt.insert("betas", betas);
    opt.insert("eps", optimizer->config().eps);
    ckpt.insert("optimizer", opt);
  }
  ckpt.insert("stage", d.stage());
  ckpt.insert("epoch", epoch);
  ckpt.insert("iteration", iteration);
  c10::impl::GenericDict rng(c10::StringType::get(), c10::AnyType::get());
  rng.insert("scheme", std::string("derived"));
  rng.insert("seed", static_cast<int64_t>(d.seed));
  ckpt.insert("rng", rng);
  ckpt.insert("config", config_yaml);
  const std::vector<char> bytes = pickle_plain(c10::IValue(ckpt));
  io::write_atomic(path, bytes.data(), bytes.size());
}

Checkpoint load_checkpoint(const std::string& path) {
  const std::vector<char> bytes = io::read_file(path);
  c10::IValue root;
  try {
    root = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw std::runtime_error(path + ": not a readable checkpoint (truncated or not written by torch.save/dbot): " +
                             what.substr(0, what.find('\n')));
  }
  if (!root.isGenericDict()) throw std::runtime_error(path + ": checkpoint is not a dict");
  auto dict = root.toGenericDict();
  auto need = [&](const std::string& key) {
    if (!dict.contains(key)) throw std::runtime_error(path + ": not a dbot checkpoint (no '" + key + "')");
    return dict.at(key);
  };
  Checkpoint c;
  c.format_version = need("format_version").toInt();
  if (c.format_version != kCheckpointFormatVersion) {
    throw std::runtime_error(path + ": checkpoint format_version " + std::to_string(c.format_version) +
                             " is not supported by this dbot (expects " + std::to_string(kCheckpointFormatVersion) +
                             ")");
  }
  c.model = to_map(need("model"), path, "model");
  c.teacher = to_map(need("teacher"), path, "teacher");
  c.stage = need("stage").toInt();
  c.epoch = need("epoch").toInt();
  c.iteration = need("iteration").toInt();
  c.config = need("config").toStringRef();
  c.seed = static_cast<uint64_t>(need("rng").toGenericDict().at("seed").toInt());
  if (dict.contains("optimizer")) {
    auto opt = dict.at("optimizer").toGenericDict();
    c.has_optimizer = true;
    c.optimizer_step = opt.at("step").toInt();
    c.exp_avg = to_map(opt.at("exp_avg"), path, "optimizer.exp_avg");
    c.exp_avg_sq = to_map(opt.at("exp_avg_sq"), path, "optimizer.exp_avg_sq");
  }
  return c;
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

void restore(mkd::Distiller& d, AdamW* optimizer, const Checkpoint& c, const std::string& path) {
  d.prepare_resume(c.stage, count_blocks(c.teacher));
  load_state_dict(*d.student, c.model, path + " (model)");
  load_state_dict(*d.decoder, c.model, path + " (model, decoder)");
  load_state_dict(*d.teacher, c.teacher, path + " (teacher)");
  if (optimizer == nullptr) return;
  if (!c.has_optimizer) throw std::runtime_error(path + ": checkpoint has no optimizer state to resume from");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < optimizer->params().size(); ++i) {
    const auto& name = optimizer->params()[i].first;
    auto m = c.exp_avg.find(name), v = c.exp_avg_sq.find(name);
    if (m == c.exp_avg.end() || v == c.exp_avg_sq.end()) {
      throw std::runtime_error(path + ": optimizer state lacks '" + name + "'");
    }
    optimizer->exp_avg()[i].copy_(m->second);
    optimizer->exp_avg_sq()[i].copy_(v->second);
  }
  optimizer->set_step_count(c.optimizer_step);
}

}  // namespace dbot::train
