// Fine-tuning against references (tests/reference/make_finetune_golden.py: timm's classifier, MAE's layer-decay
// groups, timm's mixup/cutmix arithmetic and losses), random erasing and mixing by their invariants, and a short
// run end to end: its files, a resume to the same weights, and the recipe's refusals.
#include <ATen/Parallel.h>

#include <filesystem>

#include "dbot/finetune/classifier.h"
#include "dbot/finetune/finetune.h"
#include "dbot/finetune/finetune_checkpoint.h"
#include "dbot/finetune/mixup.h"
#include "dbot/io/safetensors.h"
#include "dbot/recipe/recipe.h"
#include "test_util.h"

using namespace dbot;
using test::all_close;

namespace {
const std::string kFinetuneJson = DBOT_FINETUNE_JSON;
const nlohmann::json& ft_golden() { return test::json_file(kFinetuneJson); }
finetune::Classifier tiny_classifier() {
  return finetune::Classifier(finetune::classifier_config(test::tiny_vit(), 0.0), 5);
}
}  // namespace

TEST(Finetune, ClassifierHasTimmNamesAndLogits) {
  auto c = tiny_classifier();
  std::vector<std::string> names;
  for (const auto& item : c->named_parameters(true)) names.push_back(item.key());
  auto expected = ft_golden().at("names").get<std::vector<std::string>>();
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);  // pos_embed a parameter, fc_norm and head, no norm
  EXPECT_TRUE(c->named_buffers().is_empty());
  test::fill_parameters(*c);
  c->eval();
  EXPECT_TRUE(
      all_close(c->forward(test::given_images()), test::json_tensor(kFinetuneJson, "logits", {2, 5}), 1e-5, 1e-6));
}

TEST(Finetune, LayerDecayGroupsAreMaes) {
  auto c = tiny_classifier();
  const auto rule = finetune::layer_decay_rule(2, 0.65);
  const auto& lrd = ft_golden().at("lrd");
  ASSERT_EQ(lrd.size(), c->named_parameters(true).size());
  for (const auto& item : c->named_parameters(true)) {
    const auto g = rule(item.key(), item.value());
    const auto& e = lrd.at(item.key());
    EXPECT_NEAR(g.lr_scale, e[0].get<double>(), 1e-12) << item.key();
    EXPECT_EQ(g.decay ? 0.05 : 0.0, e[1].get<double>()) << item.key();
  }
  EXPECT_EQ(finetune::layer_id("blocks.11.mlp.fc1.weight", 12), 12);
}

TEST(Finetune, MixupTargetsCutmixBoxesAndLossesAreTimms) {
  const auto labels = at::tensor({3, 0, 4, 1}, at::kLong);
  EXPECT_TRUE(all_close(finetune::mixup_target(labels, 5, 0.7, 0.1),
                        test::json_tensor(kFinetuneJson, "mixup_target", {4, 5}), 0, 1e-7));
  for (const auto& b : ft_golden().at("cutmix_boxes")) {
    const auto box = finetune::cutmix_box(b[0], b[1], b[2], b[3], b[4]);
    EXPECT_EQ((std::vector<int64_t>{box.yl, box.yh, box.xl, box.xh}), (std::vector<int64_t>{b[5], b[6], b[7], b[8]}))
        << b.dump();
    EXPECT_NEAR(box.lam, b[9].get<double>(), 1e-12) << b.dump();
  }
  const auto logits =
      at::tensor({2.0, -1.0, 0.5, 0.0, 1.0, 0.1, 0.2, 3.0, -2.0, 0.0}, at::kDouble).reshape({2, 5}).to(at::kFloat);
  const auto y = at::tensor({4, 2}, at::kLong);
  // Label smoothing CE = the soft-target CE against lam-1 smoothed targets.
  EXPECT_NEAR(finetune::soft_target_cross_entropy(logits, finetune::mixup_target(y, 5, 1.0, 0.1)).item<double>(),
              ft_golden().at("smoothing_loss").get<double>(), 1e-6);
  EXPECT_NEAR(finetune::soft_target_cross_entropy(logits, finetune::mixup_target(y, 5, 0.6, 0.1)).item<double>(),
              ft_golden().at("soft_target_loss").get<double>(), 1e-6);
}

TEST(Finetune, MixBatchMixesWithTheFlippedBatch) {
  auto gen = core::derive_generator(3, core::RngPurpose::kStep, 0);
  const auto x0 = at::rand({4, 1, 6, 6}), y = at::tensor({0, 1, 2, 3}, at::kLong);
  finetune::MixupConfig mixup_only{0.8, 0.0, 1.0, 0.5, 0.0};
  auto x = x0.clone();
  double lam = 0;
  auto t = finetune::mix_batch(x, y, 4, mixup_only, gen, &lam);
  EXPECT_GT(lam, 0.0);
  EXPECT_LT(lam, 1.0);
  EXPECT_TRUE(all_close(x, x0 * lam + x0.flip(0) * (1 - lam), 0, 1e-6));
  EXPECT_NEAR(t[0][0].item<double>(), lam, 1e-6);
  EXPECT_NEAR(t[0][3].item<double>(), 1 - lam, 1e-6);
  finetune::MixupConfig cutmix_only{0.0, 1.0, 1.0, 0.5, 0.0};
  for (int trial = 0; trial < 5; ++trial) {
    x = x0.clone();
    t = finetune::mix_batch(x, y, 4, cutmix_only, gen, &lam);
    // Every pixel is its own or the flipped sample's; the flipped share is 1 - lam.
    const auto from_flip = x.ne(x0).to(at::kDouble).mean().item<double>();
    EXPECT_TRUE((x.eq(x0) | x.eq(x0.flip(0))).all().item<bool>());
    EXPECT_NEAR(from_flip, 1 - lam, 1e-9);
  }
  finetune::MixupConfig off{0.0, 0.0, 1.0, 0.5, 0.1};
  x = x0.clone();
  t = finetune::mix_batch(x, y, 4, off, gen, &lam);
  EXPECT_EQ(lam, 1.0);
  EXPECT_TRUE(x.equal(x0));
  EXPECT_NEAR(t[1][1].item<double>(), 0.9 + 0.1 / 4, 1e-7);
}

TEST(Finetune, RandomErasingReplacesOneRectangle) {
  auto gen = core::derive_generator(5, core::RngPurpose::kStep, 1);
  const auto x0 = at::full({64, 3, 20, 20}, 7.0f);
  auto x = x0.clone();
  finetune::random_erase(x, 0.25, gen);
  int64_t erased = 0;
  for (int64_t n = 0; n < 64; ++n) {
    const auto changed = x[n].ne(7.0f).any(0);  // [H, W]
    const auto count = changed.sum().item<int64_t>();
    if (count == 0) continue;
    ++erased;
    const auto rows = changed.any(1).nonzero(), cols = changed.any(0).nonzero();
    const auto h = rows.size(0), w = cols.size(0);
    EXPECT_EQ(count, h * w) << "sample " << n << ": not one rectangle";
    EXPECT_GE(static_cast<double>(h * w), 0.02 * 400 * 0.5);
    EXPECT_LE(static_cast<double>(h * w), 400.0 / 3.0 * 1.5);
  }
  EXPECT_GT(erased, 4);  // ~16 of 64 expected
  EXPECT_LT(erased, 32);
}

TEST(Finetune, ShortRunWritesItsFilesAndResumesExactly) {
  at::set_num_threads(1);
  test::TempDir data, full, pieces;
  test::write_fake_fmnist(data.str(), 64, 24, 8);
  const auto r = recipe::load_config(
      "", {"model.name=vit_tiny_patch2_8", "model.embed_dim=16", "model.depth=2", "model.num_heads=2",
           "data.path=" + data.str(), "finetune.epochs=2", "finetune.warmup_epochs=1", "finetune.batch_size=16",
           "finetune.accum_iter=2", "finetune.lr=1e-3", "train.log_every=1", "train.checkpoint_every=3"});
  finetune::FinetuneSetup s;
  s.arch = r.model;  // from scratch (a pretrained encoder's loading is tested above)
  s.data = r.data;
  s.cfg = r.finetune;
  s.log_every = 1;
  s.checkpoint_every = 3;
  finetune::FinetuneOptions o;
  o.run_dir = full.str();
  o.config_yaml = r.to_yaml();
  o.quiet = true;
  const auto done = finetune::finetune(s, o);
  EXPECT_TRUE(done.finished);
  EXPECT_EQ(done.iterations, 8);  // 64 / 16 x 2 epochs
  for (const char* f :
       {"config.yaml", "metrics.jsonl", "checkpoint-last.pt", "checkpoint-best.pt", "model.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(full.str() + "/" + f)) << f;
  const auto st = io::read_safetensors(full.str() + "/model.safetensors");
  EXPECT_EQ(st.tensors.at("head.weight").sizes(), (at::IntArrayRef{10, 16}));
  EXPECT_EQ(st.tensors.count("norm.weight"), 0u);
  EXPECT_GE(done.best_acc1, done.last_acc1);

  o.run_dir = pieces.str();
  o.stop_after = 3;  // inside epoch 0, inside an accumulation window
  EXPECT_FALSE(finetune::finetune(s, o).finished);
  const auto mid = finetune::load_finetune_checkpoint(pieces.str() + "/checkpoint-last.pt");
  EXPECT_EQ(mid.iteration, 3);
  EXPECT_FALSE(mid.grad_accum.empty());
  o.resume = true;
  o.stop_after = -1;
  EXPECT_TRUE(finetune::finetune(s, o).finished);
  const auto a = finetune::load_finetune_checkpoint(full.str() + "/checkpoint-last.pt");
  const auto b = finetune::load_finetune_checkpoint(pieces.str() + "/checkpoint-last.pt");
  for (const auto& [k, v] : a.model) EXPECT_TRUE(v.equal(b.model.at(k))) << k;
  EXPECT_EQ(a.best_acc1, b.best_acc1);
}

TEST(Finetune, RecipeRefusals) {
  auto error = [](std::vector<std::string> o) { return test::error_of([&] { recipe::load_config("", o); }); };
  EXPECT_NE(error({"finetune.rand_augment=rand-m9-x1"})
                .find("finetune.rand_augment: RandAugment spec 'rand-m9-x1': unknown section 'x1'"),
            std::string::npos);
  EXPECT_EQ(error({"finetune.rand_augment=rand-m9-mstd0.5-inc1"}), "<no error>");
  EXPECT_NE(error({"finetune.layer_decay=1.5"}).find("finetune.layer_decay must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error({"finetune.betas=[0.9]"}).find("finetune.betas"), std::string::npos);
  EXPECT_NE(error({"finetune.warmup_epochs=200"}).find("finetune.warmup_epochs"), std::string::npos);
  // Its own key, not data.crop_scale whose range it replaces for fine-tuning.
  EXPECT_NE(error({"finetune.crop_scale=[0.5, 0.2]"}).find("finetune.crop_scale must be [min, max]"),
            std::string::npos);
}
