// Runs that never lose work: atomic writes that survive a full disk (RLIMIT_FSIZE makes write() fail as a
// full disk does) and leave no temporary, unique temporaries, stale temporaries of killed writers removed,
// a torn metrics line cut back, and SIGINT/SIGTERM stopping a run with a checkpoint from which it resumes
// to the weights of an uninterrupted run. (Real kill -9 at random moments: tests/kill_resume.sh.)
#include <sys/resource.h>
#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "dbot/io/files.h"
#include "dbot/io/metrics.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/interrupt.h"
#include "dbot/train/trainer.h"
#include "test_util.h"

using namespace dbot;
namespace fs = std::filesystem;

namespace {

train::RunFolder::Options folder_options(bool resume, bool overwrite, bool accept_recipe_change, std::string yaml) {
  train::RunFolder::Options o;
  o.resume = resume;
  o.overwrite = overwrite;
  o.accept_recipe_change = accept_recipe_change;
  o.config_yaml = std::move(yaml);
  return o;
}

std::string slurp(const std::string& path) {
  const auto bytes = io::read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

size_t count_files(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

TEST(Files, WriteAtomicOnAFullDiskKeepsTheOldFile) {
  test::TempDir dir;
  const std::string path = dir.str() + "/f.txt";
  io::write_atomic(path, "old");
  // In a child process (the limit and the signal disposition are per process): writes beyond 16 bytes fail
  // with EFBIG, as they would with ENOSPC on a full disk.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{16, 16};
    setrlimit(RLIMIT_FSIZE, &lim);
    try {
      io::write_atomic(path, std::string(1000, 'x'));
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      _exit(msg.find("cannot write '" + path + "': write") != std::string::npos ? 0 : 2);
    }
    _exit(1);  // no error: wrong
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no error, 2: the error does not name the file and the write";
  EXPECT_EQ(slurp(path), "old");
  EXPECT_EQ(count_files(dir.path), 1u);  // the temporary is gone
}

TEST(Files, TemporariesAreUniqueAndStaleOnesAreRemoved) {
  test::TempDir dir;
  const std::string path = dir.str() + "/checkpoint-last.pt";
  EXPECT_NE(io::temporary_name(path), io::temporary_name(path));
  EXPECT_EQ(io::temporary_name(path).rfind(path + ".tmp." + std::to_string(::getpid()) + ".", 0), 0u);
  // A dead writer's temporary (a pid that cannot exist: above the kernel's pid_max) goes; a live writer's
  // (ours) and files that only look alike stay.
  const std::string stale = path + ".tmp.99999999.0", live = io::temporary_name(path);
  for (const auto& f : {stale, live, dir.str() + "/notes.tmp.txt", dir.str() + "/x.tmp.12a.3"}) {
    std::ofstream(f) << "x";
  }
  io::remove_stale_temporaries(dir.str());
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_EQ(count_files(dir.path), 3u);
}

TEST(Files, MetricsCutATornLastLine) {
  test::TempDir dir;
  const std::string path = dir.str() + "/metrics.jsonl";
  std::ofstream(path) << "{\"a\":1}\n{\"b\":";  // killed inside the second line
  {
    io::JsonlWriter w(path);
    w.write({{"c", 3}});
  }
  EXPECT_EQ(slurp(path), "{\"a\":1}\n{\"c\":3}\n");
  std::ofstream(path, std::ios::trunc) << "{\"b\":";  // a torn first line: nothing kept
  io::JsonlWriter(path).write({{"d", 4}});
  EXPECT_EQ(slurp(path), "{\"d\":4}\n");
}

TEST(StopOnSignal, TheFirstSignalIsAStopRequest) {
  {
    train::StopOnSignal guard;
    EXPECT_EQ(train::stop_requested(), 0);
    std::raise(SIGTERM);  // handled: the process lives on
    EXPECT_EQ(train::stop_requested(), SIGTERM);
    EXPECT_STREQ(train::signal_name(SIGTERM), "SIGTERM");
    EXPECT_THROW(train::StopOnSignal(), std::logic_error);  // one at a time
  }
  train::request_stop(0);
  // The second signal ends the process at once (its default action): seen from a child.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    train::StopOnSignal guard;
    std::raise(SIGINT);
    std::raise(SIGINT);
    _exit(0);  // not reached
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT);
}

TEST(StopOnSignal, StoppedRunResumesToTheSameWeights) {
  at::set_num_threads(1);
  test::TempDir data, full, stopped;
  test::write_fake_fmnist(data.str(), 64, 20, 8);
  const auto cfg = recipe::load_config(
      "", {"model.name=vit_tiny_patch2_8", "model.embed_dim=16", "model.depth=2", "model.num_heads=2",
           "mkd.decoder_embed_dim=8", "mkd.decoder_depth=1", "mkd.decoder_num_heads=2", "mkd.stage_epochs=[0, 1, 2]",
           "data.path=" + data.str(), "optim.batch_size=16", "train.precision=fp32", "train.checkpoint_every=0"});
  core::Runtime rt;
  train::PretrainOptions o;
  o.config_yaml = cfg.to_yaml();
  o.quiet = true;
  o.run_dir = full.str();
  train::pretrain(cfg, rt, o);

  o.run_dir = stopped.str();
  o.stop_after = 3;
  train::pretrain(cfg, rt, o);  // mid-epoch, a checkpoint
  o.resume = true;
  o.stop_after = -1;
  {
    train::StopOnSignal guard;
    std::raise(SIGTERM);  // arrives before the next step: stop at once, with a checkpoint
    const auto s = train::pretrain(cfg, rt, o);
    EXPECT_EQ(s.stopped_by, SIGTERM);
    EXPECT_EQ(s.iterations, 0);
    EXPECT_FALSE(s.finished);
  }
  train::request_stop(0);
  const auto last = train::load_checkpoint(stopped.str() + "/checkpoint-last.pt");
  EXPECT_EQ(last.epoch * 4 + last.iteration, 3);
  EXPECT_TRUE(train::pretrain(cfg, rt, o).finished);
  const auto x = train::load_checkpoint(full.str() + "/stage-2.pt"),
             y = train::load_checkpoint(stopped.str() + "/stage-2.pt");
  for (const auto& [k, v] : x.model) EXPECT_TRUE(v.equal(y.model.at(k))) << k;
}

TEST(RunFolder, RefusesAnotherRecipesFolderUnlessOverwriting) {
  test::TempDir dir;
  const std::string a = "optim:\n  lr: 0.001\n  betas: [0.9, 0.95]\ntrain:\n  threads: 2\n";
  { train::RunFolder(dir.str(), folder_options(false, false, false, a)).write_config(a); }
  for (const char* f : {"/metrics.jsonl", "/stage-1.pt", "/checkpoint-last.pt", "/notes.txt"}) {
    std::ofstream(dir.str() + f) << "x";
  }
  fs::create_directories(dir.path / "tensorboard");
  // Resuming: only keys that say where and how to compute may change.
  EXPECT_NO_THROW(train::RunFolder(
      dir.str(),
      folder_options(true, false, false, "optim:\n  lr: 0.001\n  betas: [0.9, 0.95]\ntrain:\n  threads: 8\n")));
  const std::string b = "optim:\n  lr: 0.002\n  betas: [0.9, 0.999]\ntrain:\n  threads: 2\n";
  const auto e = test::error_of([&] { train::RunFolder(dir.str(), folder_options(true, false, false, b)); });
  EXPECT_NE(e.find("holds a run of another recipe (optim.betas: [0.9, 0.95] there, [0.9, 0.999] here (and 1 more))"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("resume it with its own recipe"), std::string::npos) << e;
  // A new run: refused (checkpoint-last.pt exists), then replaced with --overwrite; other files stay.
  EXPECT_NO_THROW(train::RunFolder(dir.str(), folder_options(true, false, true, b)));  // accepted when asked
  EXPECT_NE(test::error_of([&] {
              train::RunFolder(dir.str(), folder_options(false, false, false, b));
            }).find("--overwrite to start it again"),
            std::string::npos);
  EXPECT_THROW(train::RunFolder(dir.str(), folder_options(true, true, false, b)), std::invalid_argument);
  train::RunFolder(dir.str(), folder_options(false, true, false, b));
  EXPECT_EQ(count_files(dir.path), 1u);  // notes.txt
  EXPECT_TRUE(fs::exists(dir.path / "notes.txt"));
  // Without a checkpoint, another recipe's config.yaml is still refused.
  std::ofstream(dir.str() + "/config.yaml") << a;
  EXPECT_NE(test::error_of([&] {
              train::RunFolder(dir.str(), folder_options(false, false, false, b));
            }).find("pass --overwrite to replace it"),
            std::string::npos);
}

TEST(RunFolder, AFullDiskIsReportedBeforeTraining) {
  test::TempDir dir;
  train::RunFolder folder(dir.str(), {});
  EXPECT_NO_THROW(folder.check_free_space(1024, "a test"));
  const auto e = test::error_of([&] { folder.check_free_space(uint64_t{1} << 62, "a test"); });
  EXPECT_NE(e.find(dir.str() + ": "), std::string::npos) << e;
  EXPECT_NE(e.find(" MB free on its disk, the run needs about 4398046511104 MB (a test)"), std::string::npos) << e;
}
