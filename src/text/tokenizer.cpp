// BERT WordPiece tokenizer: normalisation (clean text, CJK spacing, accent
// stripping, lowercasing), whitespace/punctuation pre-tokenisation and greedy
// longest-match WordPiece, as a Hugging Face tokenizer.json specifies.
#include "ldaproj/tokenizer.hpp"

#include <utf8proc.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unordered_map>

#include "ldaproj/error.hpp"

namespace ldaproj {

namespace {

// Code points assigned after the Unicode version of the reference
// tokenizer's character tables count as unassigned, as they do there
// (generated from the UCD by scripts/gen_unicode_age.py).
struct CodeRange {
  char32_t first, last;
};
constexpr CodeRange kNewerThanReference[] = {
#include "text/unicode_newer.inc"
};

bool known_to_reference(char32_t c) {
  const auto* end = std::end(kNewerThanReference);
  const auto* it = std::upper_bound(std::begin(kNewerThanReference), end, c,
                                    [](char32_t v, const CodeRange& r) { return v < r.first; });
  return it == std::begin(kNewerThanReference) || c > (it - 1)->last;
}

utf8proc_category_t category(char32_t c) {
  if (!known_to_reference(c)) return UTF8PROC_CATEGORY_CN;
  // The few characters whose general category changed after Unicode 8.0
  // keep their 8.0 category, as in the reference's tables.
  switch (c) {
    case 0x166D:   // So since Unicode 12
    case 0x111C9:  // Mn since Unicode 11
      return UTF8PROC_CATEGORY_PO;
    case 0x1734: return UTF8PROC_CATEGORY_MN;   // Mc since Unicode 14
    case 0xA9BD: return UTF8PROC_CATEGORY_MC;   // Mn since Unicode 12
    case 0x1885: case 0x1886: return UTF8PROC_CATEGORY_LO;  // Mn since Unicode 9
    default: return utf8proc_category(static_cast<utf8proc_int32_t>(c));
  }
}

bool is_whitespace(char32_t c) {
  // Unicode White_Space, which is what the reference tokenizer tests.
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

// The reference's "other" test covers control, format, surrogate and
// private-use characters but not unassigned ones (its tables list only
// assigned code points), so an unassigned code point is kept and ends up in
// an [UNK] word rather than being dropped.
bool is_other_category(char32_t c) {
  switch (category(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
      return true;
    default:
      return false;
  }
}

bool is_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return is_other_category(c);
}

bool is_punctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) {
    return true;
  }
  switch (category(c)) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// The reference's ranges, including its 0x2B920 start of the fifth range
// (the original BERT code's; CJK Extension E actually starts at 0x2B820).
bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
}

std::u32string decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  std::size_t i = 0;
  while (i < text.size()) {
    utf8proc_int32_t cp = 0;
    const auto n = utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
    if (n <= 0 || cp < 0) {
      throw InputError("invalid UTF-8 at byte offset " + std::to_string(i) + " (byte 0x" +
                       [&] {
                         char b[3];
                         std::snprintf(b, sizeof b, "%02X", static_cast<unsigned>(p[i]));
                         return std::string(b);
                       }() +
                       ")");
    }
    out.push_back(static_cast<char32_t>(cp));
    i += static_cast<std::size_t>(n);
  }
  return out;
}

}  // namespace

struct Tokenizer::Impl {
  bool clean_text = true, handle_chinese_chars = true, strip_accents = true, lowercase = true;
  std::unordered_map<std::string, std::int32_t> vocab;
  std::string prefix = "##";
  std::size_t max_chars_per_word = 100;
  std::int32_t unk = 0, cls = 0, sep = 0, pad = 0;
  std::int32_t max_id = 0;

  std::u32string normalize(std::string_view text) const {
    const std::u32string in = decode_utf8(text);
    std::u32string out;
    out.reserve(in.size());
    for (char32_t c : in) {
      if (clean_text) {
        if (c == 0 || c == 0xFFFD || is_control(c)) continue;
        if (is_whitespace(c)) c = ' ';
      }
      if (handle_chinese_chars && is_cjk(c)) {
        out.push_back(' ');
        out.push_back(c);
        out.push_back(' ');
        continue;
      }
      out.push_back(c);
    }
    if (strip_accents) {
      std::u32string stripped;
      stripped.reserve(out.size());
      utf8proc_int32_t buf[32];
      for (char32_t c : out) {
        if (!known_to_reference(c)) {
          stripped.push_back(c);
          continue;
        }
        int last = 0;
        const auto n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 32,
                                               UTF8PROC_DECOMPOSE, &last);
        for (utf8proc_ssize_t k = 0; k < n; ++k) {
          if (category(static_cast<char32_t>(buf[k])) != UTF8PROC_CATEGORY_MN) {
            stripped.push_back(static_cast<char32_t>(buf[k]));
          }
        }
      }
      out.swap(stripped);
    }
    if (lowercase) {
      std::u32string lowered;
      lowered.reserve(out.size());
      for (char32_t c : out) {
        if (c == 0x130) {  // the one full (multi-character) lowercase mapping
          lowered.push_back('i');
          lowered.push_back(0x307);
        } else {
          lowered.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
        }
      }
      out.swap(lowered);
    }
    return out;
  }

  void wordpiece(const std::u32string& word, std::vector<std::int32_t>* ids,
                 std::vector<std::string>* pieces) const {
    if (word.size() > max_chars_per_word) {
      if (ids) ids->push_back(unk);
      if (pieces) pieces->push_back("[UNK]");
      return;
    }
    // Byte offsets of every character boundary, for substring look-ups.
    std::string utf8;
    std::vector<std::size_t> offset;
    for (char32_t c : word) {
      offset.push_back(utf8.size());
      append_utf8(utf8, c);
    }
    offset.push_back(utf8.size());
    std::vector<std::pair<std::int32_t, std::string>> found;
    std::size_t start = 0;
    std::string key;
    while (start < word.size()) {
      std::size_t end = word.size();
      bool matched = false;
      while (end > start) {
        key.assign(start > 0 ? prefix : std::string());
        key.append(utf8, offset[start], offset[end] - offset[start]);
        if (auto it = vocab.find(key); it != vocab.end()) {
          found.emplace_back(it->second, key);
          matched = true;
          break;
        }
        --end;
      }
      if (!matched) {
        if (ids) ids->push_back(unk);
        if (pieces) pieces->push_back("[UNK]");
        return;
      }
      start = end;
    }
    for (auto& [id, piece] : found) {
      if (ids) ids->push_back(id);
      if (pieces) pieces->push_back(std::move(piece));
    }
  }

  void run(std::string_view text, std::vector<std::int32_t>* ids, std::vector<std::string>* pieces,
           std::size_t max_pieces) const {
    const std::u32string norm = normalize(text);
    std::u32string word;
    auto flush = [&] {
      if (!word.empty()) wordpiece(word, ids, pieces);
      word.clear();
    };
    for (char32_t c : norm) {
      if (ids && ids->size() >= max_pieces) break;
      if (is_whitespace(c)) {
        flush();
      } else if (is_punctuation(c)) {
        flush();
        word.push_back(c);
        flush();
      } else {
        word.push_back(c);
      }
    }
    if (!ids || ids->size() < max_pieces) flush();
    if (ids && ids->size() > max_pieces) ids->resize(max_pieces);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(file + ": cannot open tokenizer file");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(file + ": not valid JSON (" + e.what() + ")");
  }
  auto impl = std::make_unique<Impl>();
  auto field = [&](const nlohmann::json& obj, const char* name, const char* where) -> const nlohmann::json& {
    if (!obj.is_object() || !obj.contains(name)) {
      throw InputError(file + ": missing field \"" + std::string(where) + name + "\"");
    }
    return obj.at(name);
  };
  const auto& model = field(doc, "model", "");
  if (!field(model, "type", "model.").is_string() || model.at("type") != "WordPiece") {
    throw InputError(file + ": field \"model.type\" must be \"WordPiece\" (only BERT WordPiece tokenizers are supported)");
  }
  const auto& vocab = field(model, "vocab", "model.");
  if (!vocab.is_object() || vocab.empty()) throw InputError(file + ": field \"model.vocab\" must be a non-empty object");
  for (const auto& [piece, id] : vocab.items()) {
    const bool in_range = id.is_number_unsigned() && id.get<std::uint64_t>() <= std::numeric_limits<std::int32_t>::max();
    if (!in_range) {
      throw InputError(file + ": field \"model.vocab." + piece + "\" must be a token id from 0 to 2147483647, got " +
                       id.dump());
    }
    const auto value = id.get<std::int32_t>();
    impl->vocab.emplace(piece, value);
    impl->max_id = std::max(impl->max_id, value);
  }
  if (model.contains("continuing_subword_prefix") && model["continuing_subword_prefix"].is_string()) {
    impl->prefix = model["continuing_subword_prefix"].get<std::string>();
  }
  if (model.contains("max_input_chars_per_word") && model["max_input_chars_per_word"].is_number_unsigned()) {
    impl->max_chars_per_word = model["max_input_chars_per_word"].get<std::size_t>();
  }
  std::string unk_token = "[UNK]";
  if (model.contains("unk_token") && model["unk_token"].is_string()) unk_token = model["unk_token"];
  auto id_of = [&](const std::string& token) {
    auto it = impl->vocab.find(token);
    if (it == impl->vocab.end()) throw InputError(file + ": special token " + token + " is not in model.vocab");
    return it->second;
  };
  impl->unk = id_of(unk_token);
  impl->cls = id_of("[CLS]");
  impl->sep = id_of("[SEP]");
  impl->pad = id_of("[PAD]");
  if (doc.contains("normalizer") && doc["normalizer"].is_object()) {
    const auto& n = doc["normalizer"];
    if (n.value("type", "") != "BertNormalizer") {
      throw InputError(file + ": field \"normalizer.type\" must be \"BertNormalizer\"");
    }
    impl->clean_text = n.value("clean_text", true);
    impl->handle_chinese_chars = n.value("handle_chinese_chars", true);
    impl->lowercase = n.value("lowercase", true);
    // strip_accents null means "follow lowercase", as in the original BERT.
    impl->strip_accents = n.contains("strip_accents") && n["strip_accents"].is_boolean()
                              ? n["strip_accents"].get<bool>()
                              : impl->lowercase;
  }
  return Tokenizer(std::move(impl));
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view utf8, std::size_t max_tokens) const {
  if (max_tokens < 2) throw InputError("max_tokens must be at least 2 (room for [CLS] and [SEP])");
  std::vector<std::int32_t> ids;
  ids.push_back(impl_->cls);
  std::vector<std::int32_t> pieces;
  impl_->run(utf8, &pieces, nullptr, max_tokens - 2);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  ids.push_back(impl_->sep);
  return ids;
}

std::vector<std::string> Tokenizer::tokenize(std::string_view utf8) const {
  std::vector<std::string> pieces;
  impl_->run(utf8, nullptr, &pieces, 0);
  return pieces;
}

std::int32_t Tokenizer::pad_id() const { return impl_->pad; }
std::int32_t Tokenizer::cls_id() const { return impl_->cls; }
std::int32_t Tokenizer::sep_id() const { return impl_->sep; }
std::int32_t Tokenizer::unk_id() const { return impl_->unk; }
std::size_t Tokenizer::vocab_size() const { return impl_->vocab.size(); }
std::int32_t Tokenizer::max_id() const { return impl_->max_id; }

}  // namespace ldaproj
