// RunFolder: owns a pretraining run's directory. Refuses to start a second run over an existing one unless
// resuming, and refuses to resume a folder that has stage files but no checkpoint-last.pt. Every file is
// written atomically (io::write_atomic); metrics.jsonl is appended line by line.
//   config.yaml  metrics.jsonl  tensorboard/  checkpoint-last.pt  stage-<k>.pt  results.{md,json}
#pragma once

#include <memory>
#include <string>

#include "dbot/io/metrics.h"

namespace dbot::train {

class RunFolder {
 public:
  RunFolder(std::string dir, bool resume);

  const std::string& dir() const { return dir_; }
  std::string last_checkpoint() const { return dir_ + "/checkpoint-last.pt"; }
  std::string stage_checkpoint(int64_t stage) const { return dir_ + "/stage-" + std::to_string(stage) + ".pt"; }
  bool has_last_checkpoint() const;

  void write_config(const std::string& yaml) const;
  io::JsonlWriter& metrics();  // opened (for appending) on first use

 private:
  std::string dir_;
  std::unique_ptr<io::JsonlWriter> metrics_;
};

}  // namespace dbot::train
