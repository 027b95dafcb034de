// model::softmax_rows_ and softmax_backward_rows_ (both the AVX2 loop and the plain one) against fp64 softmax and its
// gradient written here, hand-checked rows, rows of every tail length around the 8-wide blocks, large and non-finite
// inputs, LibTorch's at::softmax and at::_softmax_backward_data on an attention-shaped tensor, and bad tensors.
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "dbot/model/softmax_rows.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::all_close;

namespace {
// Scores of unit to tens of units, each row shifted by a different offset (up to 1e4: the max subtraction matters).
at::Tensor scores(int64_t rows, int64_t cols) {
  const auto i = at::arange(rows * cols, at::kDouble).view({rows, cols});
  const auto offset = at::arange(rows, at::kDouble).view({rows, 1}).mul(2477.0).remainder(1e4).sub(5e3);
  return (at::sin(i * 0.73 + 0.1) * 9.0 + offset).to(at::kFloat);
}
at::Tensor softmax64(const at::Tensor& s) { return at::softmax(s.to(at::kDouble), -1); }
at::Tensor softmax_backward64(const at::Tensor& dp, const at::Tensor& p) {
  const auto d = dp.to(at::kDouble), q = p.to(at::kDouble);
  return q * (d - (d * q).sum(-1, true));
}
std::vector<float> run(std::vector<float> row, bool simd) {
  model::detail::softmax_rows(row.data(), 1, static_cast<int64_t>(row.size()), simd);
  return row;
}
}  // namespace

// exp(0) : exp(ln 2) : exp(ln 5) = 1 : 2 : 5 -> 1/8, 2/8, 5/8; equal scores share equally; a -inf score gets 0 and
// one 100 below the max gets 0 (exp(-100) is below fp32's normals); scores of 1000 do not overflow.
TEST(SoftmaxRows, HandCheckedRows) {
  const float inf = std::numeric_limits<float>::infinity();
  for (const bool simd : test::simd_choices()) {
    const auto a = run({0.0f, std::log(2.0f), std::log(5.0f)}, simd);
    EXPECT_NEAR(a[0], 0.125f, 1e-7) << simd;
    EXPECT_NEAR(a[1], 0.25f, 1e-7) << simd;
    EXPECT_NEAR(a[2], 0.625f, 1e-7) << simd;
    for (const float p : run(std::vector<float>(11, 3.0f), simd)) EXPECT_NEAR(p, 1.0f / 11, 1e-8) << simd;
    const auto b = run({1000.0f, -inf, 1000.0f, 900.0f, 1000.0f, 1000.0f, 1000.0f, 1000.0f, 1000.0f}, simd);
    EXPECT_EQ(b[1], 0.0f) << simd;
    EXPECT_EQ(b[3], 0.0f) << simd;
    EXPECT_NEAR(b[0], 1.0f / 7, 1e-7) << simd;
    EXPECT_NEAR(b[8], 1.0f / 7, 1e-7) << simd;
    EXPECT_EQ(run({-4.0f}, simd)[0], 1.0f) << simd;
  }
}

// Every length from 1 to 33 (a 1-8 element masked tail after 0-3 full blocks) and the attention's 65 and 197 (300 rows
// of 65: more than one task of rows), each row against fp64: the exp is within 2 ulp and the sum rounds in fp32, so
// within 4e-6 of each probability.
TEST(SoftmaxRows, MatchesFp64AtEveryTailLength) {
  std::vector<std::pair<int64_t, int64_t>> shapes{{7, 65}, {7, 197}, {300, 65}};  // 300 x 65: tasks on two threads
  for (int64_t n = 1; n <= 33; ++n) shapes.push_back({7, n});
  for (const bool simd : test::simd_choices()) {
    for (const auto& [rows, cols] : shapes) {
      const auto s = scores(rows, cols);
      auto out = s.clone();
      model::detail::softmax_rows(out.data_ptr<float>(), rows, cols, simd);
      EXPECT_TRUE(all_close(out, softmax64(s), 4e-6, 1e-9)) << rows << "x" << cols << " simd " << simd;
      EXPECT_TRUE(all_close(out.sum(-1), at::ones({rows}), 0.0, 2e-6)) << rows << "x" << cols << " simd " << simd;
    }
  }
}

// A NaN (in a full 8-lane block or in the masked tail) or a +inf anywhere makes its row NaN, and a row of -inf is
// NaN, as in LibTorch (exp(inf - inf)); the other rows are untouched by them.
TEST(SoftmaxRows, NonFiniteRowsAreNaNAsInLibTorch) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const bool simd : test::simd_choices()) {
    for (const int64_t cols : {3, 9, 17}) {
      auto s = scores(5, cols);
      auto a = s.accessor<float, 2>();
      a[0][0] = nan;  // the first block for 9 and 17 columns, the tail for 3
      a[1][cols / 2] = inf;
      for (int64_t c = 0; c < cols; ++c) a[2][c] = -inf;
      a[3][cols - 1] = nan;  // the masked tail
      const auto expected = at::softmax(s, -1);
      model::detail::softmax_rows(s.data_ptr<float>(), 5, cols, simd);
      for (int64_t r = 0; r < 4; ++r) EXPECT_TRUE(s[r].isnan().all().item<bool>()) << r << " " << cols << " " << simd;
      EXPECT_TRUE(expected.slice(0, 0, 4).isnan().all().item<bool>());
      EXPECT_TRUE(all_close(s[4], softmax64(scores(5, cols)[4]), 4e-6, 1e-9)) << cols << " " << simd;
    }
  }
}

// p = (1/2, 1/2), dp = (1, 0): <dp, p> = 1/2, so dS = (1/2 (1 - 1/2), 1/2 (0 - 1/2)) = (1/4, -1/4). Then every tail
// length and the attention's lengths against fp64.
TEST(SoftmaxRows, BackwardMatchesFp64) {
  for (const bool simd : test::simd_choices()) {
    std::vector<float> p{0.5f, 0.5f}, dp{1.0f, 0.0f};
    model::detail::softmax_backward_rows(dp.data(), p.data(), 1, 2, simd);
    EXPECT_FLOAT_EQ(dp[0], 0.25f) << simd;
    EXPECT_FLOAT_EQ(dp[1], -0.25f) << simd;
    std::vector<int64_t> lengths{65, 197};
    for (int64_t n = 1; n <= 33; ++n) lengths.push_back(n);
    for (const int64_t cols : lengths) {
      const auto probs = at::softmax(scores(5, cols), -1);
      const auto grad = at::cos(at::arange(5 * cols, at::kFloat).view({5, cols}) * 0.37) * 3.0;
      auto out = grad.clone();
      model::detail::softmax_backward_rows(out.data_ptr<float>(), probs.data_ptr<float>(), 5, cols, simd);
      // |dS_i| <= p_i (|dp_i| + |<dp, p>|): fp32 rounding of the dot product is the error, relative to max |dp|.
      EXPECT_TRUE(all_close(out, softmax_backward64(grad, probs), 1e-6, 3e-6)) << "cols " << cols << " simd " << simd;
    }
  }
}

// The tensor functions on the demo's teacher maps [N, h, 17, 17] against LibTorch's own softmax and its backward.
TEST(SoftmaxRows, TensorFormsMatchLibTorch) {
  auto s = scores(3 * 4 * 17, 17).view({3, 4, 17, 17});
  const auto expected = at::softmax(s, -1);
  model::softmax_rows_(s);
  EXPECT_TRUE(all_close(s, expected, 4e-6, 1e-9));
  auto dp = at::sin(at::arange(s.numel(), at::kFloat).view(s.sizes()) * 0.29);
  const auto expected_grad = at::_softmax_backward_data(dp, s, -1, at::kFloat);
  model::softmax_backward_rows_(dp, s);
  EXPECT_TRUE(all_close(dp, expected_grad, 1e-6, 2e-6));
}

TEST(SoftmaxRows, RefusesTensorsItCannotWriteInPlace) {
  auto bf16 = at::zeros({2, 3}, at::kBFloat16);
  EXPECT_THROW(model::softmax_rows_(bf16), std::invalid_argument);
  auto strided = at::zeros({3, 4}).t();
  EXPECT_THROW(model::softmax_rows_(strided), std::invalid_argument);
  auto dp = at::zeros({2, 3});
  EXPECT_THROW(model::softmax_backward_rows_(dp, at::zeros({3, 2})), std::invalid_argument);
  EXPECT_THROW(model::softmax_backward_rows_(dp, at::zeros({2, 3}, at::kDouble)), std::invalid_argument);
}
