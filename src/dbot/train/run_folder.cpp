#include "dbot/train/run_folder.h"

#include <filesystem>
#include <stdexcept>

#include "dbot/io/files.h"

namespace dbot::train {

namespace fs = std::filesystem;

RunFolder::RunFolder(std::string dir, bool resume) : dir_(std::move(dir)) {
  fs::create_directories(dir_);
  const bool have_last = has_last_checkpoint();
  if (have_last && !resume) {
    throw std::runtime_error(last_checkpoint() +
                             " exists: pass --resume to continue that run, or choose another --output");
  }
  if (resume && !have_last && fs::exists(stage_checkpoint(1))) {
    throw std::runtime_error(dir_ + ": has stage files but no checkpoint-last.pt to resume from");
  }
}

bool RunFolder::has_last_checkpoint() const { return fs::exists(last_checkpoint()); }

void RunFolder::write_config(const std::string& yaml) const { io::write_atomic(dir_ + "/config.yaml", yaml); }

io::JsonlWriter& RunFolder::metrics() {
  if (!metrics_) metrics_ = std::make_unique<io::JsonlWriter>(dir_ + "/metrics.jsonl", dir_ + "/tensorboard");
  return *metrics_;
}

}  // namespace dbot::train
