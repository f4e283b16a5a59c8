// Header lookups on the transport-free request.
#include "serve/http_message.hpp"

#include <cctype>

namespace ldaproj::serve {

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (equals_ignoring_case(key, name)) return value;
  }
  return {};
}

bool HttpRequest::has_header(std::string_view name) const { return header_count(name) > 0; }

std::size_t HttpRequest::header_count(std::string_view name) const {
  std::size_t n = 0;
  for (const auto& entry : headers) n += equals_ignoring_case(entry.first, name) ? 1 : 0;
  return n;
}

}  // namespace ldaproj::serve
