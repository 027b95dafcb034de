// Checkpoints: exact round trip, and clear errors for truncated or foreign files.
#include <torch/serialize.h>

#include "dbot/io/files.h"
#include "dbot/train/checkpoint.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {
model::VitConfig small_vit() { return test::tiny_vit(1); }
mkd::MkdConfig small_mkd() { return test::tiny_mkd(); }
}  // namespace

TEST(Checkpoint, RoundTripRestoresEverything) {
  test::TempDir dir;
  mkd::Distiller d(small_vit(), small_mkd(), 5);
  train::AdamW opt(d.named_student_parameters(), {});
  auto gen = core::derive_generator(5, core::RngPurpose::kStep, 0);
  d.forward(at::randn({4, 1, 8, 8}), gen).backward();
  opt.step(1e-3);
  d.next_stage();  // stage 2, full-depth teacher
  const std::string path = dir.str() + "/ckpt.pt";
  train::TrainingState state;
  state.optimizer = &opt;
  train::save_checkpoint(path, d, 7, 3, "model:\n  depth: 2\n", state);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path), {}), 1);  // no temporary left

  const auto c = train::load_checkpoint(path);
  EXPECT_EQ(c.stage, 2);
  EXPECT_EQ(c.epoch, 7);
  EXPECT_EQ(c.iteration, 3);
  EXPECT_EQ(c.seed, 5u);
  EXPECT_EQ(c.config, "model:\n  depth: 2\n");
  EXPECT_EQ(c.optimizer.step, 1);
  EXPECT_TRUE(c.grad_accum.empty());
  EXPECT_FALSE(c.has_loss_scaler);
  EXPECT_TRUE(c.model.count("blocks.1.mlp.fc2.weight") && c.model.count("decoder_predp.weight") &&
              c.model.count("mask_token") && c.model.count("pos_embed") && c.model.count("decoder_pos_embed"));
  EXPECT_EQ(c.teacher.count("decoder_embed.weight"), 0u);

  mkd::Distiller fresh(small_vit(), small_mkd(), 5);
  train::AdamW fresh_opt(fresh.named_student_parameters(), {});
  train::restore(fresh, &fresh_opt, nullptr, c, path);
  EXPECT_EQ(fresh.stage(), 2);
  const auto a = d.named_student_parameters(), b = fresh.named_student_parameters();
  const auto sa = opt.state(), sb = fresh_opt.state();
  for (size_t i = 0; i < a.size(); ++i) {
    const auto& name = a[i].first;
    EXPECT_TRUE(a[i].second.equal(b[i].second)) << name;
    EXPECT_TRUE(sa.exp_avg.at(name).equal(sb.exp_avg.at(name))) << name;
    EXPECT_TRUE(sa.exp_avg_sq.at(name).equal(sb.exp_avg_sq.at(name))) << name;
  }
  for (const auto& item : d.teacher->named_parameters()) {
    EXPECT_TRUE(item.value().equal(*fresh.teacher->named_parameters().find(item.key()))) << item.key();
  }
  EXPECT_EQ(fresh_opt.step_count(), 1);
}

TEST(Checkpoint, ZeroBlockTeacherRestoresWithItsDepth) {
  test::TempDir dir;
  auto m = small_mkd();
  m.teacher_depth = 0;
  mkd::Distiller d(small_vit(), m, 1);
  train::save_checkpoint(dir.str() + "/z.pt", d, 0, 0, "");
  const auto c = train::load_checkpoint(dir.str() + "/z.pt");
  EXPECT_EQ(model::count_blocks(c.teacher), 0);
  EXPECT_FALSE(c.has_optimizer);
  mkd::Distiller fresh(small_vit(), small_mkd(), 1);
  train::restore(fresh, nullptr, nullptr, c, "z.pt");
  EXPECT_EQ(fresh.teacher->blocks.blocks.size(), 0u);
}

TEST(Checkpoint, BadFilesAreClearErrors) {
  test::TempDir dir;
  mkd::Distiller d(small_vit(), small_mkd(), 1);
  const std::string good = dir.str() + "/good.pt";
  train::save_checkpoint(good, d, 0, 0, "");
  const auto bytes = io::read_file(good);
  const std::string cut = dir.str() + "/cut.pt";
  io::write_atomic(cut, bytes.data(), bytes.size() / 2);
  const auto e1 = error_of([&] { train::load_checkpoint(cut); });
  EXPECT_NE(e1.find("cut.pt"), std::string::npos) << e1;
  EXPECT_NE(e1.find("not a readable checkpoint"), std::string::npos) << e1;

  c10::impl::GenericDict other(c10::StringType::get(), c10::AnyType::get());
  other.insert("weights", at::zeros({2}));
  const auto foreign = torch::pickle_save(other);
  io::write_atomic(dir.str() + "/foreign.pt", foreign.data(), foreign.size());
  const auto e2 = error_of([&] { train::load_checkpoint(dir.str() + "/foreign.pt"); });
  EXPECT_NE(e2.find("not a dbot checkpoint (no 'format_version')"), std::string::npos) << e2;

  // A field of the wrong type (what a fuzzer finds first) is a runtime_error naming the file, not a c10::Error.
  c10::impl::GenericDict typed(c10::StringType::get(), c10::AnyType::get());
  typed.insert("format_version", std::string("two"));
  const auto mistyped = torch::pickle_save(typed);
  io::write_atomic(dir.str() + "/mistyped.pt", mistyped.data(), mistyped.size());
  try {
    train::load_checkpoint(dir.str() + "/mistyped.pt");
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("mistyped.pt: malformed dbot checkpoint"), std::string::npos) << e.what();
  }

  // The input with which the fuzzer made LibTorch's in-memory zip adapter read out of bounds (the zip
  // directory points past the end of the file): now a clean error (ASan-checked by scripts/fuzz.sh).
  const std::string past_end = DBOT_TEST_DATA "/fuzz/checkpoint-zip-directory-past-end.pt";
  const auto e5 = error_of([&] { train::load_checkpoint(past_end); });
  EXPECT_NE(e5.find("checkpoint-zip-directory-past-end.pt: not a readable checkpoint"), std::string::npos) << e5;

  // The fuzzer's file whose pickle claims a 4 GB string (LibTorch's Unpickler zero-filled 4 GB before failing):
  // refused before unpickling.
  const std::string claims = DBOT_TEST_DATA "/fuzz/checkpoint-pickle-4gb-string.pt";
  const auto e6 = error_of([&] { train::load_checkpoint(claims); });
  EXPECT_NE(e6.find("checkpoint-pickle-4gb-string.pt: not a readable checkpoint"), std::string::npos) << e6;
  EXPECT_NE(e6.find("declares 4294967295 bytes"), std::string::npos) << e6;

  const auto e3 = error_of([&] { train::load_checkpoint(dir.str() + "/absent.pt"); });
  EXPECT_NE(e3.find("absent.pt"), std::string::npos) << e3;

  // A state dict of the wrong architecture names the tensor and both shapes.
  auto c = train::load_checkpoint(good);
  auto wide = small_vit();
  wide.embed_dim = 32;
  mkd::Distiller other_arch(wide, small_mkd(), 1);
  const auto e4 = error_of([&] { train::restore(other_arch, nullptr, nullptr, c, good); });
  EXPECT_NE(e4.find("has shape"), std::string::npos) << e4;
}
