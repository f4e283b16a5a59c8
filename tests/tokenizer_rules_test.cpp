// Tokenizer rules on known values: normalisation, pre-tokenisation,
// WordPiece, truncation and bad input. Cross-implementation parity lives in
// encoder_parity_test.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ldaproj/error.hpp"
#include "ldaproj/tokenizer.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
using Pieces = std::vector<std::string>;

const fs::path kTokenizerJson = fs::path(LDAPROJ_DEFAULT_MODEL_DIR) / "tokenizer.json";

class TokenizerRules : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kTokenizerJson)) GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
  }
  static const Tokenizer& tok() {
    static const Tokenizer t = Tokenizer::from_file(kTokenizerJson);
    return t;
  }
};

TEST_F(TokenizerRules, LowercasesAndSplitsPunctuation) {
  EXPECT_EQ(tok().tokenize("Hello, World!"), (Pieces{"hello", ",", "world", "!"}));
  EXPECT_EQ(tok().tokenize("don't"), (Pieces{"don", "'", "t"}));
  EXPECT_EQ(tok().tokenize("3.14 2,000"), (Pieces{"3", ".", "14", "2", ",", "000"}));
}

TEST_F(TokenizerRules, AsciiSymbolsCountAsPunctuation) {
  // $ + ^ ` are Unicode symbols, but BERT splits every ASCII punctuation character.
  EXPECT_EQ(tok().tokenize("a$b+c^d`e"), (Pieces{"a", "$", "b", "+", "c", "^", "d", "`", "e"}));
}

TEST_F(TokenizerRules, StripsAccents) {
  EXPECT_EQ(tok().tokenize("Café naïve"), (Pieces{"cafe", "naive"}));
  EXPECT_EQ(tok().tokenize("Cafe\xCC\x81"), (Pieces{"cafe"}));  // decomposed input
  EXPECT_EQ(tok().tokenize("\xC4\xB0stanbul"), (Pieces{"istanbul"}));  // dotted capital I
}

TEST_F(TokenizerRules, SpacesAroundCjkCharacters) {
  const Pieces p = tok().tokenize("ab中文cd");
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[1], "中");
  EXPECT_EQ(p[2], "文");
}

TEST_F(TokenizerRules, CleansControlsAndWhitespace) {
  // Control characters vanish without splitting the word; NBSP and tabs split.
  EXPECT_EQ(tok().tokenize("he\x01" "llo\tworld\xC2\xA0" "again"), (Pieces{"hello", "world", "again"}));
  EXPECT_EQ(tok().tokenize(std::string("a\0b", 3)), (Pieces{"ab"}));
  EXPECT_EQ(tok().tokenize("  \n\t "), Pieces{});
}

TEST_F(TokenizerRules, WordPieceContinuationAndUnknown) {
  EXPECT_EQ(tok().tokenize("unaffable"), (Pieces{"una", "##ffa", "##ble"}));
  EXPECT_EQ(tok().tokenize("\xEF\xBC\xA1"), (Pieces{"[UNK]"}));  // fullwidth A
  EXPECT_EQ(tok().tokenize(std::string(101, 'a')), (Pieces{"[UNK]"}));  // > max_input_chars_per_word
  EXPECT_NE(tok().tokenize(std::string(100, 'a')), (Pieces{"[UNK]"}));
}

TEST_F(TokenizerRules, EncodeAddsSpecialTokensAndTruncates) {
  const auto ids = tok().encode("hello world");
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids.front(), tok().cls_id());
  EXPECT_EQ(ids.back(), tok().sep_id());
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += "word ";
  const auto truncated = tok().encode(long_text, 256);
  EXPECT_EQ(truncated.size(), 256u);
  EXPECT_EQ(truncated.back(), tok().sep_id());
  EXPECT_EQ(tok().encode("", 256), (std::vector<std::int32_t>{tok().cls_id(), tok().sep_id()}));
  EXPECT_THROW((void)tok().encode("x", 1), InputError);
}

TEST_F(TokenizerRules, InvalidUtf8NamesTheByteOffset) {
  const std::string cases[] = {std::string("ok\xFFok"), std::string("ab\xC3"), std::string("abc\xED\xA0\x80")};
  const std::size_t offsets[] = {2, 2, 3};
  for (int i = 0; i < 3; ++i) {
    try {
      (void)tok().encode(cases[i]);
      ADD_FAILURE() << "accepted invalid UTF-8 case " << i;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("byte offset " + std::to_string(offsets[i])), std::string::npos)
          << e.what();
    }
  }
}

TEST(TokenizerFile, MalformedFilesAreClearErrors) {
  const fs::path dir = fs::temp_directory_path() / "ldaproj_tokenizer_test";
  fs::create_directories(dir);
  struct Case { const char* json; const char* expect; };
  const Case cases[] = {
      {"{not json", "not valid JSON"},
      {"{}", "missing field \"model\""},
      {R"({"model":{"type":"BPE","vocab":{}}})", "\"model.type\" must be \"WordPiece\""},
      {R"({"model":{"type":"WordPiece"}})", "missing field \"model.vocab\""},
      {R"({"model":{"type":"WordPiece","vocab":{"a":"x"}}})", "model.vocab.a"},
      {R"({"model":{"type":"WordPiece","vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2}}})", "[PAD]"},
  };
  for (const Case& c : cases) {
    const fs::path file = dir / "tokenizer.json";
    std::ofstream(file) << c.json;
    try {
      (void)Tokenizer::from_file(file);
      ADD_FAILURE() << "accepted " << c.json;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Tokenizer::from_file(dir / "absent.json"), InputError);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ldaproj
