// The HTTP request and response as the API sees them: plain values, free of
// the transport library, so the routes and their checks can be written and
// tested without a socket.
#pragma once
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ldaproj::serve {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // target without the query
  int version = 11;    // 10 or 11
  std::vector<std::pair<std::string, std::string>> headers;  // in arrival order
  std::string body;
  std::string remote;  // peer address

  // The first header of that name (case-insensitive), "" when absent.
  std::string_view header(std::string_view name) const;
  bool has_header(std::string_view name) const;
  std::size_t header_count(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // end the connection after this response

  void set_header(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
};

bool equals_ignoring_case(std::string_view a, std::string_view b);

}  // namespace ldaproj::serve
