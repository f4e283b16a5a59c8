// Host allow-list, same-origin check and bearer parsing (request_policy.hpp).
#include "serve/request_policy.hpp"

#include <algorithm>
#include <cctype>

#include "serve/http_message.hpp"

namespace ldaproj::serve {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() <= 5 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Characters a registered name or IPv4 address may hold (RFC 3986 reg-name
// without percent-encoding, which no real Host header uses).
bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~';
}

struct Authority {
  std::string host;  // lower case, no brackets, no trailing dot
  std::string port;  // "" when absent
};

std::optional<Authority> parse_authority(std::string_view a) {
  if (a.empty() || a.size() > 255) return std::nullopt;
  Authority out;
  std::string_view rest;
  if (a.front() == '[') {
    const std::size_t close = a.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    const std::string_view inside = a.substr(1, close - 1);
    if (!std::all_of(inside.begin(), inside.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'; })) {
      return std::nullopt;
    }
    out.host = lower(inside);
    rest = a.substr(close + 1);
  } else {
    const std::size_t colon = a.find(':');
    const std::string_view name = a.substr(0, colon);
    if (name.empty() || !std::all_of(name.begin(), name.end(), name_char)) return std::nullopt;
    out.host = lower(name);
    rest = colon == std::string_view::npos ? std::string_view() : a.substr(colon);
  }
  if (!rest.empty()) {
    if (rest.front() != ':' || !all_digits(rest.substr(1))) return std::nullopt;
    out.port = std::string(rest.substr(1));
  }
  while (!out.host.empty() && out.host.back() == '.') out.host.pop_back();
  if (out.host.empty()) return std::nullopt;
  return out;
}

}  // namespace

bool unambiguous_framing(const HttpRequest& head) {
  const std::size_t lengths = head.header_count("Content-Length");
  if (lengths > 1) return false;
  if (lengths == 1 && head.header("Content-Length").find(',') != std::string_view::npos) return false;
  return !(lengths == 1 && head.has_header("Transfer-Encoding"));
}

std::optional<std::string> host_of_authority(std::string_view authority) {
  auto a = parse_authority(authority);
  if (!a) return std::nullopt;
  return std::move(a->host);
}

std::vector<std::string> default_allowed_hosts(std::string_view listen_host) {
  std::vector<std::string> hosts{"localhost", "127.0.0.1", "::1"};
  std::string listen = lower(listen_host);
  if (!listen.empty() && listen.front() == '[' && listen.back() == ']') listen = listen.substr(1, listen.size() - 2);
  if (!listen.empty() && listen != "0.0.0.0" && listen != "::" &&
      std::find(hosts.begin(), hosts.end(), listen) == hosts.end()) {
    hosts.push_back(listen);
  }
  return hosts;
}

bool host_allowed(std::string_view host_header, const std::vector<std::string>& allowed) {
  const auto host = host_of_authority(host_header);
  if (!host) return false;
  for (const std::string& raw : allowed) {
    const std::string entry = lower(raw);
    if (entry == "*" || entry == *host) return true;
    if (entry.size() > 1 && entry.front() == '.') {
      if (*host == entry.substr(1)) return true;
      if (host->size() > entry.size() && host->compare(host->size() - entry.size(), entry.size(), entry) == 0) {
        return true;
      }
    }
  }
  return false;
}

bool same_origin(std::string_view origin, std::string_view host_header) {
  std::string_view default_port;
  if (origin.substr(0, 7) == "http://") {
    default_port = "80";
    origin.remove_prefix(7);
  } else if (origin.substr(0, 8) == "https://") {
    default_port = "443";
    origin.remove_prefix(8);
  } else {
    return false;  // "null", other schemes, garbage
  }
  const auto from = parse_authority(origin);
  const auto to = parse_authority(host_header);
  if (!from || !to) return false;
  const std::string_view from_port = from->port.empty() ? default_port : std::string_view(from->port);
  const std::string_view to_port = to->port.empty() ? default_port : std::string_view(to->port);
  return from->host == to->host && from_port == to_port;
}

bool origin_allowed(std::string_view origin, std::string_view host_header,
                    const std::vector<std::string>& allowed_origins) {
  if (origin.empty()) return true;
  if (same_origin(origin, host_header)) return true;
  for (const std::string& entry : allowed_origins) {
    if (entry == "*" || equals_ignoring_case(entry, origin)) return true;
  }
  return false;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
  constexpr std::string_view scheme = "bearer";
  if (authorization.size() <= scheme.size() || !equals_ignoring_case(authorization.substr(0, scheme.size()), scheme)) {
    return std::nullopt;
  }
  std::string_view rest = authorization.substr(scheme.size());
  if (rest.front() != ' ' && rest.front() != '\t') return std::nullopt;
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  return rest;
}

}  // namespace ldaproj::serve
