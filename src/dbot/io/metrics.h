// metrics.jsonl: one JSON object per line (per log step and per epoch), appended and flushed line by line
// so that a killed run keeps every line it printed. Resumed runs append to the same file.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace dbot::io {

class JsonlWriter {
 public:
  explicit JsonlWriter(const std::string& path);
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace dbot::io
