// Every Unicode scalar value through the tokenizer, against hashes from Hugging
// Face's tokenizers library (scripts/reference/tokenizer_sweep.mjs writes
// tests/data/tokenizer_sweep.txt): unassigned code points included.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utf8proc.h>

#include "ldaproj/tokenizer.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;

std::uint32_t fnv(std::uint32_t hash, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) {
    hash ^= (value >> (8 * i)) & 0xFF;
    hash *= 0x01000193u;
  }
  return hash;
}

TEST(TokenizerSweep, EveryCodePointMatchesHuggingFace) {
  const fs::path model = fs::path(LDAPROJ_DEFAULT_MODEL_DIR) / "tokenizer.json";
  if (!fs::exists(model)) GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
  std::ifstream in(fs::path(LDAPROJ_SOURCE_DIR) / "tests" / "data" / "tokenizer_sweep.txt");
  ASSERT_TRUE(in) << "tests/data/tokenizer_sweep.txt is missing";
  std::string line;
  std::getline(in, line);  // header
  const Tokenizer tok = Tokenizer::from_file(model);
  constexpr std::uint32_t kBlock = 256;
  std::size_t blocks = 0, mismatched = 0;
  std::string first_bad;
  for (std::uint32_t block = 0; std::getline(in, line); ++block) {
    std::uint32_t hash = 0x811c9dc5u;
    for (std::uint32_t cp = block * kBlock; cp < (block + 1) * kBlock; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      std::string text = "a";
      utf8proc_uint8_t buf[4];
      text.append(reinterpret_cast<const char*>(buf),
                  static_cast<std::size_t>(utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf)));
      text += "b";
      for (std::int32_t id : tok.encode(text, 256)) hash = fnv(hash, static_cast<std::uint32_t>(id));
      hash = fnv(hash, 0xFFFFFFFFu);
    }
    ++blocks;
    if (std::stoul(line, nullptr, 16) != hash) {
      ++mismatched;
      if (first_bad.size() < 200) {
        char range[40];
        std::snprintf(range, sizeof range, " U+%04X..U+%04X", block * kBlock, (block + 1) * kBlock - 1);
        first_bad += range;
      }
    }
  }
  EXPECT_EQ(blocks, 0x110000u / kBlock);
  EXPECT_EQ(mismatched, 0u) << "blocks whose tokenisation differs from Hugging Face's:" << first_bad;
  std::printf("[ sweep    ] %zu blocks of %u code points, %zu mismatched\n", blocks, kBlock, mismatched);
}

}  // namespace
}  // namespace ldaproj
