#include "dbot/io/metrics.h"

#include <chrono>
#include <stdexcept>

namespace dbot::io {

JsonlWriter::JsonlWriter(const std::string& path, const std::string& tensorboard_dir)
    : path_(path), out_(path, std::ios::app) {
  if (!out_) throw std::runtime_error("cannot open '" + path + "' for appending");
  if (!tensorboard_dir.empty()) events_ = std::make_unique<EventWriter>(tensorboard_dir);
}

JsonlWriter::~JsonlWriter() = default;

void JsonlWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write to '" + path_ + "' (disk full?)");
  if (!events_ || !record.is_object()) return;
  const std::string type = record.value("type", std::string("metrics"));
  const int64_t step = record.contains("global_iteration") ? record["global_iteration"].get<int64_t>()
                                                           : record.value("epoch", int64_t{0});
  const double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& [key, value] : record.items()) {
    if (!value.is_number() || key == "epoch" || key == "iteration" || key == "global_iteration") continue;
    events_->add_scalar(type + "/" + key, value.get<double>(), step, wall);
  }
}

}  // namespace dbot::io
