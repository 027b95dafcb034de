// safetensors (https://github.com/huggingface/safetensors), the format model hubs publish weights in:
//   [u64 little-endian N][N bytes of JSON header, space-padded][byte buffer]
//   header = {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
// Offsets are relative to the byte buffer. The reader accepts exactly what the reference implementation
// accepts: header at most 100 MB, starting with '{'; no duplicate names; every entry's byte size equal to
// numel x dtype size (no overflow); the entries tiling the buffer without gaps or overlaps, to its end.
// Anything else is a one-line error naming the file and, where there is one, the tensor.
// The writer produces the reference's exact bytes: tensors by dtype (I64 F64 F32 I32 BF16 F16 I16 I8 U8
// BOOL, so every tensor starts at a multiple of its element size) then name, compact JSON padded with
// spaces to a multiple of 8.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace dbot::io {

struct Safetensors {
  std::map<std::string, at::Tensor> tensors;    // CPU, contiguous, owning their memory
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty when absent)
};

// Parses a whole file's bytes; `what` (the path) prefixes every error.
Safetensors parse_safetensors(const char* data, size_t size, const std::string& what);
// Reads a file (memory-mapped, so a large teacher is not held twice).
Safetensors read_safetensors(const std::string& path);
// Only the "__metadata__" of a file (reads the header, not the tensors; the header is still fully checked).
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

// The file's bytes. Tensors may be on any device, of dtypes F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
std::vector<char> serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata);
// Written atomically (io::write_atomic): a kill leaves the old file or the new one.
void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace dbot::io
