// Second, independent parity check of the encoder at max_tokens 512: the npm
// package @sap-ux/fiori-docs-embeddings ships 778 documentation records with
// all-MiniLM-L6-v2 vectors computed by transformers.js (ONNX Runtime, fp32).
//
// What that package embedded, per record: `content` with every whitespace run
// collapsed to one space, trimmed, cut to 8192 UTF-16 units (JavaScript
// `replace(/\s+/g, ' ').trim().substring(0, 8192)`), tokenised with
// truncation at 512. transformers.js truncates *after* adding the special
// tokens, so a long text becomes [CLS] + 511 pieces with no [SEP], while
// ldaproj (like sentence-transformers) keeps [SEP]: [CLS] + 510 pieces + [SEP].
// Texts that fit are therefore compared tightly, long ones loosely.
//
// Runs a subset by default (every text that fits + every 25th long one); set
// LDAPROJ_FIORI_ALL=1 for all 778 (scripts/reference/fiori_check.sh does).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxTokens = 512;
constexpr std::size_t kDim = 384;
constexpr std::size_t kLongStride = 25;
// The package used the original fp32 weights, we use the fp16 copy up-cast to
// fp32: measured 1 - 8e-7 at worst with a PyTorch forward on the same ids.
constexpr double kMinCosineFitting = 0.99999;
// Long texts differ by design in their last token (see above): PyTorch with
// our truncation gives mean 0.99977, min 0.9922 over the 698 long records.
constexpr double kMinMeanCosineLong = 0.999;
constexpr double kMinCosineLong = 0.99;

std::optional<fs::path> find_package_data() {
  if (const char* env = std::getenv("LDAPROJ_FIORI_DIR"); env && *env) return fs::path(env);
  const fs::path root(LDAPROJ_SOURCE_DIR);
  for (const char* prefix : {"third_party/npm", "third_party/npm-ref"}) {
    const fs::path dir = root / prefix / "node_modules/@sap-ux/fiori-docs-embeddings/data/embeddings";
    if (fs::exists(dir / "records.jsonl") && fs::exists(dir / "embeddings.bin")) return dir;
  }
  return std::nullopt;
}

// Decodes one UTF-8 sequence at `pos`; returns the code point and advances.
char32_t next_code_point(const std::string& s, std::size_t& pos) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(pos);
  std::size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
  if (length == 0 || pos + length > s.size()) throw std::runtime_error("invalid UTF-8 at byte " + std::to_string(pos));
  char32_t cp = length == 1 ? lead : lead & (0x7F >> length);
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(pos + i) & 0xC0) != 0x80) throw std::runtime_error("invalid UTF-8 at byte " + std::to_string(pos + i));
    cp = (cp << 6) | (byte(pos + i) & 0x3F);
  }
  pos += length;
  return cp;
}

// ECMAScript's WhiteSpace and LineTerminator: what /\s/ and trim() match.
bool is_js_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

// The package's text cleaning, see the comment at the top.
std::string clean_like_the_package(const std::string& content) {
  constexpr std::size_t kMaxUtf16Units = 8192;
  std::string out;
  std::size_t units = 0;
  bool pending_space = false;
  for (std::size_t pos = 0; pos < content.size();) {
    const std::size_t begin = pos;
    const char32_t cp = next_code_point(content, pos);
    if (is_js_space(cp)) {
      pending_space = !out.empty();  // leading whitespace is trimmed
      continue;
    }
    const std::size_t cp_units = cp >= 0x10000 ? 2 : 1;
    if (units + (pending_space ? 1 : 0) + cp_units > kMaxUtf16Units) break;
    if (pending_space) {
      out.push_back(' ');
      ++units;
      pending_space = false;
    }
    out.append(content, begin, pos - begin);
    units += cp_units;
  }
  return out;  // a trailing space is never emitted: trim()
}

struct Record {
  std::string id;
  std::string text;
  bool fits = false;  // [CLS] text [SEP] within kMaxTokens: truncation agrees
};

class FioriParity : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto data = find_package_data();
    if (!data) {
      GTEST_SKIP() << "@sap-ux/fiori-docs-embeddings is not installed; run scripts/setup.sh "
                      "(or set LDAPROJ_FIORI_DIR to its data/embeddings folder)";
    }
    try {
      model_dir_ = ldaproj::resolve_model_dir();
    } catch (const ldaproj::InputError& e) {
      GTEST_SKIP() << "no model directory (run scripts/setup.sh): " << e.what();
    }
    data_dir_ = *data;
  }

  fs::path data_dir_;
  fs::path model_dir_;
};

TEST_F(FioriParity, VectorsMatchAtMaxTokens512) {
  const auto metadata = nlohmann::json::parse(std::ifstream(data_dir_ / "metadata.json"));
  ASSERT_EQ(metadata.at("dimensions").get<std::size_t>(), kDim);
  const auto count = metadata.at("totalVectors").get<std::size_t>();

  std::ifstream records_in(data_dir_ / "records.jsonl");
  ASSERT_TRUE(records_in) << data_dir_ / "records.jsonl";
  const auto tokenizer = ldaproj::Tokenizer::from_file(model_dir_ / "tokenizer.json");
  std::vector<Record> records;
  for (std::string line; std::getline(records_in, line);) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    Record r;
    r.id = j.at("id").get<std::string>();
    r.text = clean_like_the_package(j.at("content").get<std::string>());
    r.fits = tokenizer.tokenize(r.text).size() + 2 <= kMaxTokens;
    records.push_back(std::move(r));
  }
  ASSERT_EQ(records.size(), count);

  std::ifstream vectors_in(data_dir_ / "embeddings.bin", std::ios::binary);
  std::vector<float> reference(count * kDim);
  vectors_in.read(reinterpret_cast<char*>(reference.data()), static_cast<std::streamsize>(reference.size() * 4));
  ASSERT_EQ(static_cast<std::size_t>(vectors_in.gcount()), reference.size() * 4) << "embeddings.bin is short";

  const char* all_env = std::getenv("LDAPROJ_FIORI_ALL");
  const bool all = all_env && std::strcmp(all_env, "1") == 0;
  std::vector<std::size_t> chosen;
  std::size_t long_seen = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (all || records[i].fits || long_seen++ % kLongStride == 0) chosen.push_back(i);
  }

  ldaproj::EncoderOptions options;
  options.max_tokens = kMaxTokens;
  const auto encoder = ldaproj::Encoder::load(model_dir_, options);
  std::vector<std::string> texts;
  for (std::size_t i : chosen) texts.push_back(records[i].text);
  const ldaproj::Matrix ours = encoder.encode(texts);
  ASSERT_EQ(ours.rows, chosen.size());
  ASSERT_EQ(ours.cols, kDim);

  struct Stats {
    std::size_t n = 0;
    double sum = 0.0, min = 1.0;
  } fitting, truncated;
  for (std::size_t k = 0; k < chosen.size(); ++k) {
    const float* theirs = reference.data() + chosen[k] * kDim;
    double dot = 0.0, their_sq = 0.0, our_sq = 0.0;
    for (std::size_t d = 0; d < kDim; ++d) {
      dot += double(ours(k, d)) * theirs[d];
      their_sq += double(theirs[d]) * theirs[d];
      our_sq += double(ours(k, d)) * ours(k, d);
    }
    const double cosine = dot / (std::sqrt(their_sq) * std::sqrt(our_sq));
    const Record& r = records[chosen[k]];
    Stats& s = r.fits ? fitting : truncated;
    ++s.n;
    s.sum += cosine;
    s.min = std::min(s.min, cosine);
    if (r.fits) {
      EXPECT_GE(cosine, kMinCosineFitting) << r.id;
    } else {
      EXPECT_GE(cosine, kMinCosineLong) << r.id;
    }
  }
  const double overall_mean = (fitting.sum + truncated.sum) / double(fitting.n + truncated.n);
  std::printf("[ fiori    ] %zu of %zu records; fitting %zu: mean %.7f min %.7f; truncated %zu: mean %.7f min %.7f; "
              "overall mean %.7f\n",
              chosen.size(), records.size(), fitting.n, fitting.n ? fitting.sum / double(fitting.n) : 0.0, fitting.min,
              truncated.n, truncated.n ? truncated.sum / double(truncated.n) : 0.0, truncated.min, overall_mean);
  ASSERT_GT(fitting.n, 0u) << "no record fits in 512 tokens: has the package changed?";
  if (truncated.n > 0) {
    EXPECT_GE(truncated.sum / double(truncated.n), kMinMeanCosineLong);
  }
  EXPECT_GE(overall_mean, kMinMeanCosineLong);
}

}  // namespace
