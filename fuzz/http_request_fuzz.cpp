// libFuzzer target: raw bytes as a client would send them to `ldaproj serve`,
// through the same Beast parser settings as src/serve/http_listener.cpp
// (pipelined: one message after another) and the header rules of
// src/serve/request_policy.hpp. Parsing may refuse anything; what it accepts
// must respect the limits, and the rules must give consistent answers.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "serve/http_message.hpp"
#include "serve/request_policy.hpp"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace api = ldaproj::serve;

constexpr std::size_t kHeaderLimit = 2048;
constexpr std::size_t kBodyLimit = 4096;

void check_rules(const api::HttpRequest& head) {
  const std::string_view host = head.header("Host");
  if (const auto name = api::host_of_authority(host)) {
    if (name->empty()) std::abort();
    for (char c : *name) {
      if (c >= 'A' && c <= 'Z') std::abort();  // lower-cased
    }
    // A parsed host is allowed by its own name and by "*".
    if (!api::host_allowed(host, {*name}) || !api::host_allowed(host, {"*"})) std::abort();
  } else if (api::host_allowed(host, {"localhost", "*"})) {
    std::abort();  // an unparsable Host is never allowed
  }
  const std::string_view origin = head.header("Origin");
  if (api::same_origin(origin, host) && !api::origin_allowed(origin, host, {})) std::abort();
  if (!origin.empty() && !api::origin_allowed(origin, host, {"*"})) std::abort();
  if (const auto token = api::bearer_token(head.header("Authorization"))) {
    if (token->empty() || token->front() == ' ' || token->back() == ' ') std::abort();
  }
  (void)api::unambiguous_framing(head);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  beast::flat_buffer buffer;
  auto space = buffer.prepare(size);
  std::memcpy(space.data(), data, size);
  buffer.commit(size);
  for (int message = 0; message < 8 && buffer.size() > 0; ++message) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(kBodyLimit);
    parser.eager(true);
    beast::error_code ec;
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) {
      parser.put_eof(ec);
    }
    if (ec || !parser.is_done()) return 0;
    const auto& m = parser.get();
    if (m.body().size() > kBodyLimit) std::abort();
    api::HttpRequest head;
    head.method = std::string(m.method_string());
    head.target = std::string(m.target());
    head.version = static_cast<int>(m.version());
    for (const auto& field : m) head.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    check_rules(head);
  }
  return 0;
}
