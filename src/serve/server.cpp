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

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
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
#include "ldaproj/fingerprint.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "serve/api.hpp"
#include "serve/http_listener.hpp"
#include "serve/http_message.hpp"
#include "serve/request_policy.hpp"
#include "serve/metrics.hpp"
#include "serve/web_assets.hpp"

namespace ldaproj {

namespace fs = std::filesystem;
using nlohmann::json;
using serve::ApiError;
using serve::HttpRequest;
using serve::HttpResponse;
using serve::equals_ignoring_case;

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
  // Students and ensembles: "matches", or "differs" / "unknown" when it is
  // not known to be distilled from the served projection; shown, never hidden.
  std::string teacher;
  bool forced = false;  // imported with --force
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
  Staleness staleness;                     // what the store has that this model does not serve
  std::optional<float> stored_reject_below;  // saved by validate --save-reject-threshold
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

}  // namespace

struct Server::Impl final : serve::HttpHandler {
  ServerOptions options;
  serve::Limits limits;
  Encoder encoder;
  std::atomic<std::shared_ptr<const LoadedModel>> model;
  std::mutex reload_mutex;  // one reload at a time
  serve::Metrics metrics;
  std::atomic<int> in_flight{0};
  std::mutex log_mutex;
  double started_at = unix_seconds();

  std::vector<std::string> allowed_hosts;
  std::unique_ptr<serve::HttpListener> listener;  // last: stopped before the rest goes
  std::mutex lifecycle_mutex;
  std::condition_variable stopped_cv;
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
        m->methods.push_back({method, !r.empty() && !r.front().routing.empty(), "", false});
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
      m->stored_reject_below = stored_reject_threshold(projection->metrics_json);
    }
    m->staleness = m->store.staleness(info.projection);
    info.warnings = describe_staleness(m->staleness, options.db.string());
    for (MethodInfo& mi : m->methods) {
      const bool student = mi.method == Method::Student;
      if (!student && mi.method != Method::Ensemble) continue;
      const std::optional<Provenance> p =
          student ? m->searcher.student_provenance() : m->searcher.ensemble_provenance();
      if (!p) continue;
      mi.teacher = std::string(to_string(p->teacher));
      mi.forced = p->forced;
      if (p->teacher == TeacherMatch::Matches) continue;
      const std::string what = student ? "student" : "ensemble";
      info.warnings.push_back(
          "the " + what + " of projection \"" + info.projection + "\" " +
          (p->teacher == TeacherMatch::Differs
               ? "was distilled from another teacher" + std::string(p->forced ? " (imported with --force)" : "") +
                     (p->detail.empty() ? "" : ": " + p->detail)
               : "has no record of the teacher it was distilled from") +
          "; its answers may not match the teacher's (method " + what + " is flagged \"teacher\": \"" +
          mi.teacher + "\" in responses); distill it again with `ldaproj distill --db " + options.db.string() + "`");
    }
    m->loaded_at = unix_seconds();
    return m;
  }

  // ------------------------------------------------------------ plumbing
  void log(const HttpRequest& req, int status, double seconds) {
    if (!options.access_log) return;
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.2f", seconds * 1000.0);
    std::lock_guard lock(log_mutex);
    options.access_log(req.method + " " + req.path + " " + std::to_string(status) + " " + ms + " ms");
  }

  void check_key(const HttpRequest& req) const {
    if (options.api_key.empty()) return;
    const std::optional<std::string_view> token = serve::bearer_token(req.header("Authorization"));
    if (!token) {
      throw ApiError(401, "unauthorized",
                     "this server needs an API key: send the header \"Authorization: Bearer KEY\"");
    }
    if (!same_secret(*token, options.api_key)) throw ApiError(401, "unauthorized", "the API key is wrong");
  }

  static void reply(HttpResponse& res, const json& body, int status = 200) {
    res.status = status;
    res.content_type = "application/json";
    res.body = dump(body);
  }

  static HttpResponse error_response(int status, const std::string& code, const std::string& message) {
    HttpResponse res;
    res.status = status;
    if (status == 401) res.set_header("WWW-Authenticate", "Bearer");
    res.body = serve::error_body(code, message);
    return res;
  }

  using Handler = std::function<void(const HttpRequest&, HttpResponse&, RequestContext&)>;

  struct Route {
    std::string path, method, endpoint;  // endpoint: the metrics label
    bool needs_key = true;
    bool quick = false;  // answered on the I/O thread, even when every worker is busy
    Handler run;
  };
  std::vector<Route> routes;

  const Route* find_route(const std::string& path) const {
    for (const Route& r : routes) {
      if (r.path == path) return &r;
    }
    return nullptr;
  }

  // HttpHandler, at header time: who may ask (Host, Origin, key) and whether
  // the path and method exist, all before a byte of body is read.
  Admission admit(const HttpRequest& head) override {
    Admission a;
    try {
      if (!head.has_header("Host")) {
        if (head.version >= 11) throw ApiError(400, "missing_host", "an HTTP/1.1 request needs a Host header");
      } else if (!serve::host_allowed(head.header("Host"), allowed_hosts)) {
        throw ApiError(400, "host_not_allowed",
                       "this server does not answer to the Host \"" + std::string(head.header("Host")) +
                           "\"; if that name is right, start the server with --allowed-host NAME");
      }
      const Route* route = find_route(head.path);
      if (!route) {
        throw ApiError(404, "not_found", "no endpoint " + head.path + "; the API is under /v1/ (see docs/API.md)");
      }
      if (head.method != route->method) {
        ApiError e(405, "method_not_allowed",
                   head.method + " is not allowed on " + head.path + "; use " + route->method);
        HttpResponse res = error_response(e.status(), e.code(), e.what());
        res.set_header("Allow", route->method);
        record_refusal(head, route->endpoint, res);
        a.refusal = std::move(res);
        return a;
      }
      if (head.method != "GET") {
        // A page on another site can make a browser POST here (a "simple"
        // text/plain request needs no preflight); it must not reload models
        // or spend our CPU. Our own page is same-origin.
        const std::string_view origin = head.header("Origin");
        const bool cross_site = equals_ignoring_case(head.header("Sec-Fetch-Site"), "cross-site");
        if (!serve::origin_allowed(origin, head.header("Host"), options.allowed_origins) ||
            (origin.empty() && cross_site)) {
          throw ApiError(403, "cross_origin",
                         "requests from the web page at " + (origin.empty() ? std::string("another site") : std::string(origin)) +
                             " are not allowed; start the server with --allowed-origin ORIGIN to allow that page");
        }
      }
      if (route->needs_key) check_key(head);
      a.where = route->quick ? Where::IoThread : Where::Worker;
    } catch (const ApiError& e) {
      HttpResponse res = error_response(e.status(), e.code(), e.what());
      const Route* route = find_route(head.path);
      record_refusal(head, route ? route->endpoint : "other", res);
      a.refusal = std::move(res);
    }
    return a;
  }

  void record_refusal(const HttpRequest& head, const std::string& endpoint, const HttpResponse& res) {
    metrics.observe(endpoint, "none", res.status, -1.0);
    log(head, res.status, 0.0);
  }

  void on_transport_reply(const HttpRequest* head, const HttpResponse& res) override {
    const Route* route = head ? find_route(head->path) : nullptr;
    metrics.observe(route ? route->endpoint : "other", "none", res.status, -1.0);
    if (head) log(*head, res.status, 0.0);
  }

  // HttpHandler: runs an admitted request. Any failure becomes a JSON error
  // with its status; the request is counted and timed.
  HttpResponse handle(HttpRequest& req) override {
    const auto start = std::chrono::steady_clock::now();
    ++in_flight;
    const Route* route = find_route(req.path);
    RequestContext ctx;
    ctx.body = std::move(req.body);
    HttpResponse res;
    try {
      if (!route) throw ApiError(404, "not_found", "no endpoint " + req.path);
      route->run(req, res, ctx);
    } catch (const ApiError& e) {
      res = error_response(e.status(), e.code(), e.what());
    } catch (const InputError& e) {
      res = error_response(422, "invalid_value", e.what());
    } catch (const std::bad_alloc&) {
      res = error_response(500, "out_of_memory", "the server ran out of memory answering this request");
    } catch (const std::exception& e) {
      res = error_response(500, "internal", e.what());
    } catch (...) {
      res = error_response(500, "internal", "unexpected failure");
    }
    --in_flight;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.observe(route ? route->endpoint : "other", ctx.method_label, res.status, seconds,
                    res.status == 200 ? ctx.queries : 0);
    log(req, res.status, seconds);
    return res;
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

  void search(HttpResponse& res, RequestContext& ctx) {
    const json body = serve::parse_object(ctx.body);
    serve::reject_unknown_fields(body, {"text", "texts", "embedding", "embeddings", "method", "top_k",
                                        "temperature", "include_routing", "routing_top", "reject_below", "include_confidence",
                                        "blend_questions", "blend_direct"});
    const auto m = snapshot();
    const MethodInfo& method = pick_method(body, *m, ctx);
    serve::QueryInput in = serve::read_query_input(body, limits, m->info.dim, true);
    SearchOptions o;
    o.method = method.method;
    o.top_k = serve::read_count(body, "top_k", 5, 1, limits.max_top_k);
    set_temperature(o, serve::read_temperature(body));
    o.reject_below = serve::read_number(body, "reject_below");
    if (!o.reject_below && !body.contains("reject_below")) {
      o.reject_below = options.reject_below ? options.reject_below : m->stored_reject_below;
    }
    // Confidence costs a pass over the training questions, so a request
    // pays for it only when it asks or rejects.
    o.include_confidence = serve::read_flag(body, "include_confidence", false);
    const BlendsShown blends = set_blends(o, body);
    const bool routing = serve::read_flag(body, "include_routing", false);
    const std::size_t routing_top = serve::read_count(body, "routing_top", 8, 1, 100000);
    o.routing_top = routing ? routing_top : 0;
    ctx.queries = in.size();
    const auto results = m->searcher.search(queries_of(in), o);

    json out{{"projection", m->info.projection}, {"method", to_string(o.method)}};
    if (!method.teacher.empty() && method.teacher != "matches") out["teacher"] = method.teacher;
    if (method.routing) out["temperature"] = tidy(shown_temperature(o, *m));
    if (o.reject_below) out["reject_below"] = tidy(*o.reject_below);
    echo_blends(out, o, blends);
    auto one = [&](std::size_t i) {
      json r{{"answers", answers_json(results[i].answers, *m)}};
      if (o.reject_below || o.include_confidence) r["confidence"] = tidy(results[i].confidence);
      if (o.reject_below) r["rejected"] = results[i].rejected;
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

  void project(HttpResponse& res, RequestContext& ctx) {
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
    if (!method.teacher.empty() && method.teacher != "matches") out["teacher"] = method.teacher;
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

  void embed(HttpResponse& res, RequestContext& ctx) {
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
      json entry{{"name", to_string(mi.method)}, {"routing", mi.routing}};
      if (!mi.teacher.empty()) {
        entry["teacher"] = mi.teacher;
        entry["forced"] = mi.forced;
      }
      methods.push_back(std::move(entry));
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
            {"default_reject_below", options.reject_below   ? json(tidy(*options.reject_below))
                                     : m.stored_reject_below ? json(tidy(*m.stored_reject_below))
                                                             : json(nullptr)},
            {"blend_questions", tidy(options.blend_questions)},
            {"blend_direct", tidy(options.blend_direct)},
            {"generation", m.info.generation},
            {"staleness",
             {{"questions_without_embedding", m.staleness.questions_without_embedding},
              {"answers_without_embedding", m.staleness.answers_without_embedding},
              {"clusters_without_head", m.staleness.clusters_without_head},
              {"clusters_changed", m.staleness.clusters_changed}}},
            {"warnings", m.info.warnings},
            {"loaded_at", m.loaded_at},
            {"version", LDAPROJ_VERSION},
            {"limits",
             {{"max_body_bytes", options.max_body_bytes},
              {"max_batch", limits.max_batch},
              {"max_text_bytes", limits.max_text_bytes},
              {"max_top_k", limits.max_top_k}}}};
  }

  void clusters(const HttpRequest&, HttpResponse& res, RequestContext&) {
    const auto m = snapshot();
    json list = json::array();
    for (const ClusterInfo& c : m->clusters) {
      list.push_back({{"id", c.id}, {"name", c.name}, {"description", c.description}, {"questions", c.questions},
                      {"answers", c.answers}, {"head", c.head}});
    }
    reply(res, {{"projection", m->info.projection}, {"model", m->info.model}, {"clusters", list}});
  }

  void reload_endpoint(Server& owner, HttpResponse& res, const RequestContext& ctx) {
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
    if (listener) {
      const serve::HttpListenerStats t = listener->stats();
      out += "# HELP ldaproj_http_connections_open Client connections open now.\n"
             "# TYPE ldaproj_http_connections_open gauge\n"
             "ldaproj_http_connections_open " + std::to_string(t.connections_open) + "\n";
      out += "# HELP ldaproj_http_connections_total Connections accepted, and refused over --max-connections.\n"
             "# TYPE ldaproj_http_connections_total counter\n"
             "ldaproj_http_connections_total{result=\"accepted\"} " + std::to_string(t.connections_accepted) + "\n"
             "ldaproj_http_connections_total{result=\"refused\"} " + std::to_string(t.connections_refused) + "\n";
      out += "# HELP ldaproj_http_request_timeouts_total Requests not received in full by their deadline.\n"
             "# TYPE ldaproj_http_request_timeouts_total counter\n"
             "ldaproj_http_request_timeouts_total " + std::to_string(t.request_timeouts) + "\n";
      out += "# HELP ldaproj_http_busy_refusals_total Complete requests refused with 503 because the queue was full.\n"
             "# TYPE ldaproj_http_busy_refusals_total counter\n"
             "ldaproj_http_busy_refusals_total " + std::to_string(t.busy_refusals) + "\n";
    }
    out += "# HELP ldaproj_start_time_seconds When the server started.\n"
           "# TYPE ldaproj_start_time_seconds gauge\n"
           "ldaproj_start_time_seconds " + number(started_at) + "\n";
    out += "# HELP ldaproj_build_info The ldaproj version; the value is always 1.\n"
           "# TYPE ldaproj_build_info gauge\n"
           "ldaproj_build_info{version=\"" LDAPROJ_VERSION "\"} 1\n";
    return out;
  }

  void register_routes(Server& owner) {
    auto add = [this](std::string path, std::string method, std::string endpoint, bool needs_key, bool quick,
                      Handler run) {
      routes.push_back({std::move(path), std::move(method), std::move(endpoint), needs_key, quick, std::move(run)});
    };
    add("/v1/search", "POST", "/v1/search", true, false, [this](auto&, auto& res, auto& ctx) { search(res, ctx); });
    add("/v1/project", "POST", "/v1/project", true, false, [this](auto&, auto& res, auto& ctx) { project(res, ctx); });
    add("/v1/embed", "POST", "/v1/embed", true, false, [this](auto&, auto& res, auto& ctx) { embed(res, ctx); });
    add("/v1/reload", "POST", "/v1/reload", true, false,
        [this, &owner](auto&, auto& res, auto& ctx) { reload_endpoint(owner, res, ctx); });
    add("/v1/clusters", "GET", "/v1/clusters", true, false,
        [this](auto& req, auto& res, auto& ctx) { clusters(req, res, ctx); });
    add("/v1/info", "GET", "/v1/info", true, true, [this](auto&, auto& res, auto&) { reply(res, info_json(*snapshot())); });
    add("/healthz", "GET", "/healthz", false, true, [this](auto&, auto& res, auto&) {
      reply(res, {{"status", "ok"}, {"generation", snapshot()->info.generation}});
    });
    add("/metrics", "GET", "/metrics", true, true, [this](auto&, auto& res, auto&) {
      res.content_type = "text/plain; version=0.0.4; charset=utf-8";
      res.body = metrics.render(model_metrics());
    });
    add("/", "GET", "static", false, true, [](auto& req, auto& res, auto&) { serve_asset(req, res); });
    const serve::WebAssetList assets = serve::web_assets();
    for (const serve::WebAsset* a = assets.begin; a != assets.end; ++a) {
      add(std::string(a->path), "GET", "static", false, true,
          [](auto& req, auto& res, auto&) { serve_asset(req, res); });
    }
  }

  static void serve_asset(const HttpRequest& req, HttpResponse& res) {
    const serve::WebAsset* asset = serve::find_web_asset(req.path);
    if (!asset) throw ApiError(404, "not_found", "no page " + req.path);
    res.body = std::string(asset->body);
    res.content_type = std::string(asset->content_type);
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Content-Type-Options", "nosniff");
    // The page needs nothing but this server.
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'");
  }
};

Server::Server(ServerOptions options) {
  if (options.max_batch == 0 || options.max_text_bytes == 0 || options.max_top_k == 0 ||
      options.max_body_bytes == 0 || options.timeout_seconds <= 0 || options.keep_alive_seconds <= 0 ||
      options.max_connections == 0 || options.max_requests_per_connection == 0) {
    throw InputError("server limits (batch, text bytes, top-k, body bytes, timeout, keep-alive, connections, "
                     "requests per connection) must be positive");
  }
  for (const auto& [flag, blend] : {std::pair{"--blend-questions", options.blend_questions},
                                    std::pair{"--blend-direct", options.blend_direct}}) {
    if (!(blend >= 0.0f && blend < 1.0f)) {
      throw InputError(std::string(flag) + " must be at least 0 and less than 1, got " + std::to_string(blend));
    }
  }
  if (options.reject_below && !std::isfinite(*options.reject_below)) {
    throw InputError("--reject-below must be a finite number");
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
  s.allowed_hosts = serve::default_allowed_hosts(s.options.host);
  for (const std::string& h : s.options.allowed_hosts) s.allowed_hosts.push_back(h);
  s.register_routes(*this);
  serve::HttpListenerOptions http;
  http.host = s.options.host;
  http.port = s.options.port;
  http.max_connections = s.options.max_connections;
  http.max_requests_per_connection = s.options.max_requests_per_connection;
  http.request_timeout = std::chrono::seconds(s.options.timeout_seconds);
  http.write_timeout = std::chrono::seconds(s.options.timeout_seconds);
  http.keep_alive_timeout = std::chrono::seconds(s.options.keep_alive_seconds);
  http.max_body_bytes = s.options.max_body_bytes;
  http.worker_threads = s.options.threads > 0 ? s.options.threads
                                              : std::max(4, static_cast<int>(std::thread::hardware_concurrency()));
  http.max_queued = std::max<std::size_t>(64, static_cast<std::size_t>(http.worker_threads) * 16);
  s.listener = std::make_unique<serve::HttpListener>(std::move(http), s);
}

int Server::start() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle_mutex);
  if (s.started) return s.port;
  s.port = s.listener->start();
  s.started = true;
  return s.port;
}

void Server::stop() {
  Impl& s = *impl_;
  std::lock_guard lock(s.lifecycle_mutex);
  if (!s.started || s.stopped) return;
  s.listener->stop(std::chrono::seconds(s.options.timeout_seconds));
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
