// Data-parallel training (issue 7) with ranks as threads of this process over Gloo: 2 ranks x batch B/2 train
// as 1 rank x batch B (the same samples, augmentations and masks; gradients averaged) across a stage switch,
// with every rank's student, teacher and optimizer state bitwise identical after every step and switch; a
// run stopped inside an accumulation window by 2 ranks resumes on 1 rank with the same global batch to the
// uninterrupted result; another global batch is refused; the loader's shards and the distiller's mask rows
// are the one-rank batch's; a setup error on one rank stops every rank with a message.
#include <ATen/Parallel.h>

#include <thread>

#include "dbot/dist/process_group.h"
#include "dbot/recipe/recipe.h"
#include "dbot/train/checkpoint.h"
#include "dbot/train/trainer.h"
#include "image_util.h"
#include "run_util.h"
#include "test_util.h"
#include "tiny_config.h"

using namespace dbot;
using namespace std::chrono_literals;

namespace {

// test::tiny_run without drop path (its draws are per rank), 4 iterations per epoch at a global batch of 16,
// stages of 2 and 1 epochs, no mid-epoch checkpoints.
recipe::Recipe tiny_run(const std::string& data_dir, int64_t batch, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> overrides = {"model.drop_path=0", "mkd.stage_epochs=[0, 2, 3]", "train.log_every=2",
                                        "train.checkpoint_every=0", "optim.batch_size=" + std::to_string(batch)};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return test::tiny_run(data_dir, overrides);
}
using test::options;

core::Runtime rank_runtime(int rank, int world) {
  core::Runtime rt;
  rt.rank = rank;
  rt.world_size = world;
  return rt;
}

// Every tensor of a trainer's state: student, teacher, AdamW moments, gradients.
std::vector<at::Tensor> snapshot(train::Trainer& t) {
  std::vector<at::Tensor> out;
  auto& d = t.distiller();
  for (const auto& p : d.student->parameters()) out.push_back(p.detach().clone());
  for (const auto& p : d.teacher->parameters()) out.push_back(p.detach().clone());
  const auto st = t.optimizer().state();
  for (const auto* m : {&st.exp_avg, &st.exp_avg_sq})
    for (const auto& [name, v] : *m) out.push_back(v.clone());
  for (const auto& g : t.optimizer().grads()) out.push_back(g.clone());
  return out;
}

// Runs `per_rank(rank, group)` on `world` threads over a fresh in-memory store; returns each rank's error.
std::vector<std::string> on_ranks(int world, const std::function<void(int, dist::Group&)>& per_rank) {
  static int runs = 0;
  const std::string key = "dp-" + std::to_string(runs++);
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto g = dist::Group::in_process(key, r, world, 60s);
        per_rank(r, *g);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

// Within `atol` everywhere but the key biases (the middle third of attn.qkv.bias): softmax ignores a bias
// added to every key, so their gradient is zero up to rounding, and AdamW (update ~ lr m / sqrt(v)) takes
// steps of up to lr on that rounding noise, which differs with the summation order. Prints the largest
// difference.
void expect_close(const train::TensorMap& a, const train::TensorMap& b, double atol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double worst = 0;
  std::string where;
  for (const auto& [k, v] : a) {
    at::Tensor diff = (v - b.at(k)).abs();
    if (k.size() > 13 && k.compare(k.size() - 13, 13, "attn.qkv.bias") == 0) {
      const int64_t D = v.size(0) / 3;
      diff = at::cat({diff.slice(0, 0, D), diff.slice(0, 2 * D)});
    }
    const double d = diff.max().item<double>();
    if (d > worst) worst = d, where = k;
  }
  std::printf("%s: largest difference %.3g (%s)\n", what.c_str(), worst, where.c_str());
  EXPECT_LE(worst, atol) << what << ": " << where;
}

}  // namespace

class DataParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(1);
    test::write_fake_fmnist(data.str(), 64, 20, 8);
  }
  test::TempDir data;
};

TEST_F(DataParallel, TwoRanksOfHalfTheBatchTrainAsOneRankAcrossAStageSwitch) {
  test::TempDir one, two;
  const auto cfg1 = tiny_run(data.str(), 16);
  ASSERT_TRUE(train::pretrain(cfg1, rank_runtime(0, 1), options(one.str(), cfg1)).finished);

  const auto cfg2 = tiny_run(data.str(), 8);
  std::vector<std::vector<std::vector<at::Tensor>>> states(2);  // [rank][event] -> state
  std::vector<int> switches(2, 0);
  const auto errors = on_ranks(2, [&](int r, dist::Group& g) {
    auto o = options(two.str(), cfg2);
    o.observe = [&, r](train::Trainer& t, bool stage_switch) {
      states[static_cast<size_t>(r)].push_back(snapshot(t));
      switches[static_cast<size_t>(r)] += stage_switch ? 1 : 0;
    };
    EXPECT_TRUE(train::pretrain(cfg2, rank_runtime(r, 2), o, &g).finished);
  });
  EXPECT_EQ(errors, std::vector<std::string>(2, ""));

  // 4 iterations per epoch (64 / 16) for both, 3 epochs, one switch: 13 observations per rank.
  ASSERT_EQ(states[0].size(), 13u);
  ASSERT_EQ(states[1].size(), states[0].size());
  EXPECT_EQ(switches[0], 1);
  for (size_t e = 0; e < states[0].size(); ++e) {
    ASSERT_EQ(states[0][e].size(), states[1][e].size());
    for (size_t k = 0; k < states[0][e].size(); ++k)
      ASSERT_TRUE(states[0][e][k].equal(states[1][e][k])) << "event " << e << " tensor " << k;
  }
  // Only rank 0 wrote, and it wrote what one rank with the whole batch writes, within fp32 rounding.
  for (const char* f : {"/stage-1.pt", "/stage-2.pt"}) {
    const auto a = train::load_checkpoint(one.str() + f), b = train::load_checkpoint(two.str() + f);
    expect_close(a.model, b.model, 1e-6, f);
    expect_close(a.teacher, b.teacher, 1e-6, f);
  }
  const auto last = train::load_checkpoint(two.str() + "/checkpoint-last.pt");
  EXPECT_EQ(last.world_size, 2);
  EXPECT_EQ(last.global_batch, 16);
}

TEST_F(DataParallel, AStopInsideAnAccumulationWindowResumesOnOneRank) {
  test::TempDir one, two;
  const auto cfg1 = tiny_run(data.str(), 8, {"optim.accum_iter=2"});  // global batch 16 = 1 x 8 x 2 = 2 x 4 x 2
  ASSERT_TRUE(train::pretrain(cfg1, rank_runtime(0, 1), options(one.str(), cfg1)).finished);

  const auto cfg2 = tiny_run(data.str(), 4, {"optim.accum_iter=2"});
  const auto errors = on_ranks(2, [&](int r, dist::Group& g) {
    auto o = options(two.str(), cfg2);
    o.stop_after = 11;  // epoch 1, iteration 3 of 8: inside a window
    EXPECT_FALSE(train::pretrain(cfg2, rank_runtime(r, 2), o, &g).finished);
  });
  EXPECT_EQ(errors, std::vector<std::string>(2, ""));
  const auto stopped = train::load_checkpoint(two.str() + "/checkpoint-last.pt");
  EXPECT_EQ(stopped.epoch * 8 + stopped.iteration, 11);
  EXPECT_FALSE(stopped.grad_accum.empty());  // the ranks' partial gradients, averaged

  auto o = options(two.str(), cfg1);
  o.resume = true;
  const auto s = train::pretrain(cfg1, rank_runtime(0, 1), o);  // 1 x 8 x 2: the same global batch
  EXPECT_TRUE(s.finished);
  const auto a = train::load_checkpoint(one.str() + "/stage-2.pt"),
             b = train::load_checkpoint(two.str() + "/stage-2.pt");
  expect_close(a.model, b.model, 1e-6, "stage-2.pt");

  // Another global batch is refused, naming both.
  test::TempDir three;
  auto o3 = options(three.str(), cfg2);
  o3.stop_after = 2;
  on_ranks(2, [&](int r, dist::Group& g) { train::pretrain(cfg2, rank_runtime(r, 2), o3, &g); });
  const auto cfg3 = tiny_run(data.str(), 4, {"optim.accum_iter=2"});
  auto o4 = options(three.str(), cfg3);
  o4.resume = true;
  const std::string err = test::error_of([&] { train::pretrain(cfg3, rank_runtime(0, 1), o4); });
  EXPECT_NE(err.find("was trained with a global batch of 16 images (2 process(es)); this run's is 8"),
            std::string::npos)
      << err;
}

TEST_F(DataParallel, ASetupErrorOnOneRankStopsEveryRank) {
  test::TempDir run;
  const auto cfg = tiny_run(data.str(), 8);
  const auto bad = tiny_run(data.str() + "/missing", 8);
  const auto errors = on_ranks(2, [&](int r, dist::Group& g) {
    train::pretrain(r == 1 ? bad : cfg, rank_runtime(r, 2), options(run.str(), cfg), &g);
  });
  EXPECT_NE(errors[1].find("/missing"), std::string::npos) << errors[1];
  EXPECT_EQ(errors[0], "rank 1 of 2 failed (its error is in its output); stopping this rank too");
}

TEST(DataParallelMasks, EachRankHasItsRowsOfTheOneRankNoise) {
  at::set_num_threads(1);
  auto cfg = test::tiny_mkd();
  mkd::Distiller d(test::tiny_vit(), cfg, 3);
  const auto imgs = at::randn({4, 3, 8, 8}, at::TensorOptions().dtype(at::kFloat));
  auto gen = [] { return core::derive_generator(5, core::RngPurpose::kStep, 9); };
  auto g = gen();
  const double whole = d.forward(imgs, g).item<double>();
  double sum = 0;
  for (int64_t r = 0; r < 2; ++r) {
    auto gr = gen();
    sum += d.forward(imgs.slice(0, r, 4, 2), gr, r, 2).item<double>();  // samples r, r + 2
  }
  // The same masks (75% of 16 patches per sample) and per-sample terms: the mean of the halves is the whole.
  EXPECT_NEAR(sum / 2, whole, 1e-6 * std::abs(whole));
  auto g0 = gen(), g1 = gen();
  EXPECT_NE(d.forward(imgs.slice(0, 0, 4, 2), g0, 0, 2).item<double>(),
            d.forward(imgs.slice(0, 0, 4, 2), g1, 1, 2).item<double>());  // another rank, other rows
}
