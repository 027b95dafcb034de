// The pretraining engine on a small synthetic Fashion-MNIST-format dataset: run folder contents, stage
// semantics seen through the saved files, exact resume, and refusing to overwrite a run.
#include <ATen/Parallel.h>

#include "dbot/io/config.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/engine.h"
#include "test_util.h"

using namespace dbot;

namespace {
io::RunConfig tiny_run(const std::string& data_dir) {
  return io::load_config(
      "", {"model.name=vit_tiny_patch2_8", "model.embed_dim=16", "model.depth=2", "model.num_heads=2",
           "model.drop_path=0.1", "mkd.decoder_embed_dim=8", "mkd.decoder_depth=1", "mkd.decoder_num_heads=2",
           "mkd.stage_epochs=[0, 2, 4]", "data.root=" + data_dir, "optim.batch_size=16", "optim.lr=1e-3",
           "optim.warmup_epochs=1", "optim.clip_grad=1.0", "train.log_every=1", "train.checkpoint_every=3",
           "train.precision=fp32"});
}
train::PretrainOptions options(const std::string& run_dir) {
  train::PretrainOptions o;
  o.run_dir = run_dir;
  o.quiet = true;
  return o;
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
  test::TempDir run;
  auto cfg = tiny_run(data.str());
  const auto s = train::pretrain(cfg, options(run.str()));
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.stages_done, 2);
  EXPECT_EQ(s.iterations, 16);  // 64 images / 16 = 4 it/epoch, 4 epochs
  for (const char* f : {"config.yaml", "metrics.jsonl", "checkpoint-last.pt", "stage-1.pt", "stage-2.pt"}) {
    EXPECT_TRUE(std::filesystem::exists(run.str() + "/" + f)) << f;
  }
  const auto s1 = train::load_checkpoint(run.str() + "/stage-1.pt");
  const auto s2 = train::load_checkpoint(run.str() + "/stage-2.pt");
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
  std::ifstream in(run.str() + "/metrics.jsonl");
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
    train::pretrain(cfg, options(run.str()));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
}

TEST_F(EngineTest, InterruptedRunResumesBitwise) {
  auto cfg = tiny_run(data.str());
  test::TempDir full, pieces;
  train::pretrain(cfg, options(full.str()));

  auto o = options(pieces.str());
  o.stop_after = 6;  // mid-epoch 1
  auto a = train::pretrain(cfg, o);
  EXPECT_FALSE(a.finished);
  EXPECT_EQ(a.iterations, 6);
  o.resume = true;
  o.stop_after = 5;  // crosses the stage boundary at iteration 8
  auto b = train::pretrain(cfg, o);
  EXPECT_EQ(b.iterations, 5);
  o.stop_after = -1;
  auto c = train::pretrain(cfg, o);
  EXPECT_TRUE(c.finished);
  EXPECT_EQ(c.iterations, 5);

  for (const char* f : {"stage-1.pt", "stage-2.pt", "checkpoint-last.pt"}) {
    const auto x = train::load_checkpoint(full.str() + "/" + f), y = train::load_checkpoint(pieces.str() + "/" + f);
    expect_same_state(x.model, y.model, std::string(f) + " model");
    expect_same_state(x.teacher, y.teacher, std::string(f) + " teacher");
    expect_same_state(x.exp_avg, y.exp_avg, std::string(f) + " exp_avg");
    EXPECT_EQ(x.optimizer_step, y.optimizer_step);
  }
}
