// torch.save's zip container (data.pkl + data/<key> storage records): LibTorch's PyTorchStreamReader over a
// bounds-checked adapter (LibTorch's own in-memory adapter reads out of bounds on a lying zip directory,
// found by fuzz/fuzz_checkpoint.cpp under ASan), and the storages and tensor views a pickle names, every
// size, stride and offset checked. Errors are std::invalid_argument saying what is wrong; the caller adds
// the file and the position.
#pragma once

#include <ATen/core/Tensor.h>
#include <caffe2/serialize/inline_container.h>

#include <memory>
#include <string>
#include <vector>

namespace dbot::io {

// LibTorch's zip reader over `bytes` (which must outlive it), reading only within them.
std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_torch_zip(const std::vector<char>& bytes);

// The record data/<key> as a 1-D tensor of `numel` elements of the storage class `type`
// ("torch.FloatStorage", ...; "torch.storage.UntypedStorage" is bytes); its size must be exactly that.
at::Tensor read_storage(caffe2::serialize::PyTorchStreamReader& zip, const std::string& key, const std::string& type,
                        int64_t numel);

// The view (size, stride, offset) of a 1-D storage tensor, refused unless it lies inside it.
at::Tensor storage_view(const at::Tensor& storage, int64_t offset, const std::vector<int64_t>& size,
                        const std::vector<int64_t>& stride);

}  // namespace dbot::io
