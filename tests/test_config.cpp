// Recipes: defaults + YAML file + --set overrides; unknown keys and bad values are errors naming them.
#include "dbot/io/config.h"
#include "dbot/io/files.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;


TEST(Config, RecipeAndOverridesLayerOnDefaults) {
  test::TempDir dir;
  const std::string recipe = dir.str() + "/r.yaml";
  io::write_atomic(recipe, "model:\n  depth: 3\noptim:\n  blr: 1.0e-3\n  batch_size: 128\nmkd:\n  stage_epochs: [0, 2, 5]\n");
  auto c = io::load_config(recipe, {"optim.accum_iter=2", "model.name=vit_small_patch4_28", "data.hflip=false"});
  EXPECT_EQ(c.model.depth, 3);
  EXPECT_EQ(c.model.embed_dim, 384);  // from the overridden name
  EXPECT_EQ(c.optim.accum_iter, 2);
  EXPECT_FALSE(c.data.hflip);
  EXPECT_EQ(c.stage_epochs, (std::vector<int64_t>{0, 2, 5}));
  // The paper's rule: lr = blr * effective batch / 256, effective batch counting accumulation.
  EXPECT_DOUBLE_EQ(c.optim.peak_lr(), 1e-3 * 128 * 2 / 256);
  EXPECT_DOUBLE_EQ(c.optim.peak_lr(4), 1e-3 * 128 * 2 * 4 / 256);
  // The resolved YAML reads back to the same config.
  auto again = io::config_from_yaml(c.to_yaml(), "resolved");
  EXPECT_EQ(again.model.depth, 3);
  EXPECT_EQ(again.optim.accum_iter, 2);
  EXPECT_EQ(again.to_yaml(), c.to_yaml());
}

TEST(Config, UnknownKeysNameTheKeyAndFile) {
  test::TempDir dir;
  const std::string recipe = dir.str() + "/bad.yaml";
  io::write_atomic(recipe, "optim:\n  lrr: 1\n");
  const auto e = error_of([&] { io::load_config(recipe); });
  EXPECT_NE(e.find("bad.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown recipe key 'optim.lrr'"), std::string::npos) << e;
  const auto o = error_of([&] { io::load_config("", {"optim.nope=3"}); });
  EXPECT_NE(o.find("unknown recipe key 'optim.nope'"), std::string::npos) << o;
  const auto s = error_of([&] { io::load_config("", {"optim=3"}); });
  EXPECT_NE(s.find("section"), std::string::npos) << s;
  const auto f = error_of([&] { io::load_config("", {"novalue"}); });
  EXPECT_NE(f.find("key=value"), std::string::npos) << f;
}

TEST(Config, BadValuesNameTheKey) {
  const auto t = error_of([&] { io::load_config("", {"optim.batch_size=many"}); });
  EXPECT_NE(t.find("optim.batch_size"), std::string::npos) << t;
  const auto p = error_of([&] { io::load_config("", {"model.name=vit_tiny_patch5_28"}); });
  EXPECT_NE(p.find("not divisible by patch size"), std::string::npos) << p;
  const auto s = error_of([&] { io::load_config("", {"mkd.stage_epochs=[0, 3, 2]"}); });
  EXPECT_NE(s.find("mkd.stage_epochs"), std::string::npos) << s;
  const auto m = error_of([&] { io::load_config("", {"model.name=vit_giant_patch4_28"}); });
  EXPECT_NE(m.find("unknown model"), std::string::npos) << m;
  const auto pr = error_of([&] { io::load_config("", {"train.precision=fp8"}); });
  EXPECT_NE(pr.find("train.precision"), std::string::npos) << pr;
  const auto missing = error_of([&] { io::load_config("/nonexistent/recipe.yaml"); });
  EXPECT_NE(missing.find("/nonexistent/recipe.yaml"), std::string::npos) << missing;
}
