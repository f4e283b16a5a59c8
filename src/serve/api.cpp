// Reading and checking API request bodies.
#include "serve/api.hpp"

#include "common/strict_json.hpp"

#include <cmath>
#include <limits>
#include <string>

namespace ldaproj::serve {

using nlohmann::json;

namespace {

// json::type_name() with an article, for messages like "got a string".
std::string described_type(const json& v) {
  switch (v.type()) {
    case json::value_t::object: return "an object";
    case json::value_t::array: return "a list";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::null: return "null";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    default: return v.type_name();
  }
}

ApiError wrong_type(const std::string& field, const char* expected, const json& got) {
  return ApiError(400, "invalid_field", "field \"" + field + "\" must be " + expected + ", got " +
                                            described_type(got));
}

std::string checked_text(const json& v, const std::string& field, const Limits& limits) {
  if (!v.is_string()) throw wrong_type(field, "a string", v);
  std::string text = v.get<std::string>();
  if (text.size() > limits.max_text_bytes) {
    throw ApiError(413, "text_too_long", field + " is " + std::to_string(text.size()) +
                                             " bytes; the limit is " + std::to_string(limits.max_text_bytes) +
                                             " bytes per text");
  }
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw ApiError(422, "empty_text", field + " is empty; give the question as text");
  }
  return text;
}

void checked_vector(const json& v, const std::string& field, std::size_t dim, float* out) {
  if (!v.is_array()) throw wrong_type(field, "a list of numbers", v);
  for (std::size_t j = 0; j < v.size(); ++j) {
    if (!v[j].is_number()) throw wrong_type(field + "[" + std::to_string(j) + "]", "a number", v[j]);
  }
  if (v.size() != dim) {
    throw ApiError(422, "dimension_mismatch", field + " has " + std::to_string(v.size()) +
                                                  " values; the served model's embeddings have " +
                                                  std::to_string(dim));
  }
  for (std::size_t j = 0; j < dim; ++j) {
    const double x = v[j].get<double>();
    if (!(std::abs(x) <= std::numeric_limits<float>::max())) {
      throw ApiError(422, "invalid_value", field + "[" + std::to_string(j) + "] is out of the float range");
    }
    out[j] = static_cast<float>(x);
  }
}

const json& checked_batch(const json& v, const std::string& field, const Limits& limits) {
  if (!v.is_array()) throw wrong_type(field, "a list", v);
  if (v.empty()) throw ApiError(422, "empty_batch", field + " is an empty list");
  if (v.size() > limits.max_batch) {
    throw ApiError(413, "batch_too_large", field + " has " + std::to_string(v.size()) +
                                               " items; the limit is " + std::to_string(limits.max_batch) +
                                               " per request");
  }
  return v;
}

}  // namespace

std::string error_body(const std::string& code, const std::string& message) {
  return json{{"error", {{"code", code}, {"message", message}}}}.dump(-1, ' ', false,
                                                                      json::error_handler_t::replace);
}

json parse_object(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw ApiError(400, "invalid_json", "the request body is empty; send a JSON object");
  }
  json parsed;
  try {
    parsed = parse_json_strict(body);
  } catch (const DuplicateJsonKey& e) {
    // Two values for one field: which one a proxy or another reader would
    // take is anyone's guess, so neither is.
    throw ApiError(400, "invalid_json", "the request body repeats the field \"" + e.key + "\" (at byte " +
                                            std::to_string(e.offset) + "); send each field once");
  } catch (const json::exception& e) {
    // parse_error, or out_of_range for a number beyond a double (1e999).
    throw ApiError(400, "invalid_json", std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!parsed.is_object()) {
    throw ApiError(400, "invalid_json", "the request body must be a JSON object, got " + described_type(parsed));
  }
  return parsed;
}

void reject_unknown_fields(const json& body, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : body.items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || key == a;
    if (known) continue;
    std::string list;
    for (std::string_view a : allowed) list += std::string(list.empty() ? "" : ", ") + std::string(a);
    throw ApiError(400, "unknown_field", "unknown field \"" + key + "\"; this endpoint takes " + list);
  }
}

QueryInput read_query_input(const json& body, const Limits& limits, std::size_t dim, bool allow_embeddings) {
  std::vector<const char*> present;
  for (const char* f : {"text", "texts", "embedding", "embeddings"}) {
    if (body.contains(f)) present.push_back(f);
  }
  const char* expected = allow_embeddings ? "one of \"text\", \"texts\", \"embedding\" or \"embeddings\""
                                          : "\"text\" or \"texts\"";
  if (present.size() != 1) {
    throw ApiError(400, "missing_input",
                   std::string(present.empty() ? "no query given" : "several query forms given") +
                       "; give exactly " + expected);
  }
  const std::string field = present.front();
  const json& v = body.at(field);
  QueryInput in;
  if (field == "text") {
    in.texts.push_back(checked_text(v, "text", limits));
  } else if (field == "texts") {
    in.batch = true;
    const json& list = checked_batch(v, "texts", limits);
    for (std::size_t i = 0; i < list.size(); ++i) {
      in.texts.push_back(checked_text(list[i], "texts[" + std::to_string(i) + "]", limits));
    }
  } else if (!allow_embeddings) {
    throw ApiError(400, "missing_input", "this endpoint takes " + std::string(expected));
  } else if (field == "embedding") {
    in.embeddings = Matrix(1, dim);
    checked_vector(v, "embedding", dim, in.embeddings.row(0));
  } else {
    in.batch = true;
    const json& list = checked_batch(v, "embeddings", limits);
    in.embeddings = Matrix(list.size(), dim);
    for (std::size_t i = 0; i < list.size(); ++i) {
      checked_vector(list[i], "embeddings[" + std::to_string(i) + "]", dim, in.embeddings.row(i));
    }
  }
  return in;
}

std::size_t read_count(const json& body, const char* field, std::size_t fallback, std::size_t min,
                       std::size_t max) {
  if (!body.contains(field)) return fallback;
  const json& v = body.at(field);
  if (!v.is_number_integer()) throw wrong_type(field, "an integer", v);
  const bool negative = !v.is_number_unsigned() && v.get<std::int64_t>() < 0;
  const std::size_t n = negative ? 0 : v.get<std::size_t>();
  if (negative || n < min || n > max) {
    throw ApiError(422, "invalid_value", std::string("field \"") + field + "\" must be between " +
                                             std::to_string(min) + " and " + std::to_string(max) +
                                             ", got " + v.dump());
  }
  return n;
}

std::optional<float> read_temperature(const json& body) {
  if (!body.contains("temperature") || body.at("temperature").is_null()) return std::nullopt;
  const json& v = body.at("temperature");
  if (!v.is_number()) throw wrong_type("temperature", "a number", v);
  const double t = v.get<double>();
  if (!(t > 0.0) || !(t <= 100.0)) {
    throw ApiError(422, "invalid_value",
                   "field \"temperature\" must be greater than 0 and at most 100, got " + v.dump());
  }
  return static_cast<float>(t);
}

std::optional<float> read_number(const json& body, const char* field) {
  if (!body.contains(field) || body.at(field).is_null()) return std::nullopt;
  const json& v = body.at(field);
  if (!v.is_number()) throw wrong_type(field, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || std::abs(x) > 1e30) {
    throw ApiError(422, "invalid_value", std::string("field \"") + field + "\" must be a finite number, got " + v.dump());
  }
  return static_cast<float>(x);
}

std::optional<float> read_fraction(const json& body, const char* field) {
  const std::optional<float> x = read_number(body, field);
  if (x && !(*x >= 0.0f && *x < 1.0f)) {
    throw ApiError(422, "invalid_value", std::string("field \"") + field + "\" must be at least 0 and less than 1, got " +
                                             body.at(field).dump());
  }
  return x;
}

bool read_flag(const json& body, const char* field, bool fallback) {
  if (!body.contains(field)) return fallback;
  const json& v = body.at(field);
  if (!v.is_boolean()) throw wrong_type(field, "true or false", v);
  return v.get<bool>();
}

std::optional<std::string> read_string(const json& body, const char* field) {
  if (!body.contains(field) || body.at(field).is_null()) return std::nullopt;
  const json& v = body.at(field);
  if (!v.is_string()) throw wrong_type(field, "a string", v);
  return v.get<std::string>();
}

}  // namespace ldaproj::serve
