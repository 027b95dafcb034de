#include "dbot/train/run_folder.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <stdexcept>

#include "dbot/io/files.h"

namespace dbot::train {

namespace fs = std::filesystem;

namespace {

// Recipe keys a continued run may change: where and how it computes, where the data lies, what it logs
// and evaluates, and how the global batch is split (optim.batch_size, optim.accum_iter: the Trainer
// refuses another global batch, batch x accum x processes, itself). Any other key changes the run's result.
bool may_change(const std::string& key, const std::vector<std::string>& unused) {
  for (const auto& prefix : unused) {
    if (key.rfind(prefix, 0) == 0) return true;
  }
  for (const char* prefix :
       {"train.device", "train.precision", "train.threads", "train.log_every", "train.checkpoint_every",
        "optim.batch_size", "optim.accum_iter", "data.workers", "data.path", "data.eval_path", "data.cache_dir",
        "data.skip_bad", "data.test_limit", "eval."}) {
    if (key.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

void flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node)
      flatten(kv.second, prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar(), out);
    return;
  }
  YAML::Emitter e;
  e << YAML::Flow << node;
  out[prefix] = e.c_str();
}

// "key: A there, B here" for the first key that differs (and how many more), or "".
std::string recipe_difference(const std::string& old_yaml, const std::string& new_yaml,
                              const std::vector<std::string>& unused) {
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(old_yaml), "", a);
  flatten(YAML::Load(new_yaml), "", b);
  for (const auto& [k, v] : b) a.emplace(k, "(none)");
  std::string first;
  int more = 0;
  for (const auto& [k, v] : a) {
    const auto it = b.find(k);
    const std::string now = it == b.end() ? "(none)" : it->second;
    if (v == now || may_change(k, unused)) continue;
    if (first.empty()) {
      first = k + ": " + v + " there, " + now + " here";
    } else {
      ++more;
    }
  }
  if (!first.empty() && more > 0) first += " (and " + std::to_string(more) + " more)";
  return first;
}

}  // namespace

RunFolder::RunFolder(std::string dir, const Options& opts) : dir_(std::move(dir)) {
  const bool resume = opts.resume, overwrite = opts.overwrite;
  if (overwrite && resume) throw std::invalid_argument("--overwrite and --resume exclude each other");
  if (!opts.writer) return;
  writer_ = true;
  fs::create_directories(dir_);
  io::remove_stale_temporaries(dir_);  // a killed run's half-written checkpoint or config
  if (overwrite) remove_run_files();
  const bool have_last = has_last_checkpoint();
  if (have_last && !resume) {
    throw std::runtime_error(last_checkpoint() +
                             " exists: pass --resume to continue that run, --overwrite to start it again, or choose "
                             "another --output");
  }
  if (resume && !have_last && fs::exists(stage_checkpoint(1))) {
    throw std::runtime_error(dir_ + ": has stage files but no checkpoint-last.pt to resume from");
  }
  const std::string recorded = dir_ + "/config.yaml";
  if (opts.config_yaml.empty() || !fs::exists(recorded) || (resume && opts.accept_recipe_change)) return;
  std::string diff;
  try {
    const auto bytes = io::read_file(recorded);
    std::string old_yaml(bytes.begin(), bytes.end());
    if (opts.resolve_recorded) old_yaml = opts.resolve_recorded(old_yaml, recorded);
    diff = recipe_difference(old_yaml, opts.config_yaml, opts.unused_keys);
  } catch (const std::exception& e) {  // YAML errors, or the recipe layer refusing an old file
    throw std::runtime_error(recorded + ": unreadable (" + e.what() + "): pass --overwrite to start the run again");
  }
  if (!diff.empty()) {
    throw std::runtime_error(dir_ + " holds a run of another recipe (" + diff + "): " +
                             (resume ? "resume it with its own recipe (its config.yaml), or pass --accept-recipe-change"
                                     : "pass --overwrite to replace it") +
                             ", or choose another --output");
  }
}

namespace {
RunFolder::Options options_of(const RunRequest& r, std::vector<std::string> unused_keys) {
  RunFolder::Options o;
  o.resume = r.resume;
  o.overwrite = r.overwrite;
  o.accept_recipe_change = r.accept_recipe_change;
  o.config_yaml = r.config_yaml;
  o.resolve_recorded = r.resolve_recorded_config;
  o.unused_keys = std::move(unused_keys);
  return o;
}
}  // namespace

RunFolder::RunFolder(const RunRequest& r, std::vector<std::string> unused_keys)
    : RunFolder(r.run_dir, options_of(r, std::move(unused_keys))) {}

void RunFolder::remove_run_files() const {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const bool stage_file = name.rfind("stage-", 0) == 0 && entry.path().extension() == ".pt";
    if (stage_file || name == "checkpoint-last.pt" || name == "config.yaml" || name == "metrics.jsonl" ||
        name == "results.md" || name == "results.json" || name == "tensorboard" || name == "checkpoint-best.pt" ||
        name == "model.safetensors") {
      fs::remove_all(entry.path(), ec);
      if (ec) throw std::runtime_error("cannot remove '" + entry.path().string() + "': " + ec.message());
    }
  }
}

void RunFolder::check_free_space(uint64_t bytes, const std::string& what) const {
  std::error_code ec;
  const auto space = fs::space(dir_, ec);
  if (ec || space.available >= bytes) return;
  auto mb = [](uint64_t b) { return std::to_string((b + (1u << 20) - 1) >> 20) + " MB"; };
  throw std::runtime_error(dir_ + ": " + mb(space.available) + " free on its disk, the run needs about " + mb(bytes) +
                           " (" + what + "): free some space or choose another --output");
}

bool RunFolder::has_last_checkpoint() const { return fs::exists(last_checkpoint()); }

void RunFolder::write_config(const std::string& yaml) const {
  if (!writer_) throw std::logic_error("RunFolder::write_config on a view (data-parallel rank > 0)");
  io::write_atomic(dir_ + "/config.yaml", yaml);
}

io::JsonlWriter& RunFolder::metrics() {
  if (!writer_) throw std::logic_error("RunFolder::metrics on a view (data-parallel rank > 0)");
  if (!metrics_) metrics_ = std::make_unique<io::JsonlWriter>(dir_ + "/metrics.jsonl", dir_ + "/tensorboard");
  return *metrics_;
}

}  // namespace dbot::train
