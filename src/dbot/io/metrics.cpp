#include "dbot/io/metrics.h"

#include <chrono>
#include <filesystem>
#include <stdexcept>

namespace dbot::io {

namespace {

// A run killed while appending leaves a torn last line: cut the file back to its last complete line, so that
// the lines appended next stay one JSON object each.
void drop_torn_line(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size == 0) return;
  std::ifstream in(path, std::ios::binary);
  uintmax_t keep = size;
  for (char c = 0; keep > 0; --keep) {
    in.seekg(static_cast<std::streamoff>(keep - 1));
    if (!in.get(c)) return;
    if (c == '\n') break;
  }
  if (keep == size) return;
  in.close();
  std::filesystem::resize_file(path, keep, ec);
  if (ec) throw std::runtime_error("cannot repair '" + path + "' (a torn last line): " + ec.message());
}

}  // namespace

JsonlWriter::JsonlWriter(const std::string& path, const std::string& tensorboard_dir)
    : path_((drop_torn_line(path), path)), out_(path, std::ios::app) {
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
