#include "dbot/train/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "dbot/io/files.h"

namespace dbot::train {

namespace {

c10::Dict<std::string, at::Tensor> to_dict(const TensorMap& m) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, v] : m) d.insert(k, v.to(at::kCPU));  // device-independent files
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

namespace {
c10::impl::GenericDict make_dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }

c10::impl::GenericDict optimizer_dict(const AdamW& optimizer) {
  const AdamWState state = optimizer.state();
  auto opt = make_dict();
  opt.insert("step", state.step);
  opt.insert("exp_avg", to_dict(state.exp_avg));
  opt.insert("exp_avg_sq", to_dict(state.exp_avg_sq));
  opt.insert("weight_decay", optimizer.config().weight_decay);
  c10::impl::GenericList betas(c10::AnyType::get());  // a plain list (typed lists pickle with JIT helpers)
  betas.push_back(optimizer.config().beta1);
  betas.push_back(optimizer.config().beta2);
  opt.insert("betas", betas);
  opt.insert("eps", optimizer.config().eps);
  return opt;
}
}  // namespace

void save_checkpoint(const std::string& path, const mkd::Distiller& d, int64_t epoch, int64_t iteration,
                     const std::string& config_yaml, const TrainingState& state) {
  auto ckpt = make_dict();
  ckpt.insert("format_version", kCheckpointFormatVersion);
  ckpt.insert("model", to_dict(state_dict(*d.student)));
  ckpt.insert("teacher", to_dict(state_dict(*d.teacher)));
  if (state.optimizer != nullptr) ckpt.insert("optimizer", optimizer_dict(*state.optimizer));
  if (state.loss_scaler != nullptr && state.loss_scaler->enabled()) {
    auto ls = make_dict();
    ls.insert("scale", state.loss_scaler->state().scale);
    ls.insert("growth_tracker", state.loss_scaler->state().growth_tracker);
    ckpt.insert("loss_scaler", ls);
  }
  if (state.partial_grads) {
    TensorMap grads;
    for (const auto& [name, p] : d.named_student_parameters()) {
      if (p.grad().defined()) grads[name] = p.grad();
    }
    ckpt.insert("grad_accum", to_dict(grads));
  }
  ckpt.insert("stage", d.stage());
  ckpt.insert("epoch", epoch);
  ckpt.insert("iteration", iteration);
  auto rng = make_dict();
  rng.insert("scheme", std::string("derived"));
  rng.insert("seed", static_cast<int64_t>(d.seed));
  ckpt.insert("rng", rng);
  ckpt.insert("config", config_yaml);
  const std::vector<char> bytes = pickle_plain(c10::IValue(ckpt));
  io::write_atomic(path, bytes.data(), bytes.size());
}

namespace {

// The bytes for LibTorch's zip reader, bounds-checked: LibTorch's own in-memory adapters (behind
// torch::pickle_load) copy whatever range the zip directory asks for, so a file whose directory points past
// its end made them read out of bounds (found by fuzz/fuzz_checkpoint.cpp under ASan). A short read here
// makes the zip reader fail with an error instead.
class BoundedReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReadAdapter(const std::vector<char>& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    const size_t count = std::min<uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, count);
    return count;
  }

 private:
  const std::vector<char>& bytes_;
};

// Walks a pickle's opcodes (the table of Python's pickletools) and checks every length an opcode declares
// against what is left of the pickle. LibTorch's Unpickler allocates a declared length before reading it,
// so an 80 KB file claiming a 4 GB string made it zero-fill 4 GB (found by fuzz/fuzz_checkpoint.cpp).
// Returns "" when every length fits, else what is wrong.
std::string check_pickle_lengths(const uint8_t* p, size_t n) {
  size_t i = 0;
  auto little_endian = [&](size_t k) {
    uint64_t v = 0;
    for (size_t b = 0; b < k; ++b) v |= static_cast<uint64_t>(p[i + b]) << (8 * b);
    return v;
  };
  while (i < n) {
    const size_t at = i;
    const uint8_t op = p[i++];
    size_t fixed = 0, length_bytes = 0, lines = 0;
    // clang-format off
    switch (op) {
      case '.': return "";                                                           // STOP
      case 'K': case 'h': case 'q': case 0x80: case 0x82: fixed = 1; break;         // BININT1 BINGET BINPUT PROTO EXT1
      case 'M': case 0x83: fixed = 2; break;                                        // BININT2 EXT2
      case 'J': case 'j': case 'r': case 0x84: fixed = 4; break;                    // BININT LONG_BINGET LONG_BINPUT EXT4
      case 'G': case 0x95: fixed = 8; break;                                        // BINFLOAT FRAME
      case 'C': case 'U': case 0x8c: case 0x8a: length_bytes = 1; break;            // SHORT_BIN{BYTES,STRING,UNICODE} LONG1
      case 'B': case 'T': case 'X': case 0x8b: length_bytes = 4; break;             // BINBYTES BINSTRING BINUNICODE LONG4
      case 0x8d: case 0x8e: case 0x96: length_bytes = 8; break;                     // BINUNICODE8 BINBYTES8 BYTEARRAY8
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': case 'p': lines = 1; break;
      case 'c': case 'i': lines = 2; break;                                         // GLOBAL INST
      default: break;                                                               // no argument
    }
    // clang-format on
    const size_t arg = fixed + length_bytes;
    if (arg > n - i) return "opcode at byte " + std::to_string(at) + " runs past the end of the pickle";
    if (length_bytes > 0) {
      const uint64_t len = little_endian(length_bytes);
      i += length_bytes;
      if (len > n - i) {
        return "opcode at byte " + std::to_string(at) + " declares " + std::to_string(len) + " bytes, " +
               std::to_string(n - i) + " remain";
      }
      i += len;
    }
    i += fixed;
    for (size_t l = 0; l < lines; ++l) {
      while (i < n && p[i] != '\n') ++i;
      if (i++ >= n) return "opcode at byte " + std::to_string(at) + " runs past the end of the pickle";
    }
  }
  return "";  // no STOP: the Unpickler reports it
}

// torch::pickle_load's zip path (torch.save's format: the pickle in "data.pkl", tensors beside it) through
// the bounded adapter, with the pickle's declared lengths checked first.
c10::IValue unpickle(const std::vector<char>& bytes) {
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BoundedReadAdapter>(bytes));
  if (reader.hasRecord("data.pkl")) {
    const auto [data, size] = reader.getRecord("data.pkl");
    const auto problem = check_pickle_lengths(static_cast<const uint8_t*>(data.get()), size);
    if (!problem.empty()) throw std::runtime_error("data.pkl: " + problem);
  }
  return torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"", /*type_resolver=*/{},
                                           /*obj_loader=*/{}, /*device=*/{}, reader);
}

// The fields of an unpickled checkpoint; c10::Error for a field of the wrong type.
Checkpoint checkpoint_from_dict(const c10::IValue& root, const std::string& path) {
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
    c.optimizer.step = opt.at("step").toInt();
    c.optimizer.exp_avg = to_map(opt.at("exp_avg"), path, "optimizer.exp_avg");
    c.optimizer.exp_avg_sq = to_map(opt.at("exp_avg_sq"), path, "optimizer.exp_avg_sq");
  }
  if (dict.contains("loss_scaler")) {
    auto ls = dict.at("loss_scaler").toGenericDict();
    c.has_loss_scaler = true;
    c.loss_scaler.scale = ls.at("scale").toDouble();
    c.loss_scaler.growth_tracker = ls.at("growth_tracker").toInt();
  }
  if (dict.contains("grad_accum")) c.grad_accum = to_map(dict.at("grad_accum"), path, "grad_accum");
  return c;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path) {
  const std::vector<char> bytes = io::read_file(path);
  c10::IValue root;
  try {
    root = unpickle(bytes);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw std::runtime_error(path + ": not a readable checkpoint (truncated or not written by torch.save/dbot): " +
                             what.substr(0, what.find('\n')));
  }
  try {
    return checkpoint_from_dict(root, path);
  } catch (const c10::Error& e) {  // a field of the wrong type (the unpickler accepted the bytes)
    const std::string what = e.what_without_backtrace();
    throw std::runtime_error(path + ": malformed dbot checkpoint: " + what.substr(0, what.find('\n')));
  }
}

void restore(mkd::Distiller& d, AdamW* optimizer, LossScaler* loss_scaler, const Checkpoint& c,
             const std::string& path) {
  if (c.seed != d.seed) {
    throw std::runtime_error(path + ": was written with seed " + std::to_string(c.seed) + ", this run has seed " +
                             std::to_string(d.seed));
  }
  d.load(c.stage, c.model, c.teacher, path);
  if (optimizer == nullptr) return;
  if (!c.has_optimizer) throw std::runtime_error(path + ": checkpoint has no optimizer state to resume from");
  optimizer->load_state(c.optimizer, path);
  if (loss_scaler != nullptr && c.has_loss_scaler) loss_scaler->load_state(c.loss_scaler);
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : d.named_student_parameters()) {
    const auto g = c.grad_accum.find(name);
    if (g == c.grad_accum.end()) continue;
    if (g->second.sizes() != p.sizes()) {
      throw std::runtime_error(path + ": grad_accum of '" + name + "' has shape " + c10::str(g->second.sizes()));
    }
    p.mutable_grad() = g->second.to(p.device()).clone();
  }
}

}  // namespace dbot::train
