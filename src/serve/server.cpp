// The HTTP server: routes, API key check, limits, JSON errors, metrics and the
// atomic model swap behind reload.
//
// Concurrency: every request takes a snapshot (shared_ptr) of the loaded model
// when it starts and uses only that, so a reload that swaps the pointer never
// changes what a running request sees; the old model is freed by whichever
// request drops the last reference. Searcher::search is const and global-w is
// fitted before a model is published, so models are read-only once served.
// Encoder::encode keeps all its scratch memory on the stack of the call and
// the tokenizer is immutable, so one encoder serves every worker thread; it
// runs single-threaded BLAS so concurrent requests spread over the cores.
#include "ldaproj/server.hpp"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <unordered_map>

#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "serve/api.hpp"
#include "serve/metrics.hpp"
#include "serve/web_assets.hpp"

namespace ldaproj {

namespace fs = std::filesystem;
using nlohmann::json;
using serve::ApiError;

namespace {

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Prometheus sample text; 7 significant digits is a float's precision.
std::string number(double v, int digits = 15) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

// The double whose shortest decimal form is the float's, so JSON shows 0.1
// rather than 0.10000000149011612 (and responses stay smaller).
double tidy(float f) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf - 1, f);
  *end = '\0';
  return std::strtod(buf, nullptr);
}

std::vector<double> tidy(const float* v, std::size_t n) {
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = tidy(v[i]);
  return out;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Compares without an early exit, so response time does not reveal how much
// of a guessed key was right.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

struct ClusterInfo {
  std::string id, name, description;
  std::int64_t questions = 0, answers = 0;
  bool head = false;
};

struct MethodInfo {
  Method method;
  bool routing = false;  // returns routing weights (and so depends on temperature)
};

// One loaded projection. Immutable once published; shared by the requests
// that took it.
struct LoadedModel {
  Store store;  // declared before searcher: the searcher keeps a pointer to it
  Searcher searcher;
  ServedModel info;
  std::vector<MethodInfo> methods;
  std::vector<ClusterInfo> clusters;
  std::unordered_map<std::string, std::string> display_names;  // cluster id -> name
  std::string centroid_method, created_at;
  json training_metrics = json::object();  // what `train` stored with the projection
  double loaded_at = 0.0;

  // One thread per request: parallelism comes from concurrent requests, and
  // OpenBLAS's global thread setting then never changes under a running call.
  static SearcherOptions single_threaded() {
    SearcherOptions o;
    o.teacher.threads = 1;
    o.answer_index.threads = 1;
    return o;
  }
  LoadedModel(Store s, const std::string& projection)
      : store(std::move(s)), searcher(Searcher::load(store, projection, single_threaded())) {}

  const MethodInfo* find(Method m) const {
    for (const MethodInfo& info : methods) {
      if (info.method == m) return &info;
    }
    return nullptr;
  }
};

Store open_store(const fs::path& db) {
  if (!fs::exists(db)) {
    throw InputError("database " + db.string() + " does not exist; create it with `ldaproj import`, " +
                     "`ldaproj embed` and `ldaproj train`");
  }
  return Store::open_read_only(db);
}

// Per-request facts the wrapper records in the metrics.
struct RequestContext {
  std::string body;  // POST body
  std::string method_label = "none";
  std::size_t queries = 0;
};

json answers_json(const std::vector<RankedAnswer>& answers, const LoadedModel& m) {
  json out = json::array();
  for (const RankedAnswer& a : answers) {
    json item{{"cluster", a.cluster}, {"answer_id", a.answer_id}, {"score", tidy(a.score)}, {"text", a.text}};
    if (auto it = m.display_names.find(a.cluster); it != m.display_names.end()) item["name"] = it->second;
    out.push_back(std::move(item));
  }
  return out;
}

json routing_json(const std::vector<RoutingEntry>& routing, const LoadedModel& m) {
  json out = json::array();
  for (const RoutingEntry& r : routing) {
    json item{{"cluster", r.cluster}, {"weight", tidy(r.weight)}, {"similarity", tidy(r.similarity)}};
    if (auto it = m.display_names.find(r.cluster); it != m.display_names.end()) item["name"] = it->second;
    out.push_back(std::move(item));
  }
  return out;
}

// The endpoints with fixed paths; anything else is counted as "other".
const std::map<std::string, std::string>& known_endpoints() {
  static const std::map<std::string, std::string> endpoints = {
      {"/v1/search", "POST"}, {"/v1/project", "POST"}, {"/v1/embed", "POST"},
      {"/v1/reload", "POST"}, {"/v1/clusters", "GET"}, {"/v1/info", "GET"},
      {"/healthz", "GET"},    {"/metrics", "GET"}};
  return endpoints;
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  serve::Limits limits;
  Encoder encoder;
  std::atomic<std::shared_ptr<const LoadedModel>> model;
  std::mutex reload_mutex;  // one reload at a time
  serve::Metrics metrics;
  std::atomic<int> in_flight{0};
  std::mutex log_mutex;
  double started_at = unix_seconds();

  httplib::Server http;
  std::mutex lifecycle_mutex;
  std::condition_variable stopped_cv;
  std::thread listener;
  bool started = false, stopped = false;
  int port = 0;

  Impl(ServerOptions o, Encoder e) : options(std::move(o)), encoder(std::move(e)) {
    limits.max_batch = options.max_batch;
    limits.max_text_bytes = options.max_text_bytes;
    limits.max_top_k = options.max_top_k;
  }

  std::shared_ptr<const LoadedModel> load_model(std::uint64_t generation) const {
    auto m = std::make_shared<LoadedModel>(open_store(options.db), options.projection);
    if (m->searcher.model_name() != encoder.model_name()) {
      throw InputError("projection \"" + m->searcher.projection_name() + "\" was trained on " +
                       m->searcher.model_name() + " embeddings but the encoder is " + encoder.model_name() +
                       "; pass --model with the matching model directory");
    }
    ServedModel& info = m->info;
    info.projection = m->searcher.projection_name();
    info.model = m->searcher.model_name();
    info.temperature = m->searcher.temperature();
    info.heads = m->searcher.num_heads();
    info.answers = m->searcher.num_answers();
    info.dim = encoder.dim();
    info.generation = generation;

    // A method is offered when the library can answer by it on this store;
    // trying each also fits what a method builds lazily (global-w), so no
    // request pays for it and nothing touches the store after publication.
    Matrix probe(1, info.dim);
    probe(0, 0) = 1.0f;
    for (Method method : kAllMethods) {
      SearchOptions o;
      o.method = method;
      o.top_k = 1;
      o.routing_top = 1;
      try {
        const auto r = m->searcher.search(probe, o);
        m->methods.push_back({method, !r.empty() && !r.front().routing.empty()});
        info.methods.emplace_back(to_string(method));
      } catch (const std::exception&) {
        // Not available on this store (e.g. not trained); not offered.
      }
    }
    if (m->methods.empty()) throw Error("no search method works on " + options.db.string());

    std::unordered_map<std::int64_t, std::size_t> index_of;  // cluster id -> position in m->clusters
    for (const Cluster& c : m->store.clusters()) {
      index_of.emplace(c.id, m->clusters.size());
      m->clusters.push_back({c.external_id, c.name, c.description, 0, 0, false});
      if (!c.name.empty()) m->display_names.emplace(c.external_id, c.name);
    }
    auto cluster = [&](std::int64_t id) -> ClusterInfo* {
      const auto it = index_of.find(id);
      return it == index_of.end() ? nullptr : &m->clusters[it->second];
    };
    for (const Question& q : m->store.questions()) {
      if (ClusterInfo* c = cluster(q.cluster_id)) ++c->questions;
    }
    for (const Answer& a : m->store.answers()) {
      if (ClusterInfo* c = cluster(a.cluster_id)) ++c->answers;
    }
    if (const auto projection = m->store.load_projection(info.projection)) {
      for (const Head& h : projection->heads) {
        if (ClusterInfo* c = cluster(h.cluster_id)) c->head = true;
      }
      m->centroid_method = projection->centroid_method;
      m->created_at = projection->created_at;
      const json stored = json::parse(projection->metrics_json, nullptr, false);
      if (stored.is_object()) m->training_metrics = stored;
    }
    m->loaded_at = unix_seconds();
    return m;
  }

  // ------------------------------------------------------------ plumbing
  void log(const httplib::Request& req, int status, double seconds) {
    if (!options.access_log) return;
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.2f", seconds * 1000.0);
    std::lock_guard lock(log_mutex);
    options.access_log(req.method + " " + req.path + " " + std::to_string(status) + " " + ms + " ms");
  }

  void check_key(const httplib::Request& req) const {
    if (options.api_key.empty()) return;
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    if (header.size() < scheme.size() || header.compare(0, scheme.size(), scheme) != 0) {
      throw ApiError(401, "unauthorized",
                     "this server needs an API key: send the header \"Authorization: Bearer KEY\"");
    }
    if (!same_secret(std::string_view(header).substr(scheme.size()), options.api_key)) {
      throw ApiError(401, "unauthorized", "the API key is wrong");
    }
  }

  static void reply(httplib::Response& res, const json& body, int status = 200) {
    res.status = status;
    res.set_content(dump(body), "application/json");
  }

  static void reply_error(httplib::Response& res, int status, const std::string& code,
                          const std::string& message) {
    res.status = status;
    if (status == 401) res.set_header("WWW-Authenticate", "Bearer");
    res.set_content(serve::error_body(code, message), "application/json");
  }

  using Handler = std::function<void(const httplib::Request&, httplib::Response&, RequestContext&)>;

  // Every route goes through here: body read under the size limit, key
  // check, any failure turned into a JSON error with its status, and the
  // request counted and timed.
  void handle(const std::string& endpoint, bool needs_key, const Handler& handler, const httplib::Request& req,
              httplib::Response& res, const httplib::ContentReader* body_reader) {
    const auto start = std::chrono::steady_clock::now();
    ++in_flight;
    RequestContext ctx;
    res.status = 200;
    try {
      // Without a length or chunked encoding a request has no body (RFC 9112).
      const bool has_body = req.has_header("Content-Length") ||
                            req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
      if (body_reader && has_body) read_body(*body_reader, res, ctx.body);
      if (needs_key) check_key(req);
      handler(req, res, ctx);
    } catch (const ApiError& e) {
      reply_error(res, e.status(), e.code(), e.what());
    } catch (const InputError& e) {
      reply_error(res, 422, "invalid_value", e.what());
    } catch (const std::bad_alloc&) {
      reply_error(res, 500, "out_of_memory", "the server ran out of memory answering this request");
    } catch (const std::exception& e) {
      reply_error(res, 500, "internal", e.what());
    } catch (...) {
      reply_error(res, 500, "internal", "unexpected failure");
    }
    --in_flight;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.observe(endpoint, ctx.method_label, res.status, seconds, res.status == 200 ? ctx.queries : 0);
    log(req, res.status, seconds);
  }

  // POST bodies are read here rather than by httplib, which would parse
  // (and cap at 8 KiB) any body sent as application/x-www-form-urlencoded,
  // curl's default for -d.
  void read_body(const httplib::ContentReader& reader, httplib::Response& res, std::string& body) const {
    bool too_large = false;
    const bool complete = reader([&](const char* data, std::size_t n) {
      if (body.size() + n > options.max_body_bytes) {
        too_large = true;
        return false;
      }
      body.append(data, n);
      return true;
    });
    if (too_large || res.status == 413) {
      throw ApiError(413, "body_too_large", "the request body is larger than the limit of " +
                                                std::to_string(options.max_body_bytes) + " bytes");
    }
    if (!complete) throw ApiError(400, "bad_request", "the request body could not be read completely");
  }

  httplib::Server::Handler get_route(const std::string& endpoint, bool needs_key, Handler handler) {
    return [this, endpoint, needs_key, handler = std::move(handler)](const httplib::Request& req,
                                                                      httplib::Response& res) {
      handle(endpoint, needs_key, handler, req, res, nullptr);
    };
  }

  httplib::Server::HandlerWithContentReader post_route(const std::string& endpoint, Handler handler) {
    return [this, endpoint, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res,
                                                           const httplib::ContentReader& reader) {
      handle(endpoint, true, handler, req, res, &reader);
    };
  }

  // Errors httplib produces itself (no route, body over the limit, malformed
  // request) get the same JSON shape as ours.
  void on_http_error(const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // already one of our JSON errors
    int status = res.status;
    std::string code = "http_error", message = "the request failed with HTTP status " + std::to_string(status);
    const auto known = known_endpoints().find(req.path);
    if (status == 404 && known != known_endpoints().end()) {
      status = 405;
      code = "method_not_allowed";
      message = req.method + " is not allowed on " + req.path + "; use " + known->second;
      res.set_header("Allow", known->second);
    } else if (status == 404) {
      code = "not_found";
      message = "no endpoint " + req.path + "; the API is under /v1/ (see docs/API.md)";
    } else if (status == 413) {
      code = "body_too_large";
      message = "the request body is larger than the limit of " + std::to_string(options.max_body_bytes) +
                " bytes";
    } else if (status == 400) {
      code = "bad_request";
      message = "the HTTP request is malformed (a POST needs a Content-Length, possibly 0, or a chunked body)";
    } else if (status == 414) {
      code = "uri_too_long";
      message = "the request path is too long";
    }
    reply_error(res, status, code, message);
    metrics.observe(known != known_endpoints().end() ? req.path : "other", "none", status, -1.0);
    log(req, status, 0.0);
  }

  // ------------------------------------------------------------ handlers
  std::shared_ptr<const LoadedModel> snapshot() const { return model.load(); }

  const MethodInfo& pick_method(const json& body, const LoadedModel& m, RequestContext& ctx) const {
    const std::string name = serve::read_string(body, "method").value_or("multi-head");
    Method method;
    try {
      method = parse_method(name);
    } catch (const InputError& e) {
      throw ApiError(422, "unknown_method", e.what());
    }
    const MethodInfo* info = m.find(method);
    if (!info) {
      std::string offered;
      for (const std::string& s : m.info.methods) offered += (offered.empty() ? "" : ", ") + s;
      throw ApiError(422, "method_unavailable", "method " + std::string(to_string(method)) +
                                                    " is not available on this store; it offers " + offered);
    }
    ctx.method_label = std::string(to_string(method));
    return *info;
  }

  // "temperature" is the routing temperature of the method asked for: the
  // teacher's (multi-head, sparse-teacher) or question-routing's own.
  static void set_temperature(SearchOptions& o, std::optional<float> t) {
    if (o.method == Method::QuestionRouting) {
      if (t) o.question_temperature = *t;
    } else {
      o.temperature = t;
    }
  }
  static float shown_temperature(const SearchOptions& o, const LoadedModel& m) {
    return o.method == Method::QuestionRouting ? o.question_temperature : o.temperature.value_or(m.info.temperature);
  }

  // Which blends a response echoes: those the request gave, and the server's
  // non-zero defaults it used.
  struct BlendsShown {
    bool questions = false, direct = false;
  };

  // multi-head's blends: the request's fields, else the server's defaults.
  // Other methods do not blend, so a non-zero field with them is refused
  // rather than silently ignored (0 means "no blend" for every method).
  BlendsShown set_blends(SearchOptions& o, const json& body) const {
    BlendsShown shown;
    const struct {
      const char* field;
      float fallback;
      float SearchOptions::*target;
      bool BlendsShown::*echo;
    } blends[] = {{"blend_questions", options.blend_questions, &SearchOptions::blend_questions, &BlendsShown::questions},
                  {"blend_direct", options.blend_direct, &SearchOptions::blend_direct, &BlendsShown::direct}};
    for (const auto& b : blends) {
      const std::optional<float> given = serve::read_fraction(body, b.field);
      if (o.method != Method::MultiHead) {
        if (given && *given != 0.0f) {
          throw ApiError(422, "invalid_value", std::string("field \"") + b.field +
                                                   "\" applies to method multi-head only, not " +
                                                   std::string(to_string(o.method)) + "; drop it or use multi-head");
        }
        continue;
      }
      o.*b.target = given.value_or(b.fallback);
      shown.*b.echo = given.has_value() || b.fallback != 0.0f;
    }
    return shown;
  }
  static void echo_blends(json& out, const SearchOptions& o, BlendsShown shown) {
    if (shown.questions) out["blend_questions"] = tidy(o.blend_questions);
    if (shown.direct) out["blend_direct"] = tidy(o.blend_direct);
  }

  Matrix queries_of(serve::QueryInput& in) const {
    if (!in.from_text()) return std::move(in.embeddings);
    return encoder.encode(in.texts);
  }

  void search(httplib::Response& res, RequestContext& ctx) {
    const json body = serve::parse_object(ctx.body);
    serve::reject_unknown_fields(body, {"text", "texts", "embedding", "embeddings", "method", "top_k",
                                        "temperature", "include_routing", "routing_top", "reject_below",
                                        "blend_questions", "blend_direct"});
    const auto m = snapshot();
    const MethodInfo& method = pick_method(body, *m, ctx);
    serve::QueryInput in = serve::read_query_input(body, limits, m->info.dim, true);
    SearchOptions o;
    o.method = method.method;
    o.top_k = serve::read_count(body, "top_k", 5, 1, limits.max_top_k);
    set_temperature(o, serve::read_temperature(body));
    o.reject_below = serve::read_number(body, "reject_below");
    const BlendsShown blends = set_blends(o, body);
    const bool routing = serve::read_flag(body, "include_routing", false);
    const std::size_t routing_top = serve::read_count(body, "routing_top", 8, 1, 100000);
    o.routing_top = routing ? routing_top : 0;
    ctx.queries = in.size();
    const auto results = m->searcher.search(queries_of(in), o);

    json out{{"projection", m->info.projection}, {"method", to_string(o.method)}};
    if (method.routing) out["temperature"] = tidy(shown_temperature(o, *m));
    if (o.reject_below) out["reject_below"] = tidy(*o.reject_below);
    echo_blends(out, o, blends);
    auto one = [&](std::size_t i) {
      json r{{"answers", answers_json(results[i].answers, *m)}};
      if (o.reject_below) {
        r["confidence"] = tidy(results[i].confidence);
        r["rejected"] = results[i].rejected;
      }
      if (in.from_text()) r["query"] = in.texts[i];
      if (routing && method.routing) r["routing"] = routing_json(results[i].routing, *m);
      return r;
    };
    if (in.batch) {
      out["results"] = json::array();
      for (std::size_t i = 0; i < results.size(); ++i) out["results"].push_back(one(i));
    } else {
      out.update(one(0));
    }
    reply(res, out);
  }

  void project(httplib::Response& res, RequestContext& ctx) {
    const json body = serve::parse_object(ctx.body);
    serve::reject_unknown_fields(body, {"text", "texts", "embedding", "embeddings", "method", "temperature",
                                        "routing_top", "blend_questions", "blend_direct"});
    const auto m = snapshot();
    const MethodInfo& method = pick_method(body, *m, ctx);
    serve::QueryInput in = serve::read_query_input(body, limits, m->info.dim, true);
    SearchOptions o;
    o.method = method.method;
    o.top_k = 1;
    set_temperature(o, serve::read_temperature(body));
    o.routing_top = serve::read_count(body, "routing_top", m->info.heads, 1, 100000);
    o.include_projection = true;
    const BlendsShown blends = set_blends(o, body);
    ctx.queries = in.size();
    const auto results = m->searcher.search(queries_of(in), o);

    json out{{"projection", m->info.projection}, {"method", to_string(o.method)}};
    if (method.routing) out["temperature"] = tidy(shown_temperature(o, *m));
    echo_blends(out, o, blends);
    auto one = [&](std::size_t i) {
      json r{{"embedding", tidy(results[i].projection.data(), results[i].projection.size())}};
      if (in.from_text()) r["query"] = in.texts[i];
      if (method.routing) r["routing"] = routing_json(results[i].routing, *m);
      return r;
    };
    if (in.batch) {
      out["results"] = json::array();
      for (std::size_t i = 0; i < results.size(); ++i) out["results"].push_back(one(i));
    } else {
      out.update(one(0));
    }
    reply(res, out);
  }

  void embed(httplib::Response& res, RequestContext& ctx) {
    const json body = serve::parse_object(ctx.body);
    serve::reject_unknown_fields(body, {"text", "texts"});
    serve::QueryInput in = serve::read_query_input(body, limits, encoder.dim(), false);
    ctx.queries = in.size();
    const Matrix e = encoder.encode(in.texts);
    json out{{"model", encoder.model_name()}, {"dim", e.cols}};
    auto row = [&](std::size_t i) { return tidy(e.row(i), e.cols); };
    if (in.batch) {
      out["embeddings"] = json::array();
      for (std::size_t i = 0; i < e.rows; ++i) out["embeddings"].push_back(row(i));
    } else {
      out["embedding"] = row(0);
    }
    reply(res, out);
  }

  json info_json(const LoadedModel& m) const {
    json methods = json::array();
    for (const MethodInfo& mi : m.methods) {
      methods.push_back({{"name", to_string(mi.method)}, {"routing", mi.routing}});
    }
    return {{"projection", m.info.projection},
            {"model", m.info.model},
            {"dim", m.info.dim},
            {"temperature", tidy(m.info.temperature)},
            {"heads", m.info.heads},
            {"answers", m.info.answers},
            {"centroid_method", m.centroid_method},
            {"created_at", m.created_at},
            {"training_metrics", m.training_metrics},
            {"methods", methods},
            {"default_method", "multi-head"},
            {"blend_questions", tidy(options.blend_questions)},
            {"blend_direct", tidy(options.blend_direct)},
            {"generation", m.info.generation},
            {"loaded_at", m.loaded_at},
            {"version", LDAPROJ_VERSION},
            {"limits",
             {{"max_body_bytes", options.max_body_bytes},
              {"max_batch", limits.max_batch},
              {"max_text_bytes", limits.max_text_bytes},
              {"max_top_k", limits.max_top_k}}}};
  }

  void clusters(const httplib::Request&, httplib::Response& res, RequestContext&) {
    const auto m = snapshot();
    json list = json::array();
    for (const ClusterInfo& c : m->clusters) {
      list.push_back({{"id", c.id}, {"name", c.name}, {"description", c.description}, {"questions", c.questions},
                      {"answers", c.answers}, {"head", c.head}});
    }
    reply(res, {{"projection", m->info.projection}, {"model", m->info.model}, {"clusters", list}});
  }

  void reload_endpoint(Server& owner, httplib::Response& res, const RequestContext& ctx) {
    // The body may be empty; when given it must be an empty object.
    if (ctx.body.find_first_not_of(" \t\r\n") != std::string::npos) {
      serve::reject_unknown_fields(serve::parse_object(ctx.body), {});
    }
    const auto before = snapshot();
    try {
      owner.reload();
    } catch (const std::exception& e) {
      throw ApiError(500, "reload_failed", std::string(e.what()) + "; still serving projection \"" +
                                               before->info.projection + "\" (generation " +
                                               std::to_string(before->info.generation) + ")");
    }
    const auto after = snapshot();
    reply(res, {{"reloaded", true},
                {"previous", {{"projection", before->info.projection}, {"generation", before->info.generation}}},
                {"served", info_json(*after)}});
  }

  std::string model_metrics() const {
    const auto m = snapshot();
    using serve::Metrics;
    std::string out;
    out += "# HELP ldaproj_model_info The served projection; the value is always 1.\n"
           "# TYPE ldaproj_model_info gauge\n";
    out += "ldaproj_model_info{projection=\"" + Metrics::escape_label(m->info.projection) + "\",model=\"" +
           Metrics::escape_label(m->info.model) + "\",heads=\"" + std::to_string(m->info.heads) +
           "\",answers=\"" + std::to_string(m->info.answers) + "\",dim=\"" + std::to_string(m->info.dim) +
           "\",temperature=\"" + number(m->info.temperature, 7) + "\"} 1\n";
    out += "# HELP ldaproj_model_generation 1 for the model loaded at start, +1 per successful reload.\n"
           "# TYPE ldaproj_model_generation gauge\n"
           "ldaproj_model_generation " + std::to_string(m->info.generation) + "\n";
    out += "# HELP ldaproj_model_loaded_timestamp_seconds When the served model was loaded.\n"
           "# TYPE ldaproj_model_loaded_timestamp_seconds gauge\n"
           "ldaproj_model_loaded_timestamp_seconds " + number(m->loaded_at) + "\n";
    out += "# HELP ldaproj_http_requests_in_flight Requests being handled now.\n"
           "# TYPE ldaproj_http_requests_in_flight gauge\n"
           "ldaproj_http_requests_in_flight " + std::to_string(in_flight.load()) + "\n";
    out += "# HELP ldaproj_start_time_seconds When the server started.\n"
           "# TYPE ldaproj_start_time_seconds gauge\n"
           "ldaproj_start_time_seconds " + number(started_at) + "\n";
    out += "# HELP ldaproj_build_info The ldaproj version; the value is always 1.\n"
           "# TYPE ldaproj_build_info gauge\n"
           "ldaproj_build_info{version=\"" LDAPROJ_VERSION "\"} 1\n";
    return out;
  }

  void register_routes(Server& owner) {
    http.Post("/v1/search", post_route("/v1/search", [this](auto&, auto& res, auto& ctx) { search(res, ctx); }));
    http.Post("/v1/project", post_route("/v1/project", [this](auto&, auto& res, auto& ctx) { project(res, ctx); }));
    http.Post("/v1/embed", post_route("/v1/embed", [this](auto&, auto& res, auto& ctx) { embed(res, ctx); }));
    http.Post("/v1/reload", post_route("/v1/reload", [this, &owner](auto&, auto& res, auto& ctx) {
      reload_endpoint(owner, res, ctx);
    }));
    http.Get("/v1/clusters", get_route("/v1/clusters", true, [this](auto& req, auto& res, auto& ctx) { clusters(req, res, ctx); }));
    http.Get("/v1/info", get_route("/v1/info", true, [this](auto&, auto& res, auto&) { reply(res, info_json(*snapshot())); }));
    http.Get("/healthz", get_route("/healthz", false, [this](auto&, auto& res, auto&) {
      reply(res, {{"status", "ok"}, {"generation", snapshot()->info.generation}});
    }));
    http.Get("/metrics", get_route("/metrics", true, [this](auto&, auto& res, auto&) {
      res.set_content(metrics.render(model_metrics()), "text/plain; version=0.0.4; charset=utf-8");
    }));
    http.Get("/", get_route("static", false, [](auto& req, auto& res, auto&) { serve_asset(req, res); }));
    const serve::WebAssetList assets = serve::web_assets();
    for (const serve::WebAsset* a = assets.begin; a != assets.end; ++a) {
      http.Get(std::string(a->path), get_route("static", false, [](auto& req, auto& res, auto&) { serve_asset(req, res); }));
    }
  }

  static void serve_asset(const httplib::Request& req, httplib::Response& res) {
    const serve::WebAsset* asset = serve::find_web_asset(req.path);
    if (!asset) throw ApiError(404, "not_found", "no page " + req.path);
    res.set_content(std::string(asset->body), std::string(asset->content_type));
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Content-Type-Options", "nosniff");
    // The page needs nothing but this server.
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'");
  }
};

Server::Server(ServerOptions options) {
  if (options.max_batch == 0 || options.max_text_bytes == 0 || options.max_top_k == 0 ||
      options.max_body_bytes == 0 || options.timeout_seconds <= 0) {
    throw InputError("server limits (batch, text bytes, top-k, body bytes, timeout) must be positive");
  }
  for (const auto& [flag, blend] : {std::pair{"--blend-questions", options.blend_questions},
                                    std::pair{"--blend-direct", options.blend_direct}}) {
    if (!(blend >= 0.0f && blend < 1.0f)) {
      throw InputError(std::string(flag) + " must be at least 0 and less than 1, got " + std::to_string(blend));
    }
  }
  EncoderOptions encoder_options;
  encoder_options.max_tokens = options.max_tokens;
  encoder_options.precision = options.encoder_precision;
  encoder_options.threads = 1;  // parallelism comes from concurrent requests
  Encoder encoder = Encoder::load(resolve_model_dir(options.model_dir), encoder_options);
  // Also sets OpenBLAS to one thread before any request runs a GEMM.
  encoder.encode({"warm up"});
  impl_ = std::make_unique<Impl>(std::move(options), std::move(encoder));
  impl_->model.store(impl_->load_model(1));

  Impl& s = *impl_;
  const int threads = s.options.threads > 0
                          ? s.options.threads
                          : std::max(4, static_cast<int>(std::thread::hardware_concurrency()));
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  s.http.set_payload_max_length(s.options.max_body_bytes);
  s.http.set_read_timeout(s.options.timeout_seconds, 0);
  s.http.set_write_timeout(s.options.timeout_seconds, 0);
  s.http.set_keep_alive_timeout(5);
  s.http.set_keep_alive_max_count(10000);
  s.http.set_tcp_nodelay(true);
  s.http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    impl_->on_http_error(req, res);
  });
  s.http.set_exception_handler([](const httplib::Request&, httplib::Response& res, const std::exception_ptr&) {
    Impl::reply_error(res, 500, "internal", "unexpected failure");
  });
  s.register_routes(*this);
}

int Server::start() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle_mutex);
  if (s.started) return s.port;
  const int port = s.options.port == 0 ? s.http.bind_to_any_port(s.options.host)
                                       : (s.http.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1);
  if (port <= 0) {
    throw InputError("cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) +
                     ": the address is in use or not available here; choose another --port or --host");
  }
  s.port = port;
  s.started = true;
  s.listener = std::thread([this] { impl_->http.listen_after_bind(); });
  // stop() is only safe once httplib considers itself running.
  while (!s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return port;
}

void Server::stop() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle_mutex);
  if (!s.started || s.stopped) return;
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
  s.stopped = true;
  s.stopped_cv.notify_all();
}

void Server::wait() {
  Impl& s = *impl_;
  std::unique_lock lock(s.lifecycle_mutex);
  s.stopped_cv.wait(lock, [&s] { return !s.started || s.stopped; });
}

ServedModel Server::reload() {
  Impl& s = *impl_;
  std::lock_guard lock(s.reload_mutex);
  try {
    auto fresh = s.load_model(s.model.load()->info.generation + 1);
    s.model.store(fresh);
    s.metrics.reload_finished(true);
    return fresh->info;
  } catch (...) {
    s.metrics.reload_finished(false);
    throw;
  }
}

ServedModel Server::served() const { return impl_->model.load()->info; }

int Server::port() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->port;
}

Server::~Server() {
  if (impl_) stop();
}

}  // namespace ldaproj
