// The analysis tools (eval/analyze.h) on closed forms: patch distances, uniform / identity / single-key
// attention maps, token matrices with known singular values; the unfused attention maps against the fused
// forward; a tiny encoder whose attention is uniform by construction; and the files write_analysis makes.
#include <ATen/Parallel.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dbot/eval/analyze.h"
#include "dbot/recipe/recipe.h"
#include "test_util.h"

using namespace dbot;
using test::all_close;

namespace {
// Mean over queries of the summed distance to every key, computed by plain loops (the uniform-map value times
// 1 + L is this sum over keys).
double mean_pair_distance_sum(int64_t g, int64_t p) {
  double total = 0;
  for (int64_t i = 0; i < g * g; ++i)
    for (int64_t j = 0; j < g * g; ++j)
      total += p * std::hypot(static_cast<double>(i / g - j / g), static_cast<double>(i % g - j % g));
  return total / static_cast<double>(g * g);
}
}  // namespace

TEST(Analyze, PatchDistancesOfATwoByTwoGrid) {
  const double d = 16 * std::sqrt(2.0);
  auto expected =
      at::tensor({0.0, 16.0, 16.0, d, 16.0, 0.0, d, 16.0, 16.0, d, 0.0, 16.0, d, 16.0, 16.0, 0.0}, at::kDouble)
          .reshape({4, 4});
  EXPECT_TRUE(all_close(eval::patch_distances(2, 16), expected, 0, 1e-12));
}

TEST(Analyze, AttentionDistanceClosedForms) {
  const int64_t g = 14, p = 16, T = 1 + g * g;
  // Uniform over all 1 + L tokens (a random ViT): the CLS column's share is dropped, not renormalized.
  auto uniform = at::full({2, 3, T, T}, 1.0 / static_cast<double>(T), at::kDouble);
  const double u = mean_pair_distance_sum(g, p) / static_cast<double>(T);
  EXPECT_NEAR(u, 115.0, 1.5);  // METHOD.md: ~115 px at 224/16
  auto d = eval::attention_distance_sum(uniform, g, p);
  EXPECT_TRUE(all_close(d, at::full({3}, 2 * u, at::kDouble), 1e-12, 1e-9));  // summed over 2 images
  // Each token attends to itself, or every query to the CLS token only: distance 0.
  auto identity = at::eye(T, at::kDouble).expand({1, 2, T, T});
  EXPECT_TRUE(all_close(eval::attention_distance_sum(identity, g, p), at::zeros({2}, at::kDouble), 0, 1e-12));
  auto to_cls = at::zeros({1, 1, T, T}, at::kDouble);
  to_cls.select(3, 0).fill_(1.0);
  EXPECT_NEAR(eval::attention_distance_sum(to_cls, g, p).item<double>(), 0.0, 1e-12);
  // 2x2 grid, every query on patch 0: (0 + 16 + 16 + 16 sqrt 2) / 4.
  auto to_first = at::zeros({1, 1, 5, 5}, at::kDouble);
  to_first.select(3, 1).fill_(1.0);
  EXPECT_NEAR(eval::attention_distance_sum(to_first, 2, 16).item<double>(), (32 + 16 * std::sqrt(2.0)) / 4, 1e-12);
}

TEST(Analyze, SingularValueSharesClosedForms) {
  // Identical tokens (any length): rank 1, the top singular value is everything.
  auto same = at::tensor({3.0, 4.0}, at::kDouble).expand({1, 6, 2});
  EXPECT_TRUE(all_close(eval::singular_value_share_sum(same), at::ones({5}, at::kDouble), 0, 1e-12));
  // Tokens e1, 2 e1, 5 e2: normalized, M^T M = diag(2, 1), s = (sqrt 2, 1).
  auto m = at::tensor({1.0, 0.0, 2.0, 0.0, 0.0, 5.0}, at::kDouble).reshape({1, 3, 2});
  const double s1 = std::sqrt(2.0) / (std::sqrt(2.0) + 1);
  EXPECT_TRUE(
      all_close(eval::singular_value_share_sum(m), at::tensor({s1, 1.0, 1.0, 1.0, 1.0}, at::kDouble), 0, 1e-12));
  // Four orthogonal tokens of different lengths in R^8: four equal singular values, shares k / 4; two images sum.
  auto orth = (at::eye(8, at::kDouble).slice(0, 0, 4) * at::tensor({1.0, 2.0, 0.5, 7.0}, at::kDouble).unsqueeze(1))
                  .expand({2, 4, 8});
  EXPECT_TRUE(all_close(eval::singular_value_share_sum(orth), 2 * at::tensor({0.25, 0.5, 0.75, 1.0, 1.0}, at::kDouble),
                        0, 1e-12));
}

TEST(Analyze, MatchesTheOfficialAnalysisCode) {
  // tests/reference/make_analysis_golden.py: analysis/analysis.py's formulas on timm's modules, same weights/images.
  model::VisionTransformer vit(test::tiny_vit());
  test::fill_parameters(*vit);
  eval::Analysis sums;
  eval::accumulate(sums, vit, test::given_images());
  const auto a = eval::finish(sums);
  EXPECT_EQ(a.images, 2);
  const std::string path = DBOT_ANALYSIS_JSON;
  EXPECT_TRUE(all_close(a.attention_distance, test::json_tensor(path, "attention_distance", {2, 2}), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(a.sv_share, test::json_tensor(path, "sv_share", {2, 5}), 1e-5, 1e-6));
}

TEST(Analyze, UnfusedAttentionMapsGiveTheFusedOutput) {
  model::VisionTransformer vit(test::tiny_vit());
  test::fill_parameters(*vit);
  at::NoGradGuard no_grad;
  auto& attn = vit->blocks.blocks[0]->attn;
  const auto x = vit->embed_tokens(test::given_images());  // [2, 17, 16]
  const auto probs = attn->attention_probs(x);             // [2, 2, 17, 17]
  EXPECT_TRUE(all_close(probs.sum(-1), at::ones({2, 2, 17}), 0, 1e-6));
  const int64_t N = 2, T = 17, D = 16, h = 2;
  auto v = attn->qkv(x).reshape({N, T, 3, h, D / h}).permute({2, 0, 3, 1, 4})[2];  // [N, h, T, D/h]
  auto by_hand = attn->proj(at::matmul(probs, v).transpose(1, 2).reshape({N, T, D}));
  EXPECT_TRUE(all_close(by_hand, attn->forward(x), 1e-5, 1e-6));
}

TEST(Analyze, EncoderWithConstantScoresIsUniformAndFilesAreWritten) {
  at::set_num_threads(1);
  test::TempDir data, out;
  test::write_fake_fmnist(data.str(), 32, 12, 8);
  const auto r = recipe::load_config("", {"data.path=" + data.str(), "data.crop_pct=1.0"});
  model::VisionTransformer vit(test::tiny_vit(/*in_chans=*/1));
  test::fill_parameters(*vit);
  {
    at::NoGradGuard no_grad;  // q = k = 0 in every block: softmax of constant scores is uniform over 17 tokens
    for (auto& b : vit->blocks.blocks) b->attn->qkv->weight.slice(0, 0, 32).zero_(), b->attn->qkv->bias.zero_();
  }
  auto source = data::open_source(r.data, "eval_val");
  auto a = eval::analyze_encoder(vit, source, r.data, 5, 7, core::Runtime{});
  EXPECT_EQ(a.images, 7);  // the first 7 of 12, in batches of 5
  const double u = mean_pair_distance_sum(4, 2) / 17.0;
  EXPECT_TRUE(all_close(a.attention_distance, at::full({2, 2}, u, at::kDouble), 1e-6, 0));  // fp32 softmax
  EXPECT_EQ(a.sv_share.sizes(), (at::IntArrayRef{2, 5}));
  EXPECT_TRUE((a.sv_share.select(1, 0) > 0).all().item<bool>());
  EXPECT_TRUE((a.sv_share.select(1, 4) <= 1 + 1e-9).all().item<bool>());
  EXPECT_TRUE((a.sv_share.slice(1, 1) >= a.sv_share.slice(1, 0, 4) - 1e-12).all().item<bool>());  // increasing in k

  a.label = "uniform \"q = k = 0\"";
  auto b = a;
  b.label = "second";
  const auto files = eval::write_analysis({a, b}, out.str());
  std::ifstream in(out.str() + "/analysis.json");
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["analyses"].size(), 2u);
  EXPECT_EQ(j["analyses"][0]["label"], a.label);
  EXPECT_NEAR(j["analyses"][0]["attention_distance"][1][0].get<double>(), u, 1e-6 * u);
  EXPECT_EQ(j["analyses"][1]["sv_share"].size(), 2u);
  if (files.note.empty()) {  // gnuplot present (scripts/install-deps.sh installs it): real PNG files
    for (const char* f : {"attention_distance.png", "singular_values.png"}) {
      std::ifstream png(out.str() + "/" + f, std::ios::binary);
      char magic[4] = {};
      png.read(magic, 4);
      EXPECT_EQ(std::string(magic + 1, 3), "PNG") << f;
    }
  } else {
    EXPECT_NE(files.note.find("gnuplot not found"), std::string::npos);
    EXPECT_TRUE(std::filesystem::exists(out.str() + "/attention_distance.gp"));
  }
}
