// JSON parsing that refuses an object repeating a key. nlohmann keeps the
// last value of a repeated key, so `{"answer": "a", "answer": "b"}` would
// silently drop "a"; a file or request that says two things is refused.
// Header-only so every target that parses JSON (the library, the fuzzers)
// gets it without another source file.
#pragma once
#include <cstddef>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "ldaproj/error.hpp"

namespace ldaproj {

// An object in the text repeats `key`; `offset` is the byte offset (from the
// start of the parsed text) of the repeated key's opening quote.
class DuplicateJsonKey : public InputError {
 public:
  DuplicateJsonKey(std::string key_, std::size_t offset_)
      : InputError("the key \"" + key_ + "\" appears twice in the same object; keep one"),
        key(std::move(key_)),
        offset(offset_) {}
  std::string key;
  std::size_t offset;
};

namespace strict_json_detail {

// Iterator over the text that records how far the parser has read, so the
// SAX handler knows where a key ended (nlohmann does not pass positions).
struct TrackingIterator {
  using iterator_category = std::forward_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;
  const char* at = nullptr;
  const char** furthest = nullptr;

  reference operator*() const { return *at; }
  TrackingIterator& operator++() {
    ++at;
    if (at > *furthest) *furthest = at;
    return *this;
  }
  TrackingIterator operator++(int) {
    TrackingIterator before = *this;
    ++*this;
    return before;
  }
  bool operator==(const TrackingIterator& other) const { return at == other.at; }
  bool operator!=(const TrackingIterator& other) const { return at != other.at; }
};

template <class BasicJson>
class StrictDomParser : public nlohmann::detail::json_sax_dom_parser<BasicJson> {
  using Base = nlohmann::detail::json_sax_dom_parser<BasicJson>;

 public:
  StrictDomParser(BasicJson& root, std::string_view text, const char** furthest)
      : Base(root, true), text_(text), furthest_(furthest) {}

  bool start_object(std::size_t elements) {
    keys_.emplace_back();
    return Base::start_object(elements);
  }
  bool end_object() {
    keys_.pop_back();
    return Base::end_object();
  }
  bool key(typename BasicJson::string_t& value) {
    if (!keys_.back().insert(value).second) throw DuplicateJsonKey(value, key_start());
    return Base::key(value);
  }

 private:
  // The parser has just read the key's closing quote; its opening quote is
  // the nearest earlier quote not escaped by an odd run of backslashes.
  std::size_t key_start() const {
    std::size_t end = static_cast<std::size_t>(*furthest_ - text_.data());
    if (end > 0) --end;  // the closing quote
    for (std::size_t i = end; i-- > 0;) {
      if (text_[i] != '"') continue;
      std::size_t slashes = 0;
      while (slashes < i && text_[i - 1 - slashes] == '\\') ++slashes;
      if (slashes % 2 == 0) return i;
    }
    return 0;
  }

  std::string_view text_;
  const char** furthest_;
  std::vector<std::unordered_set<typename BasicJson::string_t>> keys_;
};

}  // namespace strict_json_detail

// Parses `text` as one JSON document like BasicJson::parse(text): the same
// nlohmann parse_error (syntax) and out_of_range (a number beyond a double)
// exceptions, plus DuplicateJsonKey for an object that repeats a key.
template <class BasicJson = nlohmann::json>
BasicJson parse_json_strict(std::string_view text) {
  BasicJson root;
  const char* furthest = text.data();
  strict_json_detail::StrictDomParser<BasicJson> handler(root, text, &furthest);
  strict_json_detail::TrackingIterator first{text.data(), &furthest};
  strict_json_detail::TrackingIterator last{text.data() + text.size(), &furthest};
  BasicJson::sax_parse(first, last, &handler);
  return root;
}

}  // namespace ldaproj
