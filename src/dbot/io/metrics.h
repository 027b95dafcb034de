// metrics.jsonl: one JSON object per line (per log step and per epoch), appended and flushed line by line
// so that a killed run keeps every line it printed. Resumed runs append to the same file, after cutting a
// torn last line (a kill inside a write) back to the last complete one. With a
// TensorBoard folder, every numeric field of a line is also a scalar there (io/tensorboard.h): tag
// "<type>/<field>" (step/loss, epoch/loss, ...), step = the line's global_iteration, else its epoch.
#pragma once

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "dbot/io/tensorboard.h"

namespace dbot::io {

class JsonlWriter {
 public:
  explicit JsonlWriter(const std::string& path, const std::string& tensorboard_dir = "");
  ~JsonlWriter();
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  std::ofstream out_;
  std::unique_ptr<EventWriter> events_;
};

}  // namespace dbot::io
