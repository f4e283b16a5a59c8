// Who may talk to the server: the Host allow-list that stops DNS rebinding,
// the same-origin rule for browser requests that change state, and the
// bearer-token syntax. Pure functions of header values, so each rule has its
// own tests and a fuzz target.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ldaproj::serve {

struct HttpRequest;

// At most one Content-Length, holding one number, and never beside
// Transfer-Encoding: anything else is read differently by different servers
// and proxies (request smuggling), so it is refused rather than reconciled.
bool unambiguous_framing(const HttpRequest& head);

// The host part of a Host header ("Example.COM:8080" -> "example.com",
// "[::1]:80" -> "::1"), lower case, without a trailing dot; nullopt when the
// value is not a host[:port].
std::optional<std::string> host_of_authority(std::string_view authority);

// The names a server answers to when the operator added none: loopback ones,
// plus the listen address when it is a specific one (not 0.0.0.0 or ::).
std::vector<std::string> default_allowed_hosts(std::string_view listen_host);

// An allow-list entry matches a host exactly, "*" matches any, and an entry
// starting with "." matches that domain and its subdomains.
bool host_allowed(std::string_view host_header, const std::vector<std::string>& allowed);

// A browser request is same-origin when its Origin's host:port is the
// request's Host (default ports folded); "null" and malformed origins are not.
bool same_origin(std::string_view origin, std::string_view host_header);
// Allowed when there is no Origin (not a browser, or a same-origin GET), it is
// same-origin, or the operator listed it (exact, or "*").
bool origin_allowed(std::string_view origin, std::string_view host_header,
                    const std::vector<std::string>& allowed_origins);

// The token of "Authorization: Bearer TOKEN": the scheme is case-insensitive
// (RFC 9110 section 11.1); nullopt for another scheme or no token.
std::optional<std::string_view> bearer_token(std::string_view authorization);

}  // namespace ldaproj::serve
