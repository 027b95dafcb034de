// Dynamic loss scaling (fp16) with torch.amp.GradScaler's rule, checked by hand: scale the loss, divide the
// gradients back, skip a step with a non-finite gradient and halve the scale, double it after
// growth_interval good steps.
#include "dbot/train/loss_scaler.h"
#include "test_util.h"

using namespace dbot;

TEST(LossScaler, DisabledIsTheIdentity) {
  train::LossScaler s(false);
  auto loss = at::tensor(3.0f);
  EXPECT_TRUE(s.scale_loss(loss).equal(loss));
  std::vector<at::Tensor> grads = {at::tensor({INFINITY})};
  EXPECT_TRUE(s.unscale_and_check(grads));  // not checked: bf16/fp32 never skip
  EXPECT_EQ(s.scale(), 1.0);
}

TEST(LossScaler, UnscalesAndSkipsNonFiniteSteps) {
  train::LossScaler s(true, /*init_scale=*/1024.0, 2.0, 0.5, /*growth_interval=*/3);
  EXPECT_EQ(s.scale_loss(at::tensor(0.5f)).item<float>(), 512.0f);
  std::vector<at::Tensor> good = {at::tensor({2048.0f, -1024.0f}), at::tensor({512.0f})};
  EXPECT_TRUE(s.unscale_and_check(good));
  EXPECT_TRUE(good[0].equal(at::tensor({2.0f, -1.0f})));
  EXPECT_EQ(good[1].item<float>(), 0.5f);
  s.update(true);
  EXPECT_EQ(s.state().growth_tracker, 1);

  std::vector<at::Tensor> bad = {at::tensor({1.0f, NAN}), at::tensor({1.0f})};
  EXPECT_FALSE(s.unscale_and_check(bad));
  s.update(false);
  EXPECT_EQ(s.scale(), 512.0);  // backoff 0.5
  EXPECT_EQ(s.state().growth_tracker, 0);
  std::vector<at::Tensor> inf = {at::tensor({-INFINITY})};
  EXPECT_FALSE(s.unscale_and_check(inf));

  for (int i = 0; i < 3; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 1024.0);  // growth after 3 good steps
  EXPECT_EQ(s.state().growth_tracker, 0);

  train::LossScaler restored(true);
  restored.load_state(s.state());
  EXPECT_EQ(restored.scale(), 1024.0);
}
