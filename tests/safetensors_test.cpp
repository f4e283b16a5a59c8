// safetensors reader: known values for each float dtype, and malformed files
// (truncated, lying headers, bad offsets) rejected with a clear error.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

std::string bytes_of(const void* p, std::size_t n) { return std::string(static_cast<const char*>(p), n); }

// A whole file: 8-byte header length, the JSON header, the data section.
std::string safetensors(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

class SafeTensors : public testing_support::TempDirTest {
 protected:
  std::string message_for(const std::string& content) {
    const auto path = write_file(file("model.safetensors"), content);
    try {
      (void)SafeTensorsFile::open(path);
    } catch (const InputError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(path.string()), std::string::npos) << m;
      return m;
    }
    ADD_FAILURE() << "accepted a malformed file";
    return {};
  }
};

TEST_F(SafeTensors, ReadsF32F16Bf16WithKnownValues) {
  const float f32[3] = {1.5f, -2.25f, 1e-3f};
  const std::uint16_t f16[3] = {0x3C00 /*1*/, 0xC000 /*-2*/, 0x3555 /*~0.333*/};
  const std::uint16_t bf16[2] = {0x3FC0 /*1.5*/, 0xC120 /*-10*/};
  nlohmann::json h;
  h["__metadata__"] = {{"format", "pt"}};
  h["a"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 12}}};
  h["b"] = {{"dtype", "F16"}, {"shape", {1, 3}}, {"data_offsets", {12, 18}}};
  h["c"] = {{"dtype", "BF16"}, {"shape", {2}}, {"data_offsets", {18, 22}}};
  const auto path = write_file(file("ok.safetensors"),
                               safetensors(h.dump(), bytes_of(f32, 12) + bytes_of(f16, 6) + bytes_of(bf16, 4)));
  const SafeTensorsFile st = SafeTensorsFile::open(path);
  EXPECT_EQ(st.tensors().size(), 3u);
  EXPECT_TRUE(st.contains("b"));
  EXPECT_FALSE(st.contains("__metadata__"));
  EXPECT_EQ(st.load_f32("a"), (std::vector<float>{1.5f, -2.25f, 1e-3f}));
  const auto b = st.load_f32("b", {1, 3});
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.0f);
  EXPECT_NEAR(b[2], 1.0f / 3, 1e-3);
  EXPECT_EQ(st.load_f32("c"), (std::vector<float>{1.5f, -10.0f}));
  EXPECT_THROW((void)st.load_f32("b", {3}), InputError);  // wrong expected shape
  EXPECT_THROW((void)st.load_f32("missing"), InputError);
}

TEST_F(SafeTensors, MalformedFilesAreClearErrors) {
  const std::string data(8, '\0');
  auto with = [&](const std::string& entry) { return safetensors("{\"t\":" + entry + "}", data); };
  struct Case { std::string content; const char* expect; };
  const Case cases[] = {
      {"", "8-byte header length"},
      {"abc", "8-byte header length"},
      {le64(1000) + "{}", "header length 1000"},
      {le64(1ull << 62) + "{}", "header length"},
      {safetensors("{\"t\":", data), "not valid JSON"},
      {safetensors("[1,2]", data), "must be a JSON object"},
      {with(R"({"shape":[2],"data_offsets":[0,8]})"), "dtype"},
      {with(R"({"dtype":"F32","data_offsets":[0,8]})"), "shape"},
      {with(R"({"dtype":"F32","shape":[2]})"), "data_offsets"},
      {with(R"({"dtype":"Q4","shape":[2],"data_offsets":[0,8]})"), "unsupported dtype"},
      {with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,64]})"), "past the data section"},
      {with(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), "data_offsets"},
      {with(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), "occupies 8 bytes"},
      {with(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), "shape"},
      {with(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"), "overflows"},
      {safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data),
       "overlaps"},
  };
  for (const Case& c : cases) {
    const std::string m = message_for(c.content);
    EXPECT_NE(m.find(c.expect), std::string::npos) << "expected \"" << c.expect << "\" in: " << m;
  }
  EXPECT_THROW(SafeTensorsFile::open(file("absent.safetensors")), InputError);
  EXPECT_THROW(SafeTensorsFile::open(dir_), InputError);
}

TEST_F(SafeTensors, NonFloatTensorsAreListedButNotConverted) {
  const std::int64_t ids[2] = {0, 1};
  nlohmann::json h;
  h["ids"] = {{"dtype", "I64"}, {"shape", {1, 2}}, {"data_offsets", {0, 16}}};
  const auto path = write_file(file("ids.safetensors"), safetensors(h.dump(), bytes_of(ids, 16)));
  const SafeTensorsFile st = SafeTensorsFile::open(path);
  EXPECT_EQ(st.info("ids").dtype, DType::I64);
  EXPECT_THROW((void)st.load_f32("ids"), InputError);
}

}  // namespace
}  // namespace ldaproj
