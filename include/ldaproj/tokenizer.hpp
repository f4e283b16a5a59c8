// BERT WordPiece tokenizer driven by a Hugging Face tokenizer.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ldaproj {

class Tokenizer {
 public:
  // Reads normalizer/pre-tokenizer settings and the WordPiece vocabulary from
  // tokenizer.json. Throws InputError naming the file and field when the file
  // is missing, malformed or not a BERT WordPiece tokenizer.
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);

  // Token ids for one text: [CLS] pieces... [SEP], truncated so the total is at
  // most max_tokens (>= 2). Throws InputError with the byte offset on invalid UTF-8.
  std::vector<std::int32_t> encode(std::string_view utf8, std::size_t max_tokens = 256) const;

  // The WordPiece strings for a text, without [CLS]/[SEP] and without truncation.
  std::vector<std::string> tokenize(std::string_view utf8) const;

  std::int32_t pad_id() const;
  std::int32_t cls_id() const;
  std::int32_t sep_id() const;
  std::int32_t unk_id() const;
  std::size_t vocab_size() const;
  std::int32_t max_id() const;  // the largest token id encode() can return

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ldaproj
