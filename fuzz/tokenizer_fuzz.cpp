// libFuzzer target: the WordPiece tokenizer (UTF-8 decoding, normalisation,
// pre-tokenisation, WordPiece) on arbitrary bytes with the bundled model's
// tokenizer.json. Invalid UTF-8 must be an InputError; valid text must give
// [CLS] ... [SEP] within max_tokens and ids the embedding table has.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fuzz_support.hpp"
#include "ldaproj/tokenizer.hpp"

namespace {
const ldaproj::Tokenizer& tokenizer() {
  static const ldaproj::Tokenizer t =
      ldaproj::Tokenizer::from_file(std::filesystem::path(LDAPROJ_DEFAULT_MODEL_DIR) / "tokenizer.json");
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const ldaproj::Tokenizer& t = tokenizer();
  // The first byte picks a truncation length, so short limits are covered too.
  const std::size_t max_tokens = size > 0 ? 2 + data[0] % 64 : 256;
  try {
    const auto ids = t.encode(text, max_tokens);
    if (ids.size() < 2 || ids.size() > max_tokens || ids.front() != t.cls_id() || ids.back() != t.sep_id()) {
      std::abort();
    }
    for (const std::int32_t id : ids) {
      if (id < 0 || id > t.max_id()) std::abort();
    }
    const auto pieces = t.tokenize(text);
    if (pieces.size() + 2 < ids.size()) std::abort();
  } catch (const ldaproj::InputError&) {
  } catch (const std::exception& e) {
    ldaproj::fuzzing::unexpected(e);
  }
  return 0;
}
