// io/safetensors: the file Python's reference package wrote (tests/reference/make_safetensors_golden.py)
// reads to its exact values and is reproduced byte for byte; round trips; and every malformed file is a
// one-line error naming the file and what is wrong.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dbot/io/files.h"
#include "dbot/io/safetensors.h"

namespace {

using dbot::io::parse_safetensors;
using dbot::io::read_safetensors;
using dbot::io::serialize_safetensors;
using TensorMap = std::map<std::string, at::Tensor>;

const std::string kPythonFile = DBOT_TEST_DATA "/safetensors/python.safetensors";

// The tensors of make_safetensors_golden.py, from the same formulas.
TensorMap python_tensors() {
  return {
      {"f32", at::arange(6, at::kFloat).reshape({2, 3}) * 0.5 - 1},
      {"f64", at::tensor({1.0 / 3, -2.5}, at::kDouble)},
      {"bf16", at::tensor({1.5, -2.0, 0.25}, at::kFloat).to(at::kBFloat16)},
      {"f16", at::tensor({0.1, 65504.0}, at::kFloat).to(at::kHalf)},
      {"i64", at::tensor({7, -9}, at::kLong)},
      {"i32", at::tensor({-123456}, at::kInt)},
      {"i16", at::tensor({-2, 300}, at::kInt).to(at::kShort)},
      {"i8", at::tensor({-128, 127}, at::kInt).to(at::kChar)},
      {"u8", at::tensor({0, 1, 254, 255}, at::kInt).to(at::kByte)},
      {"bool", at::tensor({1, 0, 1}, at::kInt).to(at::kBool)},
      {"empty", at::zeros({0, 3})},
      {"scalar", at::scalar_tensor(42.0, at::kFloat)},
  };
}

void expect_same(const TensorMap& got, const TensorMap& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const auto& g = got.at(name);
    EXPECT_EQ(g.scalar_type(), w.scalar_type()) << name;
    EXPECT_EQ(g.sizes(), w.sizes()) << name;
    EXPECT_TRUE(at::equal(g, w)) << name << ": " << g << " vs " << w;
  }
}

std::string error_of(const std::vector<char>& bytes) {
  try {
    parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

// A file made of a given header text and data size (zero bytes).
std::vector<char> file_with_header(const std::string& header, size_t data_bytes) {
  std::vector<char> bytes(8 + header.size() + data_bytes, 0);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

TEST(Safetensors, ReadsThePythonReferenceFileExactly) {
  const auto st = read_safetensors(kPythonFile);
  expect_same(st.tensors, python_tensors());
  EXPECT_EQ(st.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
}

TEST(Safetensors, WritesThePythonReferenceBytes) {
  const auto want = dbot::io::read_file(kPythonFile);
  const auto got = serialize_safetensors(python_tensors(), {{"format", "pt"}});
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "same size, different bytes";
}

TEST(Safetensors, RoundTripsThroughAFile) {
  const auto dir = std::filesystem::temp_directory_path() / "dbot-test-safetensors";
  std::filesystem::create_directories(dir);
  const auto path = (dir / "round.safetensors").string();
  TensorMap t = python_tensors();
  t["non_contiguous"] = at::arange(12, at::kFloat).reshape({3, 4}).t();  // written in logical order
  const std::map<std::string, std::string> meta = {{"a", "1"}, {"dbot.model", "{\"depth\": 2}"}, {"z", ""}};
  dbot::io::write_safetensors(path, t, meta);
  const auto st = read_safetensors(path);
  t["non_contiguous"] = t["non_contiguous"].contiguous();
  expect_same(st.tensors, t);
  EXPECT_EQ(st.metadata, meta);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Safetensors, EveryTensorIsAlignedToItsElementSize) {
  const auto bytes = serialize_safetensors(python_tensors(), {});
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  const std::map<std::string, uint64_t> esize = {{"F64", 8}, {"I64", 8}, {"F32", 4}, {"I32", 4}, {"BF16", 2},
                                                 {"F16", 2}, {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}};
  for (const auto& [name, e] : header.items()) {
    EXPECT_EQ(e["data_offsets"][0].get<uint64_t>() % esize.at(e["dtype"].get<std::string>()), 0u) << name;
  }
}

TEST(Safetensors, MalformedFilesAreOneLineErrorsNamingWhatIsWrong) {
  const auto good = dbot::io::read_file(kPythonFile);
  auto with = [&](auto&& edit) {
    auto b = good;
    edit(b);
    return error_of(b);
  };
  auto expect = [](const std::string& err, const std::string& part) {
    EXPECT_NE(err.find("bad.safetensors: "), std::string::npos) << err;
    EXPECT_NE(err.find(part), std::string::npos) << "expected '" << part << "' in: " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  };
  expect(error_of({}), "too short");
  expect(with([](auto& b) { b.resize(200); }), "runs past the end of the file");
  expect(with([](auto& b) { b.resize(b.size() - 1); }), "truncated?");
  expect(with([](auto& b) { b.push_back(0); }), "trailing bytes");
  expect(with([](auto& b) { b[7] = 0x10; }), "exceeds the 100 MB limit");
  expect(with([](auto& b) { b[8] = '['; }), "does not start with '{'");
  expect(with([](auto& b) { b[9] = 'x'; }), "not valid JSON");

  const std::string f32 = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  EXPECT_EQ(error_of(file_with_header("{" + f32 + "}", 8)), "(no error)");
  expect(error_of(file_with_header("{" + f32 + "," + f32 + "}", 8)), "names 'a' twice");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
         "tensor 'a': data_offsets [0, 8] do not hold F32 [3] (12 bytes)");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)), "tensor 'a'");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
         "tensor 'a' starts at byte 4 of the data, expected 0");
  expect(
      error_of(file_with_header(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          8)),
      "tensor 'b' starts at byte 4 of the data, expected 8");
  expect(error_of(file_with_header(R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8)),
         "tensor 'a': unknown dtype 'Q7'");
  expect(error_of(file_with_header(R"({"a":{"dtype":"U16","shape":[4],"data_offsets":[0,8]}})", 8)),
         "dtype U16 is not supported by dbot");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
         "not a non-negative integer");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8)),
         "not a non-negative integer");
  expect(
      error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8)),
      "overflows");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[2]}})", 8)), "\"data_offsets\" must be");
  expect(error_of(file_with_header(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8)), "no \"dtype\"");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8)), "no \"shape\"");
  expect(error_of(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8)),
         "unknown header field 'x'");
  expect(error_of(file_with_header(R"({"a":[1,2]})", 8)), "header entry is not an object");
  expect(error_of(file_with_header(R"({"__metadata__":{"k":1}})", 0)), "entry 'k' is not a string");
  expect(error_of(file_with_header(R"({"__metadata__":[]})", 0)), "is not an object of strings");
}

TEST(Safetensors, MissingFileNamesThePath) {
  try {
    read_safetensors("/nonexistent/w.safetensors");
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/w.safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
