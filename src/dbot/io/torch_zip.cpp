#include "dbot/io/torch_zip.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>

namespace dbot::io {

namespace {

// The bytes for LibTorch's zip reader, bounds-checked: a short read makes the zip reader fail with an
// error where LibTorch's own in-memory adapters copied whatever range a lying zip directory asked for
// (found by fuzz/fuzz_checkpoint.cpp under ASan).
class BoundedReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReadAdapter(const std::vector<char>& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    const size_t count = std::min<uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, count);
    return count;
  }

 private:
  const std::vector<char>& bytes_;
};

at::ScalarType storage_dtype(const std::string& type) {
  static const std::map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},         {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},           {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.LongStorage", at::kLong},           {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},         {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},           {"torch.BoolStorage", at::kBool},
      {"torch.storage.UntypedStorage", at::kByte}};
  const auto it = types.find(type);
  if (it == types.end()) throw std::invalid_argument("unsupported storage type " + type);
  return it->second;
}

}  // namespace

std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_torch_zip(const std::vector<char>& bytes) {
  return std::make_unique<caffe2::serialize::PyTorchStreamReader>(std::make_shared<BoundedReadAdapter>(bytes));
}

at::Tensor read_storage(caffe2::serialize::PyTorchStreamReader& zip, const std::string& key, const std::string& type,
                        int64_t numel) {
  const at::ScalarType dtype = storage_dtype(type);
  const std::string record = "data/" + key;
  if (numel < 0 || !zip.hasRecord(record))
    throw std::invalid_argument("storage '" + key + "' is missing from the archive");
  const auto [data, size] = zip.getRecord(record);
  const auto item = static_cast<uint64_t>(c10::elementSize(dtype));
  if (static_cast<uint64_t>(numel) > size / item || static_cast<uint64_t>(numel) * item != size) {
    throw std::invalid_argument("storage '" + key + "' holds " + std::to_string(size) + " bytes, not " +
                                std::to_string(numel) + " elements of " + c10::toString(dtype));
  }
  at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dtype));
  if (size > 0) std::memcpy(t.data_ptr(), data.get(), size);
  return t;
}

at::Tensor storage_view(const at::Tensor& storage, int64_t offset, const std::vector<int64_t>& size,
                        const std::vector<int64_t>& stride) {
  if (size.size() != stride.size()) throw std::invalid_argument("a tensor whose size and stride differ in length");
  if (storage.dim() != 1 || storage.storage_offset() != 0 || offset < 0) {
    throw std::invalid_argument("a tensor rebuilt from bad arguments");
  }
  bool empty = false;
  int64_t last = offset;  // the largest element index the view touches
  for (size_t d = 0; d < size.size(); ++d) {
    int64_t span = 0;
    empty = empty || size[d] == 0;
    if (size[d] < 0 || stride[d] < 0) throw std::invalid_argument("a tensor with a negative size or stride");
    if (size[d] > 0 &&
        (__builtin_mul_overflow(size[d] - 1, stride[d], &span) || __builtin_add_overflow(last, span, &last))) {
      throw std::invalid_argument("a tensor view that overflows");
    }
  }
  if (!empty && last >= storage.numel()) {
    throw std::invalid_argument("a tensor view of " + c10::str(c10::IntArrayRef(size)) +
                                " past the end of its storage (" + std::to_string(storage.numel()) + " elements)");
  }
  return storage.as_strided(size, stride, empty ? 0 : offset);
}

}  // namespace dbot::io
