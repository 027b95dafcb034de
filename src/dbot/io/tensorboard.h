// TensorBoard event files: the scalars of metrics.jsonl in the format TensorBoard reads, written without a
// protobuf or TensorFlow dependency. The format (TensorFlow's TFRecord of Event protobufs):
//   record   = u64 length (little endian) | u32 masked_crc32c(the 8 length bytes) | data | u32 masked_crc32c(data)
//   masked   = ((crc >> 15) | (crc << 17)) + 0xa282ead8, crc = CRC-32C (Castagnoli)
//   data     = Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary  = { repeated Value value = 1; }   Value = { string tag = 1; float simple_value = 2; }
// A file starts with Event{wall_time, file_version "brain.Event:2"}. Every record is flushed when written (as
// metrics.jsonl's lines): a killed run keeps all but at most a torn last record.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace dbot::io {

// CRC-32C (polynomial 0x1EDC6F41, reflected), as TFRecord uses; crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const void* data, size_t size);

class EventWriter {
 public:
  // Creates <dir>/events.out.tfevents.<unix seconds>.<host>.<pid> (the folder too) and writes its first event.
  explicit EventWriter(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::FILE* file_ = nullptr;
};

struct ScalarEvent {
  std::string tag;
  float value = 0;
  int64_t step = 0;
  double wall_time = 0;
};

// The scalars of an event file, in order; every length and CRC checked (an error names the file and the
// record). `file_version` receives the first event's version string.
std::vector<ScalarEvent> read_scalar_events(const std::string& path, std::string* file_version = nullptr);

}  // namespace dbot::io
