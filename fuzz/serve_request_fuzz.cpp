// libFuzzer target: what `ldaproj serve` does with a POST body before any
// model work, for /v1/search, /v1/project and /v1/embed (src/serve/api.hpp,
// in the order the handlers in src/serve/server.cpp call it). Every rejection
// must be an ApiError with a 4xx status and a code; anything accepted must be
// within the limits.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz_support.hpp"
#include "serve/api.hpp"

namespace {

using ldaproj::serve::ApiError;
using ldaproj::serve::Limits;
using ldaproj::serve::QueryInput;
namespace api = ldaproj::serve;

constexpr std::size_t kDim = 8;

void check_input(const QueryInput& in, const Limits& limits, bool allow_embeddings) {
  if (in.size() == 0 || in.size() > limits.max_batch) std::abort();
  if (!in.batch && in.size() != 1) std::abort();
  for (const std::string& text : in.texts) {
    if (text.empty() || text.size() > limits.max_text_bytes) std::abort();
  }
  if (!in.from_text()) {
    if (!allow_embeddings || in.embeddings.cols != kDim) std::abort();
    if (in.embeddings.data.size() != in.embeddings.rows * in.embeddings.cols) std::abort();
    for (const float v : in.embeddings.data) {
      if (!std::isfinite(v)) std::abort();
    }
  }
}

void search_or_project(const std::string& body_text, const Limits& limits, bool search) {
  const auto body = api::parse_object(body_text);
  if (search) {
    api::reject_unknown_fields(body, {"text", "texts", "embedding", "embeddings", "method", "top_k", "temperature",
                                      "include_routing", "routing_top", "reject_below", "blend_questions",
                                      "blend_direct"});
  } else {
    api::reject_unknown_fields(body, {"text", "texts", "embedding", "embeddings", "method", "temperature",
                                      "routing_top", "blend_questions", "blend_direct"});
  }
  // The handler then looks the name up with parse_method (422 unknown_method).
  (void)api::read_string(body, "method");
  const QueryInput in = api::read_query_input(body, limits, kDim, true);
  check_input(in, limits, true);
  if (search) {
    const std::size_t top_k = api::read_count(body, "top_k", 5, 1, limits.max_top_k);
    if (top_k < 1 || top_k > limits.max_top_k) std::abort();
  }
  if (const auto t = api::read_temperature(body); t && !(std::isfinite(*t) && *t > 0)) std::abort();
  if (search) {
    if (const auto x = api::read_number(body, "reject_below"); x && !std::isfinite(*x)) std::abort();
  }
  for (const char* blend : {"blend_questions", "blend_direct"}) {
    if (const auto b = api::read_fraction(body, blend); b && !(*b >= 0.0f && *b < 1.0f)) std::abort();
  }
  if (search) (void)api::read_flag(body, "include_routing", false);
  const std::size_t routing_top = api::read_count(body, "routing_top", 8, 1, 100000);
  if (routing_top < 1 || routing_top > 100000) std::abort();
}

void embed(const std::string& body_text, const Limits& limits) {
  const auto body = api::parse_object(body_text);
  api::reject_unknown_fields(body, {"text", "texts"});
  check_input(api::read_query_input(body, limits, kDim, false), limits, false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  Limits limits;
  limits.max_batch = 4;
  limits.max_text_bytes = 64;
  limits.max_top_k = 10;
  for (int endpoint = 0; endpoint < 3; ++endpoint) {
    try {
      if (endpoint == 2) {
        embed(body, limits);
      } else {
        search_or_project(body, limits, endpoint == 0);
      }
    } catch (const ApiError& e) {
      if (e.status() < 400 || e.status() > 499 || e.code().empty()) std::abort();
    } catch (const std::exception& e) {
      ldaproj::fuzzing::unexpected(e);
    }
  }
  return 0;
}
