// RunFolder: owns a pretraining (or fine-tuning) run's directory. Refuses to start a second run over an existing one
// unless resuming (or overwriting: the run's files are deleted first), refuses to resume a folder that has stage files
// but no checkpoint-last.pt, and refuses a folder whose config.yaml is another recipe's (keys that only say
// where and how to compute, log or evaluate may change: train.device/precision/threads/log_every/
// checkpoint_every, optim.batch_size/accum_iter (the Trainer checks the global batch), data.workers/path/eval_path/
// cache_dir/skip_bad/test_limit, eval.*) unless told to accept it. Every
// file is written atomically (io::write_atomic); metrics.jsonl is appended line by line. Temporaries that a killed run
// left are removed when the folder is opened. In a data-parallel run only rank 0 opens it as the writer; the
// other ranks hold a view (paths, has_last_checkpoint) that creates, checks and writes nothing.
//   config.yaml  metrics.jsonl  tensorboard/  checkpoint-last.pt  stage-<k>.pt  results.{md,json}
//   (fine-tuning: checkpoint-best.pt  model.safetensors)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dbot/io/metrics.h"

namespace dbot::train {

// What a command asks of its run folder (pretraining's and fine-tuning's options share it).
struct RunRequest {
  std::string run_dir;
  std::string config_yaml;            // the resolved recipe: saved as config.yaml and in every checkpoint
  bool resume = false;                // continue from run_dir/checkpoint-last.pt
  bool overwrite = false;             // delete the run in run_dir first; excludes resume
  bool accept_recipe_change = false;  // resume although config_yaml differs from the folder's
  int64_t stop_after = -1;            // stop (with a checkpoint) once this many iterations are done
                                      // (so does a SIGINT/SIGTERM while a train::StopOnSignal is installed)
  bool quiet = false;                 // no progress lines
  // Resolves the folder's recorded config.yaml against today's defaults before comparing (Options::resolve_recorded).
  std::function<std::string(const std::string& yaml, const std::string& path)> resolve_recorded_config;
};

class RunFolder {
 public:
  struct Options {
    bool resume = false;
    bool overwrite = false;             // delete the run's files first; excludes resume
    bool accept_recipe_change = false;  // resume although the recipe differs (e.g. a lower lr after a divergence)
    std::string config_yaml;            // the run's resolved recipe ("" = not checked against config.yaml)
    bool writer = true;  // false: a view for the data-parallel ranks other than 0, which never touch the folder
    // Resolves a recorded config.yaml against today's defaults before comparing (the recipe layer's, so that a run
    // written before a key existed resumes); empty = compared as written. Gets (text, path).
    std::function<std::string(const std::string&, const std::string&)> resolve_recorded;
    std::vector<std::string> unused_keys;  // key prefixes this kind of run does not read (may differ freely)
  };
  RunFolder(std::string dir, const Options& opts);
  // The folder a request names, written by this process; unused_keys as Options::unused_keys.
  RunFolder(const RunRequest& request, std::vector<std::string> unused_keys);

  const std::string& dir() const { return dir_; }
  std::string last_checkpoint() const { return dir_ + "/checkpoint-last.pt"; }
  std::string stage_checkpoint(int64_t stage) const { return dir_ + "/stage-" + std::to_string(stage) + ".pt"; }
  bool has_last_checkpoint() const;
  // Throws naming the folder when its disk has less than `bytes` available; `what` says what needs them.
  void check_free_space(uint64_t bytes, const std::string& what) const;

  void write_config(const std::string& yaml) const;
  io::JsonlWriter& metrics();  // opened (for appending) on first use

 private:
  void remove_run_files() const;  // config, metrics, tensorboard/, checkpoints, results: nothing else

  std::string dir_;
  bool writer_ = false;
  std::unique_ptr<io::JsonlWriter> metrics_;
};

}  // namespace dbot::train
