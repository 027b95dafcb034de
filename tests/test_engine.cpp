// The pretraining engine on a small synthetic Fashion-MNIST-format dataset: run folder contents, stage
// semantics seen through the saved files, exact resume, refusing to overwrite a run, and a run on an
// ImageFolder of PNG and JPEG files.
#include <ATen/Parallel.h>

#include <cstring>
#include <filesystem>
#include <tuple>

#include "dbot/compat.h"
#include "dbot/data/decode.h"
#include "dbot/eval/evaluate.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/trainer.h"
#include "image_util.h"
#include "run_util.h"
#include "test_util.h"

using namespace dbot;

namespace {
using test::options;
using test::tiny_run;
core::Runtime cpu_runtime(core::Amp amp = core::Amp::kNone) {
  core::Runtime rt;  // CPU, one thread (set by the fixture)
  rt.amp = amp;
  return rt;
}
train::PretrainSummary run(const recipe::Recipe& cfg, const train::PretrainOptions& o,
                           core::Amp amp = core::Amp::kNone) {
  return train::pretrain(cfg, cpu_runtime(amp), o);
}
void expect_same_state(const train::TensorMap& a, const train::TensorMap& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [k, v] : a) EXPECT_TRUE(v.equal(b.at(k))) << what << ": " << k;
}
}  // namespace

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);  // bitwise reproducibility
    test::write_fake_fmnist(data.str(), 64, 20, 8);
  }
  test::TempDir data;
};

TEST_F(EngineTest, RunFolderAndStageSemantics) {
  test::TempDir dir;
  auto cfg = tiny_run(data.str());
  const auto s = run(cfg, options(dir.str(), cfg));
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.stages_done, 2);
  EXPECT_EQ(s.iterations, 16);  // 64 images / 16 = 4 it/epoch, 4 epochs
  for (const char* f : {"config.yaml", "metrics.jsonl", "checkpoint-last.pt", "stage-1.pt", "stage-2.pt"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.str() + "/" + f)) << f;
  }
  const auto s1 = train::load_checkpoint(dir.str() + "/stage-1.pt");
  const auto s2 = train::load_checkpoint(dir.str() + "/stage-2.pt");
  EXPECT_EQ(s1.stage, 1);
  EXPECT_EQ(s2.stage, 2);
  // Stage 0 is the student's own initialization: rebuild it from the seed.
  mkd::Distiller init(cfg.model, cfg.mkd, cfg.train.seed);
  expect_same_state(s1.teacher, train::state_dict(*init.teacher), "stage-1 teacher vs initialization");
  // The stage-2 teacher is the stage-1 student's encoder.
  train::TensorMap s1_encoder;
  for (const auto& [k, v] : s1.model)
    if (s2.teacher.count(k)) s1_encoder[k] = v;
  expect_same_state(s2.teacher, s1_encoder, "stage-2 teacher vs stage-1 student");
  // The stage-2 student was re-initialized, not continued (the carried conv bias is checked in test_distiller).
  EXPECT_FALSE(s2.model.at("blocks.0.attn.qkv.weight").equal(s1.model.at("blocks.0.attn.qkv.weight")));

  // metrics.jsonl: the lr restarts from 0 with warmup at each stage; losses are finite.
  std::ifstream in(dir.str() + "/metrics.jsonl");
  std::vector<nlohmann::json> steps;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "step") steps.push_back(j);
  }
  ASSERT_EQ(steps.size(), 16u);
  EXPECT_EQ(steps[0]["lr"].get<double>(), 0.0);
  EXPECT_EQ(steps[8]["stage"].get<int>(), 2);
  EXPECT_EQ(steps[8]["lr"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(steps[9]["lr"].get<double>(), 0.25e-3);
  EXPECT_GT(steps[7]["lr"].get<double>(), 0.0);
  for (const auto& j : steps) EXPECT_TRUE(std::isfinite(j["loss"].get<double>()));

  // Running again into the same folder without --resume is refused (nothing is overwritten).
  try {
    run(cfg, options(dir.str(), cfg));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
}

TEST_F(EngineTest, InterruptedRunResumesBitwise) {
  auto cfg = tiny_run(data.str());
  test::TempDir full, pieces;
  run(cfg, options(full.str(), cfg));

  auto o = options(pieces.str(), cfg);
  o.stop_after = 6;  // mid-epoch 1
  auto a = run(cfg, o);
  EXPECT_FALSE(a.finished);
  EXPECT_EQ(a.iterations, 6);
  o.resume = true;
  o.stop_after = 5;  // crosses the stage boundary at iteration 8
  auto b = run(cfg, o);
  EXPECT_EQ(b.iterations, 5);
  o.stop_after = -1;
  auto c = run(cfg, o);
  EXPECT_TRUE(c.finished);
  EXPECT_EQ(c.iterations, 5);

  for (const char* f : {"stage-1.pt", "stage-2.pt", "checkpoint-last.pt"}) {
    const auto x = train::load_checkpoint(full.str() + "/" + f), y = train::load_checkpoint(pieces.str() + "/" + f);
    expect_same_state(x.model, y.model, std::string(f) + " model");
    expect_same_state(x.teacher, y.teacher, std::string(f) + " teacher");
    expect_same_state(x.optimizer.exp_avg, y.optimizer.exp_avg, std::string(f) + " exp_avg");
    EXPECT_EQ(x.optimizer.step, y.optimizer.step);
  }
}

// Bitwise resume for any interruption point: a run with gradient accumulation stopped inside accumulation
// windows (the checkpoint keeps the partial gradients) ends with the weights of an uninterrupted run.
TEST_F(EngineTest, ResumeInsideAnAccumulationWindowIsExact) {
  auto cfg = tiny_run(data.str(), {"optim.accum_iter=2", "train.checkpoint_every=3"});
  test::TempDir full, pieces;
  run(cfg, options(full.str(), cfg));
  auto o = options(pieces.str(), cfg);
  for (int64_t stop : {3, 5, 1}) {  // iterations 3, 8 (a stage boundary) and 9: odd ones end mid-window
    o.stop_after = stop;
    run(cfg, o);
    o.resume = true;
    const auto c = train::load_checkpoint(pieces.str() + "/checkpoint-last.pt");
    if ((c.epoch * 4 + c.iteration) % 2 == 1) EXPECT_FALSE(c.grad_accum.empty()) << "stop " << stop;
  }
  o.stop_after = -1;
  EXPECT_TRUE(run(cfg, o).finished);
  const auto x = train::load_checkpoint(full.str() + "/checkpoint-last.pt");
  const auto y = train::load_checkpoint(pieces.str() + "/checkpoint-last.pt");
  expect_same_state(x.model, y.model, "model");
  expect_same_state(x.optimizer.exp_avg, y.optimizer.exp_avg, "exp_avg");
  EXPECT_EQ(x.optimizer.step, y.optimizer.step);
}

TEST_F(EngineTest, RestoreRefusesAnotherSeed) {
  auto cfg = tiny_run(data.str());
  test::TempDir dir;
  auto o = options(dir.str(), cfg);
  o.stop_after = 2;
  run(cfg, o);
  const auto ckpt = train::load_checkpoint(dir.str() + "/checkpoint-last.pt");
  mkd::Distiller other(cfg.model, cfg.mkd, cfg.train.seed + 1);
  const auto e = test::error_of([&] { train::restore(other, nullptr, nullptr, ckpt, "last.pt"); });
  EXPECT_NE(e.find("last.pt: was written with seed 0, this run has seed 1"), std::string::npos) << e;
}

TEST_F(EngineTest, Fp16RunsWithALossScaleInMetricsAndCheckpoint) {
  if (!compat::cpu_autocast_supports_fp16()) GTEST_SKIP() << "no fp16 autocast on CPU in this LibTorch";
  auto cfg = tiny_run(data.str());
  test::TempDir dir;
  auto o = options(dir.str(), cfg);
  o.stop_after = 6;
  run(cfg, o, core::Amp::kFP16);
  std::ifstream in(dir.str() + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["type"] != "step") continue;
    ++lines;
    EXPECT_TRUE(std::isfinite(j["loss"].get<double>()));
    EXPECT_GT(j["loss_scale"].get<double>(), 0.0);
  }
  EXPECT_EQ(lines, 6);
  const auto c = train::load_checkpoint(dir.str() + "/checkpoint-last.pt");
  EXPECT_TRUE(c.has_loss_scaler);
  EXPECT_GT(c.loss_scaler.scale, 0.0);
}

// A diverging run stops with an error naming the iteration range (losses are checked on the device-side
// sum at log steps), and never overwrites the last good checkpoint with non-finite weights.
TEST_F(EngineTest, NonFiniteLossStopsBeforeACheckpointWrite) {
  test::TempDir dir;
  auto good = tiny_run(data.str());
  auto o = options(dir.str(), good);
  o.stop_after = 4;  // one epoch: checkpoint-last.pt at epoch 1
  run(good, o);
  const auto before = train::load_checkpoint(dir.str() + "/checkpoint-last.pt");

  auto bad = tiny_run(data.str(), {"optim.lr=1e30", "optim.warmup_epochs=0", "optim.clip_grad=0", "train.log_every=2",
                                   "train.checkpoint_every=2"});
  o = options(dir.str(), bad);
  o.resume = true;
  o.accept_recipe_change = true;  // as a user changing the lr of a run
  const auto e = test::error_of([&] { run(bad, o); });
  EXPECT_NE(e.find("loss is not finite at stage 1, epoch 1, iterations "), std::string::npos) << e;
  EXPECT_NE(e.find("last good checkpoint: " + dir.str() + "/checkpoint-last.pt"), std::string::npos) << e;
  const auto after = train::load_checkpoint(dir.str() + "/checkpoint-last.pt");
  for (const auto& [k, v] : after.model) EXPECT_TRUE(v.isfinite().all().item<bool>()) << k;
  EXPECT_GE(after.epoch * 4 + after.iteration, before.epoch * 4 + before.iteration);
}

// End to end on real image files: Fashion-MNIST images (Debian's dataset-fashion-mnist, else the synthetic
// set) written as grayscale PNG and JPEG into an ImageFolder (train/ and val/), two tiny stages, then the
// per-stage k-NN / linear probe on the same folder.
TEST(EngineImageFolder, PretrainsTwoStagesAndEvaluatesOnAnImageFolder) {
  at::set_num_threads(1);
  test::TempDir fake, root, run_dir;
  const char* env = std::getenv("DBOT_FMNIST_DIR");
  std::string fmnist = env && *env ? env : "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(fmnist + "/train-images-idx3-ubyte.gz")) {
    test::write_fake_fmnist(fake.str(), 300, 100, 28);
    fmnist = fake.str();
  }
  for (const auto& [split, idx_split, n] :
       {std::tuple<std::string, std::string, int>{"train", "train", 300}, {"val", "test", 100}}) {
    const auto ds = data::load_fashion_mnist(fmnist, idx_split, n);
    for (int64_t i = 0; i < ds.size(); ++i) {
      const int64_t label = ds.labels[i].item<int64_t>();
      const std::string dir = root.str() + "/" + split + "/class_" + std::to_string(label);
      std::filesystem::create_directories(dir);
      data::Image img(28, 28, 1);
      std::memcpy(img.pixels.data(), ds.images[i].contiguous().data_ptr<uint8_t>(), 28 * 28);
      const std::string stem = dir + "/" + std::to_string(i);
      if (i % 2 == 0) {
        test::write_png(stem + ".png", img);
      } else {
        test::write_jpeg(stem + ".jpg", img, 95);
      }
    }
  }
  auto cfg = recipe::load_config("", {"model.name=vit_tiny_patch7_28",
                                      "model.in_chans=1",
                                      "model.embed_dim=32",
                                      "model.depth=2",
                                      "model.num_heads=2",
                                      "mkd.decoder_embed_dim=16",
                                      "mkd.decoder_depth=1",
                                      "mkd.decoder_num_heads=2",
                                      "mkd.stage_epochs=[0, 1, 2]",
                                      "data.format=imagefolder",
                                      "data.path=" + root.str(),
                                      "data.cache_dir=none",
                                      "data.crop_pct=1.0",
                                      "data.workers=2",
                                      "data.mean=[0.286]",
                                      "data.std=[0.353]",
                                      "optim.batch_size=32",
                                      "optim.lr=1e-3",
                                      "train.precision=fp32",
                                      "eval.linprobe_epochs=5",
                                      "eval.batch_size=64"});
  train::PretrainOptions o;
  o.run_dir = run_dir.str();
  o.config_yaml = cfg.to_yaml();
  o.quiet = true;
  const auto s = train::pretrain(cfg, core::Runtime{}, o);
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.iterations, 2 * (300 / 32));
  const auto rows = eval::evaluate_run(run_dir.str(), cfg.model, cfg.data, cfg.eval, core::Runtime{}, true);
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& r : rows) {
    EXPECT_GT(r.knn, 0.3) << r.source;  // chance is 0.1
    EXPECT_GT(r.linprobe, 0.3) << r.source;
  }
}
