// The dbot command's pieces: each subcommand is an add_<command> (its flags, on CLI11) and a run_<command>
// (builds a Recipe and a Runtime, calls the library). dbot.cpp holds main, pretrain and the benchmarks;
// weights_commands.cpp eval, extract, analyze and export; finetune_command.cpp
// finetune, which read weight files.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "dbot/core/runtime.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/run_folder.h"

namespace dbot::cli {

using recipe::Recipe;

// Flags that mirror recipe keys (train.device, train.precision, train.threads, train.seed).
struct RuntimeFlags {
  std::string device, precision;  // empty = from the recipe
  int64_t threads = -1;           // -1 = from the recipe
  int64_t seed = -1;              // -1 = from the recipe
};

void add_runtime_flags(CLI::App* cmd, RuntimeFlags& f);

// Applies the flags to the recipe (so config.yaml records them) and resolves the Runtime for this process's
// place in a data-parallel job.
core::Runtime apply_runtime(Recipe& r, const RuntimeFlags& f, const core::Placement& placement = {});

// The flags of the commands that own a run folder (pretrain, finetune).
struct RunFlags {
  std::string output;
  bool resume = false, overwrite = false, accept_recipe_change = false;
  int64_t stop_after = -1;
};
void add_run_flags(CLI::App* cmd, RunFlags& f, const std::string& output_help);
// The run folder request of the flags for the resolved recipe r.
train::RunRequest run_request(const RunFlags& f, const Recipe& r);

// A subcommand: its CLI11 node (parsed() once chosen) and how to run it.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command add_eval(CLI::App& app);
Command add_extract(CLI::App& app);
Command add_analyze(CLI::App& app);
Command add_export(CLI::App& app);
Command add_finetune(CLI::App& app);

// A run folder's recorded config.yaml resolved against today's defaults (RunFolder::Options::resolve_recorded).
std::string resolve_recorded_config(const std::string& yaml, const std::string& path);

}  // namespace dbot::cli
