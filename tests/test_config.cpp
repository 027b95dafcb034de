// Recipes: defaults + YAML file + --set overrides; unknown keys and bad values are errors naming them.
#include "dbot/io/files.h"
#include "dbot/recipe/recipe.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

TEST(Config, RecipeAndOverridesLayerOnDefaults) {
  test::TempDir dir;
  const std::string recipe = dir.str() + "/r.yaml";
  io::write_atomic(recipe,
                   "model:\n  depth: 3\noptim:\n  blr: 1.0e-3\n  batch_size: 128\nmkd:\n  stage_epochs: [0, 2, 5]\n");
  auto c = recipe::load_config(
      recipe, {"optim.accum_iter=2", "model.name=vit_small_patch4_28", "data.hflip=false", "mkd.reinit_student=false"});
  EXPECT_EQ(c.model.depth, 3);
  EXPECT_FALSE(c.mkd.reinit_student);
  EXPECT_TRUE(recipe::load_config("").mkd.reinit_student);  // the official rule by default
  EXPECT_EQ(c.model.embed_dim, 384);                        // from the overridden name
  EXPECT_EQ(c.optim.accum_iter, 2);
  EXPECT_FALSE(c.data.hflip);
  EXPECT_EQ(c.mkd.stage_epochs, (std::vector<int64_t>{0, 2, 5}));
  // The paper's rule: lr = blr * effective batch / 256, effective batch counting accumulation.
  EXPECT_DOUBLE_EQ(c.optim.peak_lr(), 1e-3 * 128 * 2 / 256);
  EXPECT_DOUBLE_EQ(c.optim.peak_lr(4), 1e-3 * 128 * 2 * 4 / 256);
  // The resolved YAML reads back to the same config.
  auto again = recipe::config_from_yaml(c.to_yaml(), "resolved");
  EXPECT_EQ(again.model.depth, 3);
  EXPECT_EQ(again.optim.accum_iter, 2);
  EXPECT_FALSE(again.mkd.reinit_student);
  EXPECT_EQ(again.to_yaml(), c.to_yaml());
}

// Each override list must fail with a message containing the expected text.
TEST(Config, BadRecipesAreErrorsNamingTheKey) {
  test::TempDir dir;
  const std::string recipe = dir.str() + "/bad.yaml";
  io::write_atomic(recipe, "optim:\n  lrr: 1\n");
  const auto e = error_of([&] { recipe::load_config(recipe); });
  EXPECT_NE(e.find("bad.yaml: unknown recipe key 'optim.lrr'"), std::string::npos) << e;
  const auto missing = error_of([&] { recipe::load_config("/nonexistent/recipe.yaml"); });
  EXPECT_NE(missing.find("/nonexistent/recipe.yaml"), std::string::npos) << missing;

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"optim.nope=3", "unknown recipe key 'optim.nope'"},
      {"optim=3", "is a section"},
      {"novalue", "key=value"},
      {"optim.batch_size=many", "optim.batch_size"},
      {"model.name=vit_tiny_patch5_28", "not divisible by patch size"},
      {"mkd.stage_epochs=[0, 3, 2]", "mkd.stage_epochs"},
      {"model.name=vit_giant_patch4_28", "unknown model"},
      {"train.precision=fp8", "train.precision"},
      {"data.mean=[0.1, 0.2]", "data.mean"},
      {"mkd.decoder_num_heads=3", "mkd.decoder_embed_dim"},
  };
  for (const auto& [override_text, expected] : cases) {
    const std::string text = override_text;  // C++17 lambdas cannot capture a structured binding
    const auto msg = error_of([&] { recipe::load_config("", {text}); });
    EXPECT_NE(msg.find(expected), std::string::npos) << override_text << " -> " << msg;
  }
}
