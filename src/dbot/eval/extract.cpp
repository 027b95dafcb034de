#include "dbot/eval/extract.h"

#include <cstring>
#include <stdexcept>

#include "dbot/io/safetensors.h"
#include "dbot/model/layouts.h"
#include "dbot/version.h"

namespace dbot::eval {

namespace {

const char* pool_name(Pool pool) { return pool == Pool::kCls ? "cls" : pool == Pool::kMean ? "mean" : "cls+mean"; }

// The names, each followed by '\n', as a U8 tensor; a name holding '\n' could not be split back: refused.
at::Tensor names_tensor(const data::ImageSource& source) {
  std::string all;
  for (int64_t i = 0; i < source.size(); ++i) {
    const auto name = source.name(i);
    if (name.find('\n') != std::string::npos) {
      throw std::runtime_error(source.describe() + ": image name '" + name + "' holds a newline");
    }
    all += name;
    all += '\n';
  }
  auto t = at::empty({static_cast<int64_t>(all.size())}, at::kByte);
  if (!all.empty()) std::memcpy(t.data_ptr(), all.data(), all.size());
  return t;
}

}  // namespace

ExtractResult extract_to_file(model::VisionTransformer& encoder, std::shared_ptr<const data::ImageSource> source,
                              const data::DataConfig& dc, int64_t batch_size, const core::Runtime& runtime, Pool pool,
                              const std::string& out, std::map<std::string, std::string> metadata) {
  std::map<std::string, at::Tensor> tensors;
  tensors["names"] = names_tensor(*source);
  ExtractResult r;
  r.labeled = source->num_classes() > 0;
  if (r.labeled) tensors["labels"] = source->labels();
  const auto features = extract_features(encoder, source, dc, batch_size, runtime, pool);  // [N, F]
  r.images = features.size(0);
  r.dim = features.size(1);
  tensors["features"] = features;
  metadata["format"] = "pt";
  metadata["dbot.version"] = kVersion;
  metadata["dbot.pool"] = pool_name(pool);
  metadata["dbot.model"] = model::vit_config_to_json(encoder->cfg);
  metadata["dbot.source"] = source->describe();
  metadata["dbot.count"] = std::to_string(r.images);
  io::write_safetensors(out, tensors, metadata);
  return r;
}

}  // namespace dbot::eval
