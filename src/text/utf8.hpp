// UTF-8 validation shared by the importers, the CLI and the tokenizer's callers.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ldaproj::text {

// Offset of the first byte that is not well-formed UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included), or nullopt.
std::optional<std::size_t> first_invalid_utf8(std::string_view text);

// "invalid UTF-8 at byte N (0xXX)" for the first bad byte of `text`, or "".
std::string describe_invalid_utf8(std::string_view text);

}  // namespace ldaproj::text
