#include "dbot/io/metrics.h"

#include <stdexcept>

namespace dbot::io {

JsonlWriter::JsonlWriter(const std::string& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) throw std::runtime_error("cannot open '" + path + "' for appending");
}

void JsonlWriter::write(const nlohmann::json& record) {
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) throw std::runtime_error("cannot write to '" + path_ + "' (disk full?)");
}

}  // namespace dbot::io
