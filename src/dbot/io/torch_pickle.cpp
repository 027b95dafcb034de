#include "dbot/io/torch_pickle.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include "dbot/io/files.h"
#include "dbot/io/torch_zip.h"

namespace dbot::io {

namespace {

// A class or function named by GLOBAL / STACK_GLOBAL, on the stack until REDUCE or NEWOBJ uses it. The
// \x01 keeps it apart from text a file holds; a forged one only reaches the checked paths below.
const std::string kGlobal = "\x01global:";
const std::string kOpaque = "<python object ";
constexpr int kMaxDepth = 200;  // nesting of containers (IValue destruction recurses)

class Machine {
 public:
  Machine(const uint8_t* p, size_t n, const std::string& what, caffe2::serialize::PyTorchStreamReader& zip)
      : p_(p), n_(n), what_(what), zip_(zip) {}

  c10::IValue run() {
    while (true) {
      at_ = i_;
      const uint8_t op = *take(1);
      if (op == '.') return pop();  // STOP
      step(op);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw std::runtime_error(what_ + ": data.pkl byte " + std::to_string(at_) + ": " + msg);
  }
  const uint8_t* take(size_t k) {
    if (k > n_ - i_) fail("the pickle ends early");
    const uint8_t* q = p_ + i_;
    i_ += k;
    return q;
  }
  uint64_t le(size_t k) {
    const uint8_t* q = take(k);
    uint64_t v = 0;
    for (size_t b = 0; b < k; ++b) v |= static_cast<uint64_t>(q[b]) << (8 * b);
    return v;
  }
  int64_t signed_le(uint64_t k) {  // LONG1/LONG4: two's complement, at most 8 bytes here
    if (k > 8) fail("an integer of " + std::to_string(k) + " bytes");
    if (k == 0) return 0;
    uint64_t v = le(k);
    if (k < 8 && (v >> (8 * k - 1)) & 1) v |= ~uint64_t{0} << (8 * k);
    return static_cast<int64_t>(v);
  }
  std::string text(uint64_t len) {
    if (len > n_ - i_) fail("declares " + std::to_string(len) + " bytes, " + std::to_string(n_ - i_) + " remain");
    return std::string(reinterpret_cast<const char*>(take(len)), len);
  }
  std::string line() {
    const size_t start = i_;
    while (i_ < n_ && p_[i_] != '\n') ++i_;
    if (i_ >= n_) fail("the pickle ends early");
    return std::string(reinterpret_cast<const char*>(p_ + start), i_++ - start);
  }
  int64_t parse_int(const std::string& s) {
    try {
      size_t used = 0;
      const int64_t v = std::stoll(s, &used);
      if (used == s.size() || (used + 1 == s.size() && s.back() == 'L')) return v;
    } catch (const std::exception&) {
    }
    fail("bad integer '" + s.substr(0, 40) + "'");
  }

  void push(c10::IValue v) { stack_.push_back(std::move(v)); }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  c10::IValue pop() {
    if (stack_.size() <= floor()) fail("stack underflow");
    c10::IValue v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  c10::IValue& top() {
    if (stack_.size() <= floor()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<c10::IValue> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<c10::IValue> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(m)),
                                   std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  c10::IValue get(uint64_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo entry " + std::to_string(key) + " was never stored");
    return it->second;
  }

  int depth(const c10::IValue& v) const {
    if (!v.isGenericDict() && !v.isList() && !v.isTuple()) return 0;
    const auto it = depth_.find(v.internalToPointer());
    return it == depth_.end() ? 1 : it->second;
  }
  void nest(const c10::IValue& container, const c10::IValue& child) {
    const int d = depth(child) + 1;
    if (d > kMaxDepth) fail("containers nested deeper than " + std::to_string(kMaxDepth));
    int& mine = depth_[container.internalToPointer()];
    mine = std::max({mine, d, 1});
  }
  c10::IValue tuple(std::vector<c10::IValue> items) {
    auto t = c10::IValue(c10::ivalue::Tuple::create(items));
    for (const auto& item : items) nest(t, item);
    return t;
  }
  static c10::IValue new_dict() {
    return c10::IValue(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
  }
  void append(c10::IValue& list, c10::IValue v) {
    if (!list.isList()) fail("APPEND to something that is not a list");
    nest(list, v);
    list.toList().push_back(std::move(v));
  }
  void setitem(c10::IValue& dict, c10::IValue k, c10::IValue v) {
    if (!dict.isGenericDict()) fail("SETITEM on something that is not a dict");
    if (!k.isString() && !k.isInt() && !k.isBool() && !k.isDouble() && !k.isNone())
      fail("a dict key of an unsupported type");
    nest(dict, v);
    dict.toGenericDict().insert_or_assign(std::move(k), std::move(v));
  }
  static std::string global_name(const c10::IValue& v) {
    if (!v.isString() || v.toStringRef().rfind(kGlobal, 0) != 0) return "";
    return v.toStringRef().substr(kGlobal.size());
  }

  void step(uint8_t op);
  c10::IValue reduce(const c10::IValue& callable, const c10::IValue& args);
  c10::IValue persistent_load(const c10::IValue& pid);
  c10::IValue rebuild_tensor(const std::vector<c10::IValue>& a);

  const uint8_t* p_;
  size_t n_, i_ = 0, at_ = 0;
  const std::string& what_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::vector<c10::IValue> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, c10::IValue> memo_;
  std::unordered_map<std::string, at::Tensor> storages_;
  std::unordered_map<const void*, int> depth_;
};

void Machine::step(uint8_t op) {
  // clang-format off
  switch (op) {
    case 0x80: take(1); break;  // PROTO
    case 0x95: take(8); break;  // FRAME
    case '(': marks_.push_back(stack_.size()); break;
    case '0': pop(); break;
    case '1': pop_mark(); break;
    case '2': push(top()); break;
    case 'N': push(c10::IValue()); break;
    case 0x88: push(true); break;
    case 0x89: push(false); break;
    case 'J': push(static_cast<int64_t>(static_cast<int32_t>(le(4)))); break;
    case 'K': push(static_cast<int64_t>(le(1))); break;
    case 'M': push(static_cast<int64_t>(le(2))); break;
    case 0x8a: push(signed_le(le(1))); break;  // LONG1
    case 0x8b: push(signed_le(le(4))); break;  // LONG4
    case 'I': {
      const auto s = line();
      if (s == "01" || s == "00")
        push(s == "01");
      else
        push(parse_int(s));
      break;
    }
    case 'L': push(parse_int(line())); break;
    case 'G': {  // BINFLOAT: big-endian IEEE double
      const uint8_t* q = take(8);
      uint64_t bits = 0;
      for (int b = 0; b < 8; ++b) bits = (bits << 8) | q[b];
      double d;
      std::memcpy(&d, &bits, sizeof d);
      push(d);
      break;
    }
    case 'X': case 'T': case 'B': push(text(le(4))); break;  // BINUNICODE BINSTRING BINBYTES
    case 0x8c: case 'U': case 'C': push(text(le(1))); break;  // SHORT_BIN{UNICODE,STRING,BYTES}
    case 0x8d: case 0x8e: case 0x96: push(text(le(8))); break;  // BINUNICODE8 BINBYTES8 BYTEARRAY8
    case 'V': case 'S': push(line()); break;  // UNICODE STRING (text forms, kept raw)
    case '}': push(new_dict()); break;
    case ']': push(c10::IValue(c10::impl::GenericList(c10::AnyType::get()))); break;
    case ')': push(tuple({})); break;
    case 't': push(tuple(pop_mark())); break;
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      std::vector<c10::IValue> items(op - 0x84);
      for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
      push(tuple(std::move(items)));
      break;
    }
    case 'l': {
      auto items = pop_mark();
      push(c10::IValue(c10::impl::GenericList(c10::AnyType::get())));
      for (auto& v : items) append(top(), std::move(v));
      break;
    }
    case 'd':
    case 'u': {  // DICT (new) and SETITEMS (onto the dict below the mark)
      auto items = pop_mark();
      if (items.size() % 2 != 0) fail("an odd number of items for a dict");
      if (op == 'd') push(new_dict());
      for (size_t k = 0; k < items.size(); k += 2) setitem(top(), std::move(items[k]), std::move(items[k + 1]));
      break;
    }
    case 'a': {
      auto v = pop();
      append(top(), std::move(v));
      break;
    }
    case 'e': {
      auto items = pop_mark();
      for (auto& v : items) append(top(), std::move(v));
      break;
    }
    case 's': {
      auto v = pop();
      auto k = pop();
      setitem(top(), std::move(k), std::move(v));
      break;
    }
    case 'q': memo_[le(1)] = top(); break;  // BINPUT
    case 'r': memo_[le(4)] = top(); break;  // LONG_BINPUT
    case 'p': memo_[static_cast<uint64_t>(parse_int(line()))] = top(); break;  // PUT
    case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
    case 'h': push(get(le(1))); break;
    case 'j': push(get(le(4))); break;
    case 'g': push(get(static_cast<uint64_t>(parse_int(line())))); break;
    case 'c': {  // GLOBAL module \n name \n
      const auto module = line();
      push(kGlobal + module + "." + line());
      break;
    }
    case 0x93: {  // STACK_GLOBAL
      const auto name = pop(), module = pop();
      if (!name.isString() || !module.isString()) fail("STACK_GLOBAL needs two strings");
      push(kGlobal + module.toStringRef() + "." + name.toStringRef());
      break;
    }
    case 'R': {
      const auto args = pop();
      const auto callable = pop();
      push(reduce(callable, args));
      break;
    }
    case 0x81:
    case 0x92: {              // NEWOBJ, NEWOBJ_EX: cls.__new__(cls, *args)
      if (op == 0x92) pop();  // kwargs
      pop();                  // args
      const auto name = global_name(pop());
      push(name == "collections.OrderedDict" ? new_dict() : c10::IValue(kOpaque + name + ">"));
      break;
    }
    case 'b':
      pop();
      top();
      break;  // BUILD: the state (an OrderedDict's _metadata, an object's __dict__) is not kept
    case 'Q': {
      const auto pid = pop();
      push(persistent_load(pid));
      break;
    }
    case 0x8f: push(c10::IValue(kOpaque + "set>")); break;  // EMPTY_SET
    case 0x90:
      pop_mark();
      top();
      break;  // ADDITEMS
    case 0x91:
      pop_mark();
      push(c10::IValue(kOpaque + "frozenset>"));
      break;
    case 'o':
      pop_mark();
      push(c10::IValue(kOpaque + "object>"));
      break;     // OBJ
    case 'i': {  // INST module \n name \n
      const auto module = line();
      const auto name = line();
      pop_mark();
      push(c10::IValue(kOpaque + module + "." + name + ">"));
      break;
    }
    default: {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", op);
      fail(std::string("unsupported pickle opcode ") + hex);
    }
  }
  // clang-format on
}

c10::IValue Machine::reduce(const c10::IValue& callable, const c10::IValue& args) {
  const std::string name = global_name(callable);
  if (name.empty()) return c10::IValue(kOpaque + "result>");
  if (!args.isTuple()) fail("REDUCE of " + name + " without an argument tuple");
  const auto& a = args.toTupleRef().elements();
  if (name == "collections.OrderedDict") return new_dict();
  if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
    return rebuild_tensor(std::vector<c10::IValue>(a.begin(), a.end()));
  }
  // LibTorch's own pickler (torch::pickle_save) tags dicts and lists: the value is the first argument.
  const bool jit_tag = name == "torch.jit._pickle.restore_type_tag" || name.rfind("torch.jit._pickle.build_", 0) == 0;
  if (jit_tag) {
    if (a.empty()) fail(name + " without an argument");
    return a[0];
  }
  if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
    if (a.empty() || !a[0].isTensor()) fail(name + " without a tensor");
    return a[0];
  }
  return c10::IValue(kOpaque + name + ">");
}

c10::IValue Machine::persistent_load(const c10::IValue& pid) {
  // ('storage', storage type, key, location, numel)
  if (!pid.isTuple() || pid.toTupleRef().elements().size() != 5) fail("a persistent id that is not a storage");
  const auto& e = pid.toTupleRef().elements();
  if (!e[0].isString() || e[0].toStringRef() != "storage" || !e[2].isString() || !e[4].isInt()) {
    fail("a persistent id that is not a storage");
  }
  const std::string key = e[2].toStringRef();
  const auto cached = storages_.find(key);
  if (cached != storages_.end()) return cached->second;
  at::Tensor t;
  try {
    t = read_storage(zip_, key, global_name(e[1]), e[4].toInt());
  } catch (const std::invalid_argument& err) {
    fail(err.what());
  }
  storages_[key] = t;
  return t;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]):
// a view of the storage, checked to lie inside it.
c10::IValue Machine::rebuild_tensor(const std::vector<c10::IValue>& a) {
  auto ints = [&](const c10::IValue& v, const char* what) {
    if (!v.isTuple()) fail(std::string("a tensor whose ") + what + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v.toTupleRef().elements()) {
      if (!x.isInt() || x.toInt() < 0) fail(std::string("a tensor whose ") + what + " holds a bad value");
      out.push_back(x.toInt());
    }
    return out;
  };
  if (a.size() < 4 || !a[0].isTensor() || !a[1].isInt()) fail("a tensor rebuilt from bad arguments");
  const at::Tensor& storage = a[0].toTensor();
  const auto size = ints(a[2], "size"), stride = ints(a[3], "stride");
  const int64_t offset = a[1].toInt();
  try {
    return storage_view(storage, offset, size, stride);
  } catch (const std::invalid_argument& err) {
    fail(err.what());
  }
}

}  // namespace

bool is_opaque(const c10::IValue& v) {
  return v.isString() && (v.toStringRef().rfind(kOpaque, 0) == 0 || v.toStringRef().rfind(kGlobal, 0) == 0);
}

c10::IValue parse_torch_save(const std::vector<char>& bytes, const std::string& what) {
  if (bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x80 && static_cast<uint8_t>(bytes[1]) <= 5) {
    throw std::runtime_error(what +
                             ": the legacy (before PyTorch 1.6) torch.save format is not read; re-save it "
                             "with tools/convert_checkpoint.py");
  }
  try {
    auto zip = open_torch_zip(bytes);
    if (!zip->hasRecord("data.pkl")) throw std::runtime_error(what + ": not a torch.save file (no data.pkl)");
    if (zip->hasRecord("constants.pkl")) {  // torch.jit.save: a module with code, not a dict of tensors
      throw std::runtime_error(what +
                               ": a TorchScript archive (as OpenAI's CLIP releases), not a torch.save dict: "
                               "convert it with tools/convert_checkpoint.py");
    }
    if (zip->hasRecord("byteorder")) {
      const auto [order, n] = zip->getRecord("byteorder");
      if (std::string(static_cast<const char*>(order.get()), n) != "little") {
        throw std::runtime_error(what + ": written on a big-endian machine: not supported");
      }
    }
    const auto [data, size] = zip->getRecord("data.pkl");
    return Machine(static_cast<const uint8_t*>(data.get()), size, what, *zip).run();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    throw std::runtime_error(what + ": not a readable torch.save file: " + msg.substr(0, msg.find('\n')));
  }
}

c10::IValue read_torch_save(const std::string& path) { return parse_torch_save(read_file(path), path); }

}  // namespace dbot::io
