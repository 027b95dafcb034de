#include "dbot/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "dbot/io/files.h"

namespace dbot::io {

namespace {

constexpr uint64_t kMaxHeaderSize = 100'000'000;  // the reference implementation's limit

// In the reference's Dtype order (its writer puts larger ranks first, then sorts by name).
struct DtypeInfo {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", at::kBool},     {"U8", at::kByte}, {"I8", at::kChar},   {"I16", at::kShort},  {"F16", at::kHalf},
    {"BF16", at::kBFloat16}, {"I32", at::kInt}, {"F32", at::kFloat}, {"F64", at::kDouble}, {"I64", at::kLong},
};
// Valid safetensors dtypes that have no LibTorch type in every version dbot builds against.
const std::set<std::string>& unsupported_dtypes() {
  static const std::set<std::string> names = {"U16",     "U32", "U64",     "F8_E4M3", "F8_E5M2",
                                              "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  return names;
}

[[noreturn]] void fail(const std::string& what, const std::string& message) {
  throw std::runtime_error(what + ": " + message);
}

// Index into kDtypes.
size_t dtype_rank(at::ScalarType type) {
  for (size_t i = 0; i < std::size(kDtypes); ++i)
    if (kDtypes[i].type == type) return i;
  throw std::runtime_error(std::string("safetensors: dtype ") + c10::toString(type) + " cannot be written");
}

uint64_t read_u64_le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// One header entry, checked field by field.
struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

Entry parse_entry(const std::string& name, const nlohmann::json& info, const std::string& what) {
  const std::string where = what + ": tensor '" + name + "'";
  if (!info.is_object()) fail(where, "its header entry is not an object");
  for (const auto& [key, value] : info.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") fail(where, "unknown header field '" + key + "'");
  }
  Entry e;
  e.name = name;
  const auto dtype = info.find("dtype");
  if (dtype == info.end() || !dtype->is_string()) fail(where, "has no \"dtype\" string");
  const auto dname = dtype->get<std::string>();
  const auto known =
      std::find_if(std::begin(kDtypes), std::end(kDtypes), [&](const DtypeInfo& d) { return dname == d.name; });
  if (known == std::end(kDtypes)) {
    if (unsupported_dtypes().count(dname)) fail(where, "dtype " + dname + " is not supported by dbot");
    fail(where, "unknown dtype '" + dname + "'");
  }
  e.type = known->type;
  const auto shape = info.find("shape");
  if (shape == info.end() || !shape->is_array()) fail(where, "has no \"shape\" array");
  uint64_t numel = 1;
  for (const auto& d : *shape) {
    if (!d.is_number_unsigned())
      fail(where, "shape " + shape->dump() + " has an entry that is not a non-negative integer");
    const auto v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v)) {
      fail(where, "shape " + shape->dump() + " overflows");
    }
    numel *= v;
    e.shape.push_back(static_cast<int64_t>(v));
  }
  const auto offsets = info.find("data_offsets");
  if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    fail(where, "\"data_offsets\" must be two non-negative integers");
  }
  e.begin = (*offsets)[0].get<uint64_t>();
  e.end = (*offsets)[1].get<uint64_t>();
  const uint64_t esize = at::elementSize(e.type);
  if (numel > std::numeric_limits<uint64_t>::max() / esize) fail(where, "shape " + shape->dump() + " overflows");
  if (e.end < e.begin || e.end - e.begin != numel * esize) {
    fail(where, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] do not hold " + dname +
                    " " + shape->dump() + " (" + std::to_string(numel * esize) + " bytes)");
  }
  return e;
}

// The header as JSON, refusing duplicate names (nlohmann would keep the last one silently).
nlohmann::json parse_header(const char* p, size_t n, const std::string& what) {
  if (n == 0 || p[0] != '{') fail(what, "the header does not start with '{' (not a safetensors file?)");
  std::string duplicate;
  std::vector<std::set<std::string>> keys;  // the names seen in each open object, by nesting depth
  const nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                         nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::object_start) {
      keys.resize(static_cast<size_t>(depth) + 1);
      keys[depth].clear();
    } else if (event == nlohmann::json::parse_event_t::key && depth >= 1 &&
               static_cast<size_t>(depth) - 1 < keys.size()) {
      if (!keys[depth - 1].insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(p, p + n, on_event);
  } catch (const nlohmann::json::exception& e) {
    fail(what, std::string("the header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) fail(what, "the header names '" + duplicate + "' twice");
  if (!header.is_object()) fail(what, "the header is not a JSON object");
  return header;
}

// A read-only mapping of a whole file, unmapped on scope exit.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("cannot open '" + path + "'", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(path, "not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const std::string reason = std::strerror(errno);
        ::close(fd);
        fail("cannot map '" + path + "'", reason);
      }
      data_ = static_cast<const char*>(p);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// The header's size, checked against the file's size.
uint64_t header_size(const char* data, size_t size, const std::string& what) {
  if (size < 8) fail(what, "file of " + std::to_string(size) + " bytes is too short for a safetensors header");
  const uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderSize) fail(what, "header size " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > size - 8) {
    fail(what, "header size " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
                   " bytes): truncated?");
  }
  return n;
}

std::map<std::string, std::string> parse_metadata(const nlohmann::json& header, const std::string& what) {
  std::map<std::string, std::string> out;
  const auto meta = header.find("__metadata__");
  if (meta == header.end()) return out;
  if (!meta->is_object()) fail(what, "\"__metadata__\" is not an object of strings");
  for (const auto& [key, value] : meta->items()) {
    if (!value.is_string()) fail(what, "\"__metadata__\" entry '" + key + "' is not a string");
    out[key] = value.get<std::string>();
  }
  return out;
}

}  // namespace

Safetensors parse_safetensors(const char* data, size_t size, const std::string& what) {
  const uint64_t n = header_size(data, size, what);
  const auto header = parse_header(data + 8, static_cast<size_t>(n), what);
  Safetensors out;
  out.metadata = parse_metadata(header, what);
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name != "__metadata__") entries.push_back(parse_entry(name, info, what));
  }
  // The entries must tile the buffer: sorted by offset, each starting where the previous ended.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  const uint64_t buffer_size = size - 8 - n;
  uint64_t expected = 0;
  for (const auto& e : entries) {
    if (e.begin != expected) {
      fail(what, "tensor '" + e.name + "' starts at byte " + std::to_string(e.begin) + " of the data, expected " +
                     std::to_string(expected) + " (gap or overlap)");
    }
    expected = e.end;
  }
  if (expected != buffer_size) {
    fail(what, "the tensors cover " + std::to_string(expected) + " bytes of data, the file holds " +
                   std::to_string(buffer_size) + (expected > buffer_size ? " (truncated?)" : " (trailing bytes)"));
  }
  const char* buffer = data + 8 + n;
  for (const auto& e : entries) {
    auto t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), buffer + e.begin, static_cast<size_t>(e.end - e.begin));
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

Safetensors read_safetensors(const std::string& path) {
  const MappedFile file(path);
  return parse_safetensors(file.data(), file.size(), path);
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  const MappedFile file(path);  // only the header's pages are touched
  const uint64_t n = header_size(file.data(), file.size(), path);
  const auto header = parse_header(file.data() + 8, static_cast<size_t>(n), path);
  for (const auto& [name, info] : header.items()) {
    if (name != "__metadata__") parse_entry(name, info, path);  // the entries' own checks, as a full read
  }
  return parse_metadata(header, path);
}

std::vector<char> serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> order;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw std::runtime_error("safetensors: a tensor cannot be named '__metadata__'");
    order.emplace_back(name, t.detach().to(at::kCPU).contiguous());
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {  // names already sorted
    return dtype_rank(a.second.scalar_type()) > dtype_rank(b.second.scalar_type());
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : order) {
    const uint64_t nbytes = t.numel() * t.element_size();
    header[name] = {{"dtype", kDtypes[dtype_rank(t.scalar_type())].name},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("safetensors: a tensor name or metadata value is not UTF-8: ") + e.what());
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  std::vector<char> bytes(8 + json.size() + offset);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, json.data(), json.size());
  char* p = bytes.data() + 8 + json.size();
  for (const auto& [name, t] : order) {
    const size_t nbytes = t.numel() * t.element_size();
    if (nbytes > 0) std::memcpy(p, t.data_ptr(), nbytes);
    p += nbytes;
  }
  return bytes;
}

void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto bytes = serialize_safetensors(tensors, metadata);
  write_atomic(path, bytes.data(), bytes.size());
}

}  // namespace dbot::io
