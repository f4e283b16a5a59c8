// The JSON API's request reading and error type: every check a request body
// goes through, each failing with the HTTP status and code the API documents
// (docs/API.md).
#pragma once
#include <cstddef>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj::serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string code_;
};

// {"error": {"code": ..., "message": ...}}
std::string error_body(const std::string& code, const std::string& message);

struct Limits {
  std::size_t max_batch = 64;
  std::size_t max_text_bytes = 4096;
  std::size_t max_top_k = 100;
};

// The body as a JSON object; 400 invalid_json otherwise.
nlohmann::json parse_object(const std::string& body);

// 400 unknown_field naming the first field not in `allowed` (catches typos
// such as "topk" that would otherwise be silently ignored).
void reject_unknown_fields(const nlohmann::json& body, std::initializer_list<std::string_view> allowed);

// The queries of a request: exactly one of "text" (string), "texts" (list),
// and, when allowed, "embedding" (numbers) or "embeddings" (list of lists).
struct QueryInput {
  bool batch = false;               // the list form was used
  std::vector<std::string> texts;   // text forms
  Matrix embeddings;                // embedding forms
  bool from_text() const { return !texts.empty(); }
  std::size_t size() const { return from_text() ? texts.size() : embeddings.rows; }
};
QueryInput read_query_input(const nlohmann::json& body, const Limits& limits, std::size_t dim,
                            bool allow_embeddings);

// Optional fields with their checks; `fallback` when absent.
std::size_t read_count(const nlohmann::json& body, const char* field, std::size_t fallback,
                       std::size_t min, std::size_t max);
std::optional<float> read_temperature(const nlohmann::json& body);
// Any finite number (422 invalid_value otherwise); nullopt when absent or null.
std::optional<float> read_number(const nlohmann::json& body, const char* field);
// A number in [0, 1) (a blend weight; 422 invalid_value outside, checked after
// rounding to float so 0.99999999 is refused too); nullopt when absent or null.
std::optional<float> read_fraction(const nlohmann::json& body, const char* field);
bool read_flag(const nlohmann::json& body, const char* field, bool fallback);
std::optional<std::string> read_string(const nlohmann::json& body, const char* field);

}  // namespace ldaproj::serve
