// io/tensorboard: CRC-32C against its published check value; an event file round-trips and its scalar
// record is byte-for-byte the protobuf/TFRecord framing written out by hand below; a flipped byte and a torn
// tail are errors naming the file and the record; metrics.jsonl lines become "<type>/<field>" scalars.
// (e2e reads a run's events with the tensorboard package's EventAccumulator when it is installed.)
#include <filesystem>

#include "dbot/io/files.h"
#include "dbot/io/metrics.h"
#include "dbot/io/tensorboard.h"
#include "test_util.h"

using namespace dbot;
using dbot::test::error_of;

namespace {
std::string only_file(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path().string());
  EXPECT_EQ(files.size(), 1u);
  return files.empty() ? "" : files[0];
}
}  // namespace

TEST(TensorBoard, Crc32cCheckValue) {
  EXPECT_EQ(io::crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C catalogue's check value
  EXPECT_EQ(io::crc32c("", 0), 0u);
}

TEST(TensorBoard, EventsRoundTripWithTheirFraming) {
  test::TempDir dir;
  std::string path;
  {
    io::EventWriter w(dir.str() + "/tb");
    w.add_scalar("step/loss", 0.5, 7, 123.25);
    w.add_scalar("epoch/lr", 1e-3, 8, 124.0);
    path = w.path();
  }
  EXPECT_NE(path.find("/tb/events.out.tfevents."), std::string::npos) << path;
  std::string version;
  const auto events = io::read_scalar_events(path, &version);
  EXPECT_EQ(version, "brain.Event:2");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].tag, "step/loss");
  EXPECT_EQ(events[0].value, 0.5f);
  EXPECT_EQ(events[0].step, 7);
  EXPECT_EQ(events[0].wall_time, 123.25);
  EXPECT_EQ(events[1].tag, "epoch/lr");
  EXPECT_EQ(events[1].value, 1e-3f);
  EXPECT_EQ(events[1].step, 8);

  // The scalar event by hand: Event{1: wall_time (fixed64), 2: step (varint), 5: Summary{1: Value{1: tag,
  // 2: simple_value (fixed32)}}}; 123.25 = 0x405ED00000000000, 0.5f = 0x3F000000, little endian.
  const std::string value = std::string("\x0a\x09step/loss\x15\x00\x00\x00\x3f", 16);
  const std::string summary = std::string("\x0a\x10", 2) + value;
  const std::string event = std::string("\x09\x00\x00\x00\x00\x00\xd0\x5e\x40\x10\x07\x2a\x12", 13) + summary;
  const auto bytes = io::read_file(path);
  uint64_t first_len = 0;
  std::memcpy(&first_len, bytes.data(), 8);
  const size_t second = 16 + first_len;  // the second record: the first scalar
  uint64_t len = 0;
  std::memcpy(&len, bytes.data() + second, 8);
  ASSERT_EQ(len, event.size());
  EXPECT_EQ(std::string(bytes.data() + second + 12, len), event);

  auto corrupt = bytes;
  corrupt[second + 12 + 14] ^= 1;  // a byte of the event
  io::write_atomic(path, corrupt.data(), corrupt.size());
  EXPECT_NE(error_of([&] { io::read_scalar_events(path); }).find(": record 1: data CRC mismatch"), std::string::npos);
  io::write_atomic(path, bytes.data(), bytes.size() - 3);  // a torn last record
  EXPECT_NE(error_of([&] { io::read_scalar_events(path); }).find(": record 2: truncated"), std::string::npos);
}

TEST(TensorBoard, MetricsLinesBecomeScalars) {
  test::TempDir dir;
  {
    io::JsonlWriter w(dir.str() + "/metrics.jsonl", dir.str() + "/tb");
    w.write({{"type", "step"}, {"epoch", 0}, {"iteration", 5}, {"global_iteration", 5}, {"loss", 0.25}, {"note", "x"}});
    w.write({{"type", "epoch"}, {"epoch", 3}, {"lr", 0.5}});
  }
  const auto events = io::read_scalar_events(only_file(dir.str() + "/tb"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].tag, "step/loss");
  EXPECT_EQ(events[0].step, 5);
  EXPECT_EQ(events[0].value, 0.25f);
  EXPECT_EQ(events[1].tag, "epoch/lr");
  EXPECT_EQ(events[1].step, 3);
}
