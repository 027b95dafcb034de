// Reading what Python's torch.save writes, from files dbot did not write: released checkpoints of timm,
// MAE, DeiT, DINO and dBOT (`.pth`, `.pt`). They hold `collections.OrderedDict` state dicts (with a
// `_metadata` attribute set by BUILD) and often an `argparse.Namespace`, which LibTorch's Unpickler
// cannot read (it turns an OrderedDict into None and refuses unknown classes). This is a pickle machine for
// the opcodes of protocols 2-5 that builds only data: dicts (OrderedDict included), lists, tuples, strings,
// numbers and tensors (torch._utils._rebuild_tensor_v2 / _rebuild_parameter over the zip's storages).
// Every other Python object becomes an opaque placeholder string "<python object module.Name>": nothing is
// imported or executed. Every length, memo index, stack access, storage size and tensor view is checked;
// a bad file gives a std::runtime_error naming it and the byte or record at fault.
// The zip container and its storages: io/torch_zip.h.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>
#include <vector>

namespace dbot::io {

// The object a torch.save file holds. Dict keys and values are generic IValues; tensors are on the CPU.
c10::IValue read_torch_save(const std::string& path);
c10::IValue parse_torch_save(const std::vector<char>& bytes, const std::string& what);

// True for the placeholder of a Python object this reader does not build.
bool is_opaque(const c10::IValue& v);

}  // namespace dbot::io
