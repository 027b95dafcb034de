#include "dbot/train/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "dbot/io/files.h"
#include "dbot/io/torch_pickle.h"
#include "dbot/model/layouts.h"

namespace dbot::train {

c10::Dict<std::string, at::Tensor> tensor_dict(const TensorMap& m) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, v] : m) d.insert(k, v.to(at::kCPU));  // device-independent files
  return d;
}

TensorMap tensor_map(const c10::IValue& v, const std::string& path, const std::string& key) {
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

c10::impl::GenericDict plain_dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }

namespace {

// A plain list (typed lists pickle with JIT helpers that torch.load(weights_only=True) rejects).
c10::impl::GenericList plain_list(const std::vector<double>& values) {
  c10::impl::GenericList list(c10::AnyType::get());
  for (const double v : values) list.push_back(v);
  return list;
}

}  // namespace

c10::impl::GenericDict optimizer_dict(const AdamW& optimizer) {
  const AdamWState state = optimizer.state();
  auto opt = plain_dict();
  opt.insert("step", state.step);
  opt.insert("exp_avg", tensor_dict(state.exp_avg));
  opt.insert("exp_avg_sq", tensor_dict(state.exp_avg_sq));
  opt.insert("weight_decay", optimizer.config().weight_decay);
  opt.insert("betas", plain_list({optimizer.config().beta1, optimizer.config().beta2}));
  opt.insert("eps", optimizer.config().eps);
  return opt;
}

AdamWState optimizer_state(const c10::IValue& value, const std::string& path) {
  if (!value.isGenericDict()) throw std::runtime_error(path + ": checkpoint entry 'optimizer' is not a dict");
  const auto opt = value.toGenericDict();
  AdamWState s;
  s.step = opt.at("step").toInt();
  s.exp_avg = tensor_map(opt.at("exp_avg"), path, "optimizer.exp_avg");
  s.exp_avg_sq = tensor_map(opt.at("exp_avg_sq"), path, "optimizer.exp_avg_sq");
  return s;
}

c10::impl::GenericDict rng_dict(uint64_t seed) {
  auto rng = plain_dict();
  rng.insert("scheme", std::string("derived"));
  rng.insert("seed", static_cast<int64_t>(seed));
  return rng;
}

TensorMap defined_gradients(const NamedTensors& params) {
  TensorMap grads;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) grads[name] = p.grad();
  }
  return grads;
}

void restore_gradients(const NamedTensors& params, const TensorMap& grads, const std::string& path) {
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    const auto g = grads.find(name);
    if (g == grads.end()) continue;
    if (g->second.sizes() != p.sizes()) {
      throw std::runtime_error(path + ": grad_accum of '" + name + "' has shape " + c10::str(g->second.sizes()));
    }
    p.mutable_grad() = g->second.to(p.device()).clone();
  }
}

void save_checkpoint(const std::string& path, const mkd::Distiller& d, int64_t epoch, int64_t iteration,
                     const std::string& config_yaml, const TrainingState& state) {
  auto ckpt = plain_dict();
  ckpt.insert("format_version", kCheckpointFormatVersion);
  ckpt.insert("model", tensor_dict(state_dict(*d.student)));
  ckpt.insert("teacher", tensor_dict(state_dict(*d.teacher)));
  ckpt.insert("model_arch", model::vit_config_to_json(d.student_cfg));
  ckpt.insert("teacher_arch", model::vit_config_to_json(d.teacher->cfg));
  if (!d.teacher->input_affine().scale.empty()) {
    auto input = plain_dict();
    input.insert("scale", plain_list(d.teacher->input_affine().scale));
    input.insert("shift", plain_list(d.teacher->input_affine().shift));
    ckpt.insert("teacher_input", input);
  }
  if (state.optimizer != nullptr) ckpt.insert("optimizer", optimizer_dict(*state.optimizer));
  if (state.loss_scaler != nullptr && state.loss_scaler->enabled()) {
    auto ls = plain_dict();
    ls.insert("scale", state.loss_scaler->state().scale);
    ls.insert("growth_tracker", state.loss_scaler->state().growth_tracker);
    ckpt.insert("loss_scaler", ls);
  }
  if (state.partial_grads) ckpt.insert("grad_accum", tensor_dict(defined_gradients(d.named_student_parameters())));
  ckpt.insert("world_size", state.world_size);
  if (state.global_batch > 0) ckpt.insert("global_batch", state.global_batch);
  ckpt.insert("stage", d.stage());
  ckpt.insert("epoch", epoch);
  ckpt.insert("iteration", iteration);
  ckpt.insert("rng", rng_dict(d.seed));
  ckpt.insert("config", config_yaml);
  const std::vector<char> bytes = pickle_plain(c10::IValue(ckpt));
  io::write_atomic(path, bytes.data(), bytes.size());
}

namespace {

// The fields of an unpickled checkpoint; c10::Error for a field of the wrong type.
Checkpoint checkpoint_fields(const c10::IValue& root, const std::string& path) {
  if (!root.isGenericDict()) throw std::runtime_error(path + ": checkpoint is not a dict");
  auto dict = root.toGenericDict();
  auto need = [&](const std::string& key) {
    if (!dict.contains(key)) throw std::runtime_error(path + ": not a dbot checkpoint (no '" + key + "')");
    return dict.at(key);
  };
  Checkpoint c;
  c.format_version = need("format_version").toInt();
  if (c.format_version < 1 || c.format_version > kCheckpointFormatVersion) {
    throw std::runtime_error(path + ": checkpoint format_version " + std::to_string(c.format_version) +
                             " is not supported by this dbot (reads 1 to " + std::to_string(kCheckpointFormatVersion) +
                             ")");
  }
  c.model = tensor_map(need("model"), path, "model");
  c.teacher = tensor_map(need("teacher"), path, "teacher");
  c.stage = need("stage").toInt();
  c.epoch = need("epoch").toInt();
  c.iteration = need("iteration").toInt();
  c.config = need("config").toStringRef();
  if (dict.contains("world_size")) c.world_size = dict.at("world_size").toInt();
  if (dict.contains("global_batch")) c.global_batch = dict.at("global_batch").toInt();
  if (c.world_size < 1) throw std::runtime_error(path + ": world_size " + std::to_string(c.world_size) + " < 1");
  if (dict.contains("model_arch")) c.model_arch = dict.at("model_arch").toStringRef();
  if (dict.contains("teacher_arch")) c.teacher_arch = dict.at("teacher_arch").toStringRef();
  if (dict.contains("teacher_input")) {
    const auto input = dict.at("teacher_input").toGenericDict();
    for (const auto& v : input.at("scale").toListRef()) c.teacher_input.scale.push_back(v.toDouble());
    for (const auto& v : input.at("shift").toListRef()) c.teacher_input.shift.push_back(v.toDouble());
  }
  c.seed = static_cast<uint64_t>(need("rng").toGenericDict().at("seed").toInt());
  if (dict.contains("optimizer")) {
    c.has_optimizer = true;
    c.optimizer = optimizer_state(dict.at("optimizer"), path);
  }
  if (dict.contains("loss_scaler")) {
    auto ls = dict.at("loss_scaler").toGenericDict();
    c.has_loss_scaler = true;
    c.loss_scaler.scale = ls.at("scale").toDouble();
    c.loss_scaler.growth_tracker = ls.at("growth_tracker").toInt();
  }
  if (dict.contains("grad_accum")) c.grad_accum = tensor_map(dict.at("grad_accum"), path, "grad_accum");
  return c;
}

}  // namespace

bool is_checkpoint(const c10::IValue& root) {
  return root.isGenericDict() && root.toGenericDict().contains("format_version");
}

Checkpoint checkpoint_from_value(const c10::IValue& root, const std::string& path) {
  try {
    return checkpoint_fields(root, path);
  } catch (const c10::Error& e) {  // a field of the wrong type
    const std::string what = e.what_without_backtrace();
    throw std::runtime_error(path + ": malformed dbot checkpoint: " + what.substr(0, what.find('\n')));
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  c10::IValue root;
  try {
    root = io::read_torch_save(path);
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    if (what.rfind(path + ": ", 0) == 0) what = what.substr(path.size() + 2);
    throw std::runtime_error(path +
                             ": not a readable checkpoint (truncated or not written by torch.save/dbot): " + what);
  }
  return checkpoint_from_value(root, path);
}

void restore(mkd::Distiller& d, AdamW* optimizer, LossScaler* loss_scaler, const Checkpoint& c,
             const std::string& path) {
  if (c.seed != d.seed) {
    throw std::runtime_error(path + ": was written with seed " + std::to_string(c.seed) + ", this run has seed " +
                             std::to_string(d.seed));
  }
  model::VitConfig teacher_cfg = d.student_cfg;  // format 1 and 2: the student's shape, the depth it holds
  teacher_cfg.depth = model::count_blocks(c.teacher);
  if (!c.teacher_arch.empty()) teacher_cfg = model::vit_config_from_json(c.teacher_arch, path + " (teacher_arch)");
  d.load(c.stage, c.model, c.teacher, teacher_cfg, c.teacher_input, path);
  if (optimizer == nullptr) return;
  if (!c.has_optimizer) throw std::runtime_error(path + ": checkpoint has no optimizer state to resume from");
  optimizer->fit_state_to_params();  // the loaded decoder_predp may have another shape
  optimizer->load_state(c.optimizer, path);
  if (loss_scaler != nullptr && c.has_loss_scaler) loss_scaler->load_state(c.loss_scaler);
  restore_gradients(d.named_student_parameters(), c.grad_accum, path);
}

}  // namespace dbot::train
