#include "dbot/io/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "dbot/io/files.h"

namespace dbot::io {

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected 0x1EDC6F41
      t[i] = c;
    }
    return t;
  }();
  return table;
}

uint32_t masked_crc(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// Protobuf wire format: keys are (field << 3) | wire type; 0 varint, 1 fixed 64-bit, 2 length-delimited,
// 5 fixed 32-bit.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
template <typename T>
void fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // little endian (x86, ARM)
  out.append(b, sizeof(T));
}
void bytes_field(std::string& out, int field, const std::string& value) {
  varint(out, static_cast<uint64_t>(field) << 3 | 2);
  varint(out, value.size());
  out += value;
}

std::string event(double wall_time, int64_t step) {
  std::string e;
  varint(e, 1 << 3 | 1);
  fixed(e, wall_time);
  varint(e, 2 << 3 | 0);
  varint(e, static_cast<uint64_t>(step));
  return e;
}

// A reader of one protobuf message: each field as (number, wire type, varint or bytes).
struct Fields {
  const std::string& data;
  const std::string& what;
  size_t i = 0;
  [[noreturn]] void bad() const { throw std::runtime_error(what + ": malformed Event protobuf"); }
  uint64_t read_varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (i >= data.size()) bad();
      const auto b = static_cast<uint8_t>(data[i++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad();
  }
  std::string take(size_t n) {
    if (n > data.size() - i) bad();
    std::string s = data.substr(i, n);
    i += n;
    return s;
  }
  // Calls f(field, wire, varint value, bytes) for every field.
  template <typename F>
  void each(F&& f) {
    while (i < data.size()) {
      const uint64_t key = read_varint();
      const int wire = static_cast<int>(key & 7), field = static_cast<int>(key >> 3);
      uint64_t v = 0;
      std::string b;
      if (wire == 0)
        v = read_varint();
      else if (wire == 1)
        b = take(8);
      else if (wire == 2)
        b = take(read_varint());
      else if (wire == 5)
        b = take(4);
      else
        bad();
      f(field, wire, v, b);
    }
  }
};

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto& table = crc_table();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

EventWriter::EventWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create the folder '" + dir + "': " + ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const double wall = std::chrono::duration<double>(now).count();
  path_ = dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(wall)) + "." + host + "." +
          std::to_string(::getpid());
  file_ = std::fopen(path_.c_str(), "ab");
  if (file_ == nullptr) throw std::runtime_error("cannot open '" + path_ + "' for writing");
  std::string first = event(wall, 0);
  bytes_field(first, 3, "brain.Event:2");
  write_record(first);
}

EventWriter::~EventWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  std::string v;
  bytes_field(v, 1, tag);
  varint(v, 2 << 3 | 5);
  fixed(v, static_cast<float>(value));
  std::string summary;
  bytes_field(summary, 1, v);
  std::string e = event(wall_time, step);
  bytes_field(e, 5, summary);
  write_record(e);
}

void EventWriter::write_record(const std::string& data) {
  std::string rec;
  fixed(rec, static_cast<uint64_t>(data.size()));
  fixed(rec, masked_crc(rec.data(), 8));
  rec += data;
  fixed(rec, masked_crc(data.data(), data.size()));
  if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size() || std::fflush(file_) != 0) {
    throw std::runtime_error("cannot write to '" + path_ + "' (disk full?)");
  }
}

std::vector<ScalarEvent> read_scalar_events(const std::string& path, std::string* file_version) {
  const std::vector<char> bytes = read_file(path);
  std::vector<ScalarEvent> out;
  size_t i = 0;
  for (int64_t record = 0; i < bytes.size(); ++record) {
    const std::string what = path + ": record " + std::to_string(record);
    auto u = [&](size_t at, size_t n) {
      uint64_t v = 0;
      std::memcpy(&v, bytes.data() + at, n);
      return v;
    };
    if (bytes.size() - i < 12) throw std::runtime_error(what + ": truncated header");
    const uint64_t len = u(i, 8);
    if (static_cast<uint32_t>(u(i + 8, 4)) != masked_crc(bytes.data() + i, 8)) {
      throw std::runtime_error(what + ": length CRC mismatch");
    }
    if (len > bytes.size() - i - 12 || bytes.size() - i - 12 - len < 4) throw std::runtime_error(what + ": truncated");
    const std::string data(bytes.data() + i + 12, len);
    if (static_cast<uint32_t>(u(i + 12 + len, 4)) != masked_crc(data.data(), data.size())) {
      throw std::runtime_error(what + ": data CRC mismatch");
    }
    i += 16 + len;
    ScalarEvent base;
    std::vector<std::string> summaries;
    Fields{data, what}.each([&](int field, int wire, uint64_t v, const std::string& b) {
      if (field == 1 && wire == 1) std::memcpy(&base.wall_time, b.data(), 8);
      if (field == 2 && wire == 0) base.step = static_cast<int64_t>(v);
      if (field == 3 && wire == 2 && file_version != nullptr && record == 0) *file_version = b;
      if (field == 5 && wire == 2) summaries.push_back(b);
    });
    for (const auto& summary : summaries) {
      Fields{summary, what}.each([&](int f, int w, uint64_t, const std::string& value) {  // Summary.value
        if (f != 1 || w != 2) return;
        ScalarEvent s = base;
        bool scalar = false;
        Fields{value, what}.each([&](int vf, int vw, uint64_t, const std::string& x) {
          if (vf == 1 && vw == 2) s.tag = x;
          if (vf == 2 && vw == 5) {
            std::memcpy(&s.value, x.data(), 4);
            scalar = true;
          }
        });
        if (scalar) out.push_back(s);
      });
    }
  }
  return out;
}

}  // namespace dbot::io
