// The HTTP server on a loopback port, called over HTTP: every endpoint, the
// API key, each error class, reload under concurrent requests, and the real
// `ldaproj serve` binary with SIGHUP.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cli_support.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/server.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/train.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct Reply {
  int status = 0;  // 0: no response at all
  std::string content_type;
  std::string raw;
  json body;  // null unless the body is JSON
  std::string header(const char* name) const { return headers.count(name) ? headers.find(name)->second : ""; }
  httplib::Headers headers;
};

Reply to_reply(const httplib::Result& r) {
  Reply out;
  if (!r) return out;
  out.status = r->status;
  out.content_type = r->get_header_value("Content-Type");
  out.raw = r->body;
  out.headers = r->headers;
  out.body = json::parse(r->body, nullptr, false);
  if (out.body.is_discarded()) out.body = nullptr;
  return out;
}

// Every method the library knows except the trained models (student, ensemble): the fixture's
// store has none.
std::vector<std::string> library_method_names() {
  std::vector<std::string> names;
  for (Method m : kAllMethods) {
    if (m != Method::Student && m != Method::Ensemble) names.emplace_back(to_string(m));
  }
  return names;
}

class ServeTest : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = file("demo.db");
    testing_support::copy_trained_demo_db(db_);
  }

  void start(ServerOptions options = {}) {
    options.db = db_;
    options.port = 0;
    server_ = std::make_unique<Server>(std::move(options));
    port_ = server_->start();
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }

  Reply get(const std::string& path, const httplib::Headers& headers = {}) {
    auto c = client();
    return to_reply(c.Get(path, headers));
  }

  Reply post(const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
    auto c = client();
    return to_reply(c.Post(path, headers, body, "application/json"));
  }

  Reply post(const std::string& path, const json& body) { return post(path, body.dump()); }

  // A JSON error body {"error": {"code", "message"}} with this status and code.
  static void expect_error(const Reply& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.raw;
    EXPECT_EQ(r.content_type, "application/json") << r.raw;
    ASSERT_TRUE(r.body.is_object()) << r.raw;
    ASSERT_TRUE(r.body.contains("error")) << r.raw;
    EXPECT_EQ(r.body["error"].value("code", ""), code) << r.raw;
    EXPECT_FALSE(r.body["error"].value("message", "").empty()) << r.raw;
  }

  void expect_still_serving() {
    const Reply r = post("/v1/search", json{{"text", "how do I get my password back"}});
    EXPECT_EQ(r.status, 200) << r.raw;
    ASSERT_TRUE(r.body.is_object()) << r.raw;
    ASSERT_FALSE(r.body["answers"].empty()) << r.raw;
    EXPECT_EQ(r.body["answers"][0]["cluster"], "reset_password") << r.raw;
  }

  fs::path db_;
  std::unique_ptr<Server> server_;
  int port_ = 0;
};

TEST_F(ServeTest, HealthInfoAndClusters) {
  start();
  Reply r = get("/healthz");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["status"], "ok");
  EXPECT_EQ(r.body["generation"], 1);

  r = get("/v1/info");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["heads"], 33);
  EXPECT_EQ(r.body["dim"], 384);
  EXPECT_EQ(r.body["model"], "all-MiniLM-L6-v2");
  // `train` chose the temperature on held-out training questions; /v1/info
  // serves it with what was tried (the projection's training metrics).
  const json& trained = r.body["training_metrics"];
  ASSERT_TRUE(trained.contains("tuning")) << r.raw;
  EXPECT_TRUE(trained["tuning"]["tuned"].get<bool>()) << r.raw;
  EXPECT_FLOAT_EQ(r.body["temperature"].get<float>(), trained["temperature"].get<float>()) << r.raw;
  EXPECT_FLOAT_EQ(r.body["temperature"].get<float>(), trained["tuning"]["chosen"]["temperature"].get<float>())
      << r.raw;
  // The methods are the library's: every method it knows works on a trained store.
  std::vector<std::string> offered;
  for (const auto& m : r.body["methods"]) {
    offered.push_back(m["name"]);
    const bool routes = m["name"] == "multi-head" || m["name"] == "sparse-teacher" || m["name"] == "question-routing";
    EXPECT_EQ(m["routing"].get<bool>(), routes) << m;
  }
  EXPECT_EQ(offered, library_method_names());
  EXPECT_EQ(server_->served().methods, library_method_names());

  r = get("/v1/clusters");
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["clusters"].size(), 33u);
  std::int64_t questions = 0;
  for (const auto& c : r.body["clusters"]) {
    EXPECT_TRUE(c["head"].get<bool>()) << c;
    EXPECT_GE(c["answers"].get<int>(), 1) << c;
    questions += c["questions"].get<std::int64_t>();
  }
  EXPECT_EQ(questions, 295);
}

TEST_F(ServeTest, SearchByTextEmbeddingAndBatch) {
  start();
  Reply r = post("/v1/search", json{{"text", "how do I get my password back"}, {"top_k", 3},
                                    {"include_routing", true}, {"routing_top", 4}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["method"], "multi-head");
  ASSERT_EQ(r.body["answers"].size(), 3u);
  EXPECT_EQ(r.body["answers"][0]["cluster"], "reset_password");
  EXPECT_FALSE(r.body["answers"][0]["text"].get<std::string>().empty());
  float previous = 2.0f;
  for (const auto& a : r.body["answers"]) {
    const float s = a["score"];
    EXPECT_LE(s, previous);
    previous = s;
  }
  ASSERT_EQ(r.body["routing"].size(), 4u);
  EXPECT_EQ(r.body["routing"][0]["cluster"], "reset_password");
  float total = 0.0f;
  for (const auto& h : r.body["routing"]) total += h["weight"].get<float>();
  EXPECT_LE(total, 1.0001f);
  const json text_answers = r.body["answers"];

  // Without include_routing there is no routing.
  r = post("/v1/search", json{{"text", "how do I get my password back"}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_FALSE(r.body.contains("routing"));
  EXPECT_EQ(r.body["answers"].size(), 5u);

  // The embedding form gives the same answers as the text it came from.
  const Reply e = post("/v1/embed", json{{"text", "how do I get my password back"}});
  ASSERT_EQ(e.status, 200) << e.raw;
  ASSERT_EQ(e.body["embedding"].size(), 384u);
  r = post("/v1/search", json{{"embedding", e.body["embedding"]}, {"top_k", 3}});
  ASSERT_EQ(r.status, 200) << r.raw;
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.body["answers"][i]["cluster"], text_answers[i]["cluster"]);
    EXPECT_NEAR(r.body["answers"][i]["score"].get<double>(), text_answers[i]["score"].get<double>(), 1e-5);
  }

  // Batch forms: one result per item, in order.
  r = post("/v1/search", json{{"texts", {"how do I get my password back", "my photos stopped uploading"}},
                              {"method", "direct"}, {"top_k", 2}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["results"].size(), 2u);
  EXPECT_EQ(r.body["results"][0]["query"], "how do I get my password back");
  EXPECT_EQ(r.body["results"][0]["answers"].size(), 2u);
  EXPECT_EQ(r.body["method"], "direct");
  r = post("/v1/search", json{{"embeddings", {e.body["embedding"], e.body["embedding"]}}, {"method", "global_w"}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["results"].size(), 2u);
  EXPECT_EQ(r.body["method"], "global-w");
  EXPECT_EQ(r.body["results"][0]["answers"], r.body["results"][1]["answers"]);

  // Temperature changes the routing weights.
  const json sharp = post("/v1/search", json{{"text", "reset password"}, {"include_routing", true},
                                             {"temperature", 0.02}}).body;
  const json flat = post("/v1/search", json{{"text", "reset password"}, {"include_routing", true},
                                            {"temperature", 2.0}}).body;
  EXPECT_GT(sharp["routing"][0]["weight"].get<double>(), flat["routing"][0]["weight"].get<double>() + 0.3);
  EXPECT_FLOAT_EQ(flat["temperature"].get<float>(), 2.0f);
}

TEST_F(ServeTest, SearchRejectsOutOfScopeQueriesBelowTheThreshold) {
  start();
  const json in_scope = json{{"text", "how do I get my password back"}};
  Reply r = post("/v1/search", in_scope);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_FALSE(r.body.contains("confidence")) << "confidence only comes with reject_below";

  json body = in_scope;
  body["reject_below"] = -1.0;
  r = post("/v1/search", body);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["rejected"], false);
  const double confidence = r.body["confidence"].get<double>();
  EXPECT_GT(confidence, 0.3);
  EXPECT_FALSE(r.body["answers"].empty());
  EXPECT_FLOAT_EQ(r.body["reject_below"].get<float>(), -1.0f);

  body["reject_below"] = confidence + 0.01;
  r = post("/v1/search", body);
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["rejected"], true);
  EXPECT_TRUE(r.body["answers"].empty());

  // Per query in a batch; question-routing's confidence is its nearest training question.
  r = post("/v1/search", json{{"texts", {"how do I get my password back", "zebra migration in the serengeti"}},
                              {"method", "question-routing"}, {"reject_below", 0.5}, {"temperature", 0.05}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["results"][0]["rejected"], false) << r.raw;
  EXPECT_EQ(r.body["results"][1]["rejected"], true) << r.raw;
  EXPECT_FLOAT_EQ(r.body["temperature"].get<float>(), 0.05f);

  expect_error(post("/v1/search", json{{"text", "x"}, {"reject_below", "high"}}), 400, "invalid_field");
}

// Blends of multi-head with question routing and the direct cosine: the server ranks as the
// library's Searcher with the same options on the same store, and echoes what it used.
TEST_F(ServeTest, SearchBlendsRankAsTheLibraryDoes) {
  start();
  const std::vector<std::string> texts = {"how do I get my password back", "my photos stopped uploading",
                                          "can someone else see my albums", "I was charged twice this month"};
  // The server's embeddings, given back to it and to the library: both rank the same vectors.
  const Reply embedded = post("/v1/embed", json{{"texts", texts}});
  ASSERT_EQ(embedded.status, 200) << embedded.raw;
  const json& list = embedded.body["embeddings"];
  Matrix queries(texts.size(), 384);
  for (std::size_t i = 0; i < queries.rows; ++i) {
    for (std::size_t j = 0; j < queries.cols; ++j) queries(i, j) = list[i][j].get<float>();
  }
  Store store = Store::open_read_only(db_);
  SearcherOptions single_threaded;  // as the server runs it
  single_threaded.teacher.threads = 1;
  single_threaded.answer_index.threads = 1;
  const Searcher searcher = Searcher::load(store, "", single_threaded);

  // Without the fields nothing is blended or echoed.
  Reply r = post("/v1/search", json{{"embeddings", list}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_FALSE(r.body.contains("blend_questions")) << r.raw;
  EXPECT_FALSE(r.body.contains("blend_direct")) << r.raw;

  SearchOptions plain;
  plain.top_k = 10;
  plain.routing_top = 5;
  const auto unblended = searcher.search(queries, plain);
  for (const auto& [questions, direct] : {std::pair{0.3f, 0.0f}, std::pair{0.0f, 0.2f}, std::pair{0.5f, 0.4f}}) {
    SCOPED_TRACE("blend_questions " + std::to_string(questions) + ", blend_direct " + std::to_string(direct));
    r = post("/v1/search", json{{"embeddings", list}, {"top_k", 10}, {"include_routing", true}, {"routing_top", 5},
                                {"blend_questions", questions}, {"blend_direct", direct}});
    ASSERT_EQ(r.status, 200) << r.raw;
    EXPECT_FLOAT_EQ(r.body["blend_questions"].get<float>(), questions);
    EXPECT_FLOAT_EQ(r.body["blend_direct"].get<float>(), direct);
    SearchOptions o = plain;
    o.blend_questions = questions;
    o.blend_direct = direct;
    const auto expected = searcher.search(queries, o);
    bool blended = false;  // the blend changed a score, so the comparison says something
    for (std::size_t q = 0; q < texts.size(); ++q) {
      const json& got = r.body["results"][q];
      ASSERT_EQ(got["answers"].size(), expected[q].answers.size());
      for (std::size_t i = 0; i < expected[q].answers.size(); ++i) {
        EXPECT_EQ(got["answers"][i]["cluster"], expected[q].answers[i].cluster) << q << " " << i;
        EXPECT_NEAR(got["answers"][i]["score"].get<double>(), expected[q].answers[i].score, 1e-5);
        blended = blended || std::abs(expected[q].answers[i].score - unblended[q].answers[i].score) > 1e-3;
      }
      ASSERT_EQ(got["routing"].size(), expected[q].routing.size());
      for (std::size_t i = 0; i < expected[q].routing.size(); ++i) {
        EXPECT_EQ(got["routing"][i]["cluster"], expected[q].routing[i].cluster);
        EXPECT_NEAR(got["routing"][i]["weight"].get<double>(), expected[q].routing[i].weight, 1e-5);
      }
    }
    EXPECT_TRUE(blended);

    // /v1/project returns the blended vector the answers were ranked by.
    r = post("/v1/project", json{{"embedding", list[0]}, {"blend_questions", questions}, {"blend_direct", direct}});
    ASSERT_EQ(r.status, 200) << r.raw;
    EXPECT_FLOAT_EQ(r.body["blend_direct"].get<float>(), direct);
    Matrix first(1, queries.cols);
    std::copy(queries.row(0), queries.row(0) + queries.cols, first.row(0));
    const Matrix projected = searcher.project(first, o);
    ASSERT_EQ(r.body["embedding"].size(), projected.cols);
    for (std::size_t j = 0; j < projected.cols; ++j) {
      ASSERT_NEAR(r.body["embedding"][j].get<double>(), projected(0, j), 1e-5) << j;
    }
  }
}

TEST_F(ServeTest, BlendDefaultsFromTheCommandLineApplyToMultiHeadOnly) {
  ServerOptions bad;
  bad.blend_questions = 1.0f;
  bad.db = db_;
  EXPECT_THROW(Server{bad}, InputError);

  ServerOptions options;
  options.blend_direct = 0.25f;
  start(options);
  const Reply embedded = post("/v1/embed", json{{"text", "how do I get my password back"}});
  ASSERT_EQ(embedded.status, 200) << embedded.raw;
  Matrix query(1, 384);
  for (std::size_t j = 0; j < 384; ++j) query(0, j) = embedded.body["embedding"][j].get<float>();
  Store store = Store::open_read_only(db_);
  const Searcher searcher = Searcher::load(store);

  // The default is used and echoed; a request's own value overrides it.
  for (const auto& [body_blend, used] : {std::pair{json(), 0.25f}, std::pair{json(0.0), 0.0f}}) {
    json body{{"embedding", embedded.body["embedding"]}, {"top_k", 5}};
    if (!body_blend.is_null()) body["blend_direct"] = body_blend;
    const Reply r = post("/v1/search", body);
    ASSERT_EQ(r.status, 200) << r.raw;
    EXPECT_FLOAT_EQ(r.body["blend_direct"].get<float>(), used) << r.raw;
    EXPECT_FALSE(r.body.contains("blend_questions")) << r.raw;
    SearchOptions o;
    o.blend_direct = used;
    const auto expected = searcher.search(query, o);
    ASSERT_EQ(r.body["answers"].size(), expected[0].answers.size());
    for (std::size_t i = 0; i < expected[0].answers.size(); ++i) {
      EXPECT_EQ(r.body["answers"][i]["cluster"], expected[0].answers[i].cluster);
      EXPECT_NEAR(r.body["answers"][i]["score"].get<double>(), expected[0].answers[i].score, 1e-5);
    }
  }
  // Other methods do not blend: no error, nothing echoed.
  const Reply r = post("/v1/search", json{{"text", "how do I get my password back"}, {"method", "direct"}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_FALSE(r.body.contains("blend_direct")) << r.raw;
  const Reply info = get("/v1/info");
  EXPECT_FLOAT_EQ(info.body["blend_direct"].get<float>(), 0.25f) << info.raw;
  EXPECT_FLOAT_EQ(info.body["blend_questions"].get<float>(), 0.0f) << info.raw;
}

TEST_F(ServeTest, BadBlendsAreRefusedNamingTheField) {
  start();
  auto expect_refused = [](const Reply& r, int status, const std::string& code, const std::string& field) {
    expect_error(r, status, code);
    const std::string message = r.body.is_object() ? r.body["error"].value("message", "") : "";
    EXPECT_NE(message.find("\"" + field + "\""), std::string::npos) << r.raw;
  };
  for (const std::string field : {"blend_questions", "blend_direct"}) {
    for (const std::string endpoint : {"/v1/search", "/v1/project"}) {
      SCOPED_TRACE(endpoint + " " + field);
      const json query{{"text", "how do I get my password back"}};
      auto with = [&](const json& value, const char* method = nullptr) {
        json body = query;
        body[field] = value;
        if (method) body["method"] = method;
        return post(endpoint, body);
      };
      expect_refused(with("a little"), 400, "invalid_field", field);
      expect_refused(with(json::array({0.1})), 400, "invalid_field", field);
      for (const double out_of_range : {1.0, -0.1, 0.99999999, 7.0, 1e300}) {
        expect_refused(with(out_of_range), 422, "invalid_value", field);
      }
      // Only multi-head blends; other methods refuse a non-zero weight rather than ignore it.
      const Reply other = with(0.3, "direct");
      expect_refused(other, 422, "invalid_value", field);
      EXPECT_NE(other.body["error"].value("message", "").find("multi-head"), std::string::npos) << other.raw;
      expect_refused(with(0.3, "question-routing"), 422, "invalid_value", field);
      EXPECT_EQ(with(0.0, "direct").status, 200);
      EXPECT_EQ(with(nullptr).status, 200);  // null is absent, as for the other optional fields
      EXPECT_EQ(with(0.9).status, 200);
    }
  }
  expect_still_serving();
}

TEST_F(ServeTest, ProjectAndEmbed) {
  start();
  Reply r = post("/v1/project", json{{"text", "how do I get my password back"}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["embedding"].size(), 384u);
  double norm = 0.0;
  for (const auto& v : r.body["embedding"]) norm += v.get<double>() * v.get<double>();
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-4);
  ASSERT_EQ(r.body["routing"].size(), 33u);  // every head by default
  double total = 0.0;
  for (const auto& h : r.body["routing"]) total += h["weight"].get<double>();
  EXPECT_NEAR(total, 1.0, 1e-4);
  EXPECT_EQ(r.body["routing"][0]["cluster"], "reset_password");

  r = post("/v1/project", json{{"texts", {"a question", "another question"}}, {"method", "direct"}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body["results"].size(), 2u);
  EXPECT_FALSE(r.body["results"][0].contains("routing"));  // direct does not route

  r = post("/v1/embed", json{{"texts", {"first", "second", "third"}}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["model"], "all-MiniLM-L6-v2");
  ASSERT_EQ(r.body["embeddings"].size(), 3u);
  EXPECT_EQ(r.body["embeddings"][2].size(), 384u);
  // /v1/embed takes texts only.
  expect_error(post("/v1/embed", json{{"embedding", std::vector<float>(384, 0.1f)}}), 400, "unknown_field");
  expect_error(post("/v1/embed", json::object()), 400, "missing_input");
}

TEST_F(ServeTest, BodiesAreJsonWhateverTheContentType) {
  // curl -d sends application/x-www-form-urlencoded; a batch of embeddings is
  // far over the 8 KiB httplib allows for form bodies.
  start();
  const json batch{{"embeddings", json::array({std::vector<float>(384, 0.01f), std::vector<float>(384, 0.02f),
                                               std::vector<float>(384, 0.03f)})}};
  auto c = client();
  const Reply r = to_reply(c.Post("/v1/search", batch.dump(), "application/x-www-form-urlencoded"));
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["results"].size(), 3u);
  // A POST without a body (no Content-Length) is an empty body.
  httplib::Request bare;
  bare.method = "POST";
  bare.path = "/v1/reload";
  const Reply reloaded = to_reply(c.send(bare));
  EXPECT_EQ(reloaded.status, 200) << reloaded.raw;
}

TEST_F(ServeTest, PageAndMetrics) {
  start();
  Reply r = get("/");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.content_type.find("text/html"), std::string::npos);
  EXPECT_NE(r.raw.find("<title>ldaproj</title>"), std::string::npos);
  EXPECT_NE(r.header("Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  r = get("/app.js");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.content_type.find("javascript"), std::string::npos);
  EXPECT_NE(r.raw.find("/v1/search"), std::string::npos);
  EXPECT_EQ(get("/style.css").status, 200);

  post("/v1/search", json{{"text", "reset password"}, {"method", "direct"}});
  post("/v1/search", json{{"text", "reset password"}});
  post("/v1/search", json{{"text", "reset password"}, {"method", "nope"}});
  r = get("/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.content_type.find("text/plain"), std::string::npos);
  for (const char* expected :
       {"ldaproj_http_requests_total{endpoint=\"/v1/search\",method=\"direct\",status=\"200\"} 1",
        "ldaproj_http_requests_total{endpoint=\"/v1/search\",method=\"multi-head\",status=\"200\"} 1",
        "ldaproj_http_requests_total{endpoint=\"/v1/search\",method=\"none\",status=\"422\"} 1",
        "# TYPE ldaproj_http_request_duration_seconds histogram",
        "ldaproj_http_request_duration_seconds_bucket{endpoint=\"/v1/search\",method=\"multi-head\",le=\"+Inf\"} 1",
        "ldaproj_http_request_duration_seconds_count{endpoint=\"/v1/search\",method=\"direct\"} 1",
        "ldaproj_queries_total{endpoint=\"/v1/search\",method=\"multi-head\"} 1",
        "ldaproj_model_info{projection=\"multi_head_all-MiniLM-L6-v2\",model=\"all-MiniLM-L6-v2\",heads=\"33\"",
        "ldaproj_model_generation 1"}) {
    EXPECT_NE(r.raw.find(expected), std::string::npos) << expected << "\n" << r.raw;
  }
}

TEST_F(ServeTest, ApiKeyIsRequiredOnTheApi) {
  ServerOptions options;
  options.api_key = "s3cret-key";
  start(options);
  const httplib::Headers right{{"Authorization", "Bearer s3cret-key"}};
  const httplib::Headers wrong{{"Authorization", "Bearer s3cret-kez"}};
  const httplib::Headers basic{{"Authorization", "Basic czNjcmV0LWtleQ=="}};
  const std::string body = json{{"text", "reset password"}}.dump();

  Reply r = post("/v1/search", body);
  expect_error(r, 401, "unauthorized");
  EXPECT_EQ(r.header("WWW-Authenticate"), "Bearer");
  expect_error(post("/v1/search", body, wrong), 401, "unauthorized");
  expect_error(post("/v1/search", body, basic), 401, "unauthorized");
  expect_error(get("/v1/info"), 401, "unauthorized");
  expect_error(get("/v1/clusters", wrong), 401, "unauthorized");
  expect_error(get("/metrics"), 401, "unauthorized");
  expect_error(post("/v1/reload", "", wrong), 401, "unauthorized");
  EXPECT_EQ(server_->served().generation, 1u);  // the unauthorised reload did nothing

  EXPECT_EQ(post("/v1/search", body, right).status, 200);
  EXPECT_EQ(get("/v1/info", right).status, 200);
  EXPECT_EQ(get("/metrics", right).status, 200);
  // Probes and the page need no key (the page asks for it).
  EXPECT_EQ(get("/healthz").status, 200);
  EXPECT_EQ(get("/").status, 200);
}

TEST_F(ServeTest, EveryErrorIsJsonWithItsStatus) {
  ServerOptions options;
  options.max_body_bytes = 64 * 1024;
  options.max_batch = 4;
  options.max_text_bytes = 200;
  options.max_top_k = 20;
  start(options);
  const json ok_embedding = std::vector<float>(384, 0.05f);

  // 400: not JSON, not an object, wrong types, unknown fields, no input.
  expect_error(post("/v1/search", std::string("{\"text\": ")), 400, "invalid_json");
  expect_error(post("/v1/search", std::string("[1, 2]")), 400, "invalid_json");
  expect_error(post("/v1/search", std::string("")), 400, "invalid_json");
  expect_error(post("/v1/search", std::string("\"\xff\xfe\"")), 400, "invalid_json");
  // Found by fuzz_serve_request: a number beyond a double was a 500.
  expect_error(post("/v1/search", std::string("{\"text\": \"x\", \"top_k\": 1e999}")), 400, "invalid_json");
  expect_error(post("/v1/search", json{{"text", 42}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"text", "x"}, {"top_k", "3"}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"text", "x"}, {"top_k", 2.5}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"text", "x"}, {"temperature", "hot"}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"text", "x"}, {"include_routing", 1}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"text", "x"}, {"method", 3}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"embedding", {1, "two"}}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"texts", "not a list"}}), 400, "invalid_field");
  expect_error(post("/v1/search", json{{"text", "x"}, {"topk", 3}}), 400, "unknown_field");
  expect_error(post("/v1/search", json::object()), 400, "missing_input");
  expect_error(post("/v1/search", json{{"text", "x"}, {"embedding", ok_embedding}}), 400, "missing_input");
  expect_error(post("/v1/reload", json{{"force", true}}), 400, "unknown_field");

  // 404 and 405.
  expect_error(get("/v2/search"), 404, "not_found");
  expect_error(post("/nothing/here", json::object()), 404, "not_found");
  Reply r = get("/v1/search");
  expect_error(r, 405, "method_not_allowed");
  EXPECT_EQ(r.header("Allow"), "POST");
  expect_error(post("/v1/clusters", json::object()), 405, "method_not_allowed");

  // 413: body, batch and text limits.
  expect_error(post("/v1/search", json{{"text", std::string(70 * 1024, 'a')}}), 413, "body_too_large");
  expect_error(post("/v1/search", json{{"texts", {"a", "b", "c", "d", "e"}}}), 413, "batch_too_large");
  expect_error(post("/v1/embed", json{{"texts", {"a", "b", "c", "d", "e"}}}), 413, "batch_too_large");
  expect_error(post("/v1/search", json{{"text", std::string(201, 'a')}}), 413, "text_too_long");
  expect_error(post("/v1/search", json{{"texts", {"ok", std::string(201, 'a')}}}), 413, "text_too_long");

  // 422: well-formed requests the model cannot answer.
  expect_error(post("/v1/search", json{{"embedding", {1.0, 2.0}}}), 422, "dimension_mismatch");
  expect_error(post("/v1/search", json{{"embeddings", {ok_embedding, json::array({1.0})}}}), 422, "dimension_mismatch");
  expect_error(post("/v1/project", json{{"embedding", std::vector<float>(383, 0.1f)}}), 422, "dimension_mismatch");
  expect_error(post("/v1/search", json{{"embedding", std::vector<float>(384, 0.0f)}}), 422, "invalid_value");
  json huge = ok_embedding;
  huge[7] = 1e300;
  expect_error(post("/v1/search", json{{"embedding", huge}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "x"}, {"method", "telepathy"}}), 422, "unknown_method");
  expect_error(post("/v1/search", json{{"text", "x"}, {"temperature", 0}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "x"}, {"temperature", -1}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "x"}, {"temperature", 1e9}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "x"}, {"top_k", 0}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "x"}, {"top_k", -2}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "x"}, {"top_k", 21}}), 422, "invalid_value");
  expect_error(post("/v1/search", json{{"text", "   "}}), 422, "empty_text");
  expect_error(post("/v1/search", json{{"texts", json::array()}}), 422, "empty_batch");

  // A request that is not HTTP at all.
  const int sock = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string garbage = "\x01\x02 not http at all\r\n\r\n";
  ASSERT_EQ(send(sock, garbage.data(), garbage.size(), 0), static_cast<ssize_t>(garbage.size()));
  const timeval receive_timeout{10, 0};  // a server that never answers fails the test instead of hanging it
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
  // The server may send headers and body in separate segments: read until it closes the connection
  // or the whole body named by Content-Length has arrived.
  std::string answer;
  for (;;) {
    char chunk[4096];
    const ssize_t n = recv(sock, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    answer.append(chunk, static_cast<std::size_t>(n));
    const std::size_t header_end = answer.find("\r\n\r\n");
    const std::size_t length_at = answer.find("Content-Length: ");
    if (header_end != std::string::npos && length_at != std::string::npos && length_at < header_end) {
      const std::size_t length = std::stoul(answer.substr(length_at + 16));
      if (answer.size() >= header_end + 4 + length) break;
    }
  }
  close(sock);
  ASSERT_FALSE(answer.empty());
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"code\":\"bad_request\""), std::string::npos) << answer;

  expect_still_serving();
  const Reply metrics = get("/metrics");
  EXPECT_NE(metrics.raw.find("ldaproj_http_requests_total{endpoint=\"/v1/search\",method=\"none\",status=\"413\"}"),
            std::string::npos) << metrics.raw;
}

TEST_F(ServeTest, ReloadSwapsTheModelWithoutFailingConcurrentRequests) {
  start();
  const Reply embedded = post("/v1/embed", json{{"text", "my photos stopped uploading"}});
  ASSERT_EQ(embedded.status, 200);
  const std::string by_text = json{{"text", "how do I get my password back"}, {"include_routing", true}}.dump();
  const std::string by_embedding = json{{"embedding", embedded.body["embedding"]}, {"top_k", 3}}.dump();

  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex seen_mutex;
  std::set<std::string> projections_seen;
  std::string first_failure;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      httplib::Client c("127.0.0.1", port_);
      c.set_read_timeout(60, 0);
      while (!done) {
        const auto r = c.Post("/v1/search", t % 2 ? by_text : by_embedding, "application/json");
        const json body = r ? json::parse(r->body, nullptr, false) : json();
        if (r && r->status == 200 && body.is_object() && !body["answers"].empty()) {
          ++ok;
          std::lock_guard lock(seen_mutex);
          projections_seen.insert(body["projection"].get<std::string>());
        } else {
          ++failed;
          std::lock_guard lock(seen_mutex);
          if (first_failure.empty()) first_failure = r ? std::to_string(r->status) + " " + r->body : "no response";
        }
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  auto wait_for_requests = [&](int more) {
    const int target = ok + more;
    while (ok < target && failed == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  };
  wait_for_requests(20);

  // A newly trained projection becomes active; reload picks it up.
  {
    Store store = Store::open(db_);
    TeacherTrainOptions train;
    train.name = "sharper";
    train.temperature = 0.05f;
    train_teacher(store, "all-MiniLM-L6-v2", train);
  }
  Reply r = post("/v1/reload", std::string());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["previous"]["projection"], "multi_head_all-MiniLM-L6-v2");
  EXPECT_EQ(r.body["served"]["projection"], "sharper");
  EXPECT_EQ(r.body["served"]["generation"], 2);
  wait_for_requests(20);
  for (int i = 0; i < 5; ++i) {
    r = post("/v1/reload", std::string("{}"));
    ASSERT_EQ(r.status, 200) << r.raw;
    wait_for_requests(10);
  }
  done = true;
  for (auto& c : clients) c.join();

  EXPECT_EQ(failed, 0) << first_failure;
  EXPECT_GT(ok, 50);
  EXPECT_TRUE(projections_seen.count("sharper"));
  r = get("/v1/info");
  EXPECT_EQ(r.body["projection"], "sharper");
  EXPECT_FLOAT_EQ(r.body["temperature"].get<float>(), 0.05f);
  EXPECT_EQ(r.body["generation"], 7);
  EXPECT_NE(get("/metrics").raw.find("ldaproj_model_reloads_total{result=\"ok\"} 6"), std::string::npos);
}

TEST_F(ServeTest, FailedReloadKeepsServingTheOldModel) {
  start();
  const fs::path moved = file("moved.db");
  fs::rename(db_, moved);
  Reply r = post("/v1/reload", std::string());
  expect_error(r, 500, "reload_failed");
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("does not exist"), std::string::npos) << r.raw;
  EXPECT_THROW(server_->reload(), InputError);
  EXPECT_EQ(server_->served().generation, 1u);
  expect_still_serving();
  fs::rename(moved, db_);
  r = post("/v1/reload", std::string());
  EXPECT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(get("/healthz").body["generation"], 2);
  EXPECT_NE(get("/metrics").raw.find("ldaproj_model_reloads_total{result=\"error\"} 2"), std::string::npos);
}

TEST_F(ServeTest, UnservableStoresFailAtStartWithAClearMessage) {
  ServerOptions options;
  options.db = file("missing.db");
  try {
    Server server(options);
    FAIL() << "a missing database must not start";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
  const auto r = testing_support::run_cli("import --db " + file("untrained.db").string() + " " +
                                          testing_support::demo_file("extra.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  options.db = file("untrained.db");
  try {
    Server server(options);
    FAIL() << "an untrained database must not start";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ldaproj train"), std::string::npos) << e.what();
  }
}

TEST(ServeEncoder, GivesTheSameVectorsFromConcurrentThreads) {
  // The server calls one Encoder from every worker thread at once.
  EncoderOptions options;
  options.threads = 1;
  const Encoder encoder = Encoder::load(resolve_model_dir(), options);
  std::vector<std::vector<std::string>> inputs;
  for (int t = 0; t < 4; ++t) {
    inputs.push_back({"thread " + std::to_string(t) + " asks about passwords",
                      "a much longer question from thread " + std::to_string(t) +
                          " about photos that stopped uploading after the phone was updated"});
  }
  std::vector<Matrix> serial;
  for (const auto& texts : inputs) serial.push_back(encoder.encode(texts));
  std::vector<std::vector<Matrix>> parallel(inputs.size());
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < inputs.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) parallel[t].push_back(encoder.encode(inputs[t]));
    });
  }
  for (auto& th : threads) th.join();
  for (std::size_t t = 0; t < inputs.size(); ++t) {
    for (const Matrix& m : parallel[t]) EXPECT_EQ(m.data, serial[t].data) << "thread " << t;
  }
}

// The real binary: start on a free port, reload on SIGHUP, stop on SIGTERM.
class ServeBinary : public ServeTest {};

TEST_F(ServeBinary, ReloadsOnSighupAndStopsOnSigterm) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(LDAPROJ_CLI_PATH, LDAPROJ_CLI_PATH, "serve", "--db", db_.c_str(), "--port", "0", "--threads", "2",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  // Never leave the server running, whatever fails below.
  struct Reaper {
    pid_t pid;
    bool reaped = false;
    ~Reaper() {
      if (!reaped) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};
  FILE* stream = fdopen(out[0], "r");
  char line[1024];
  std::string first;
  if (fgets(line, sizeof line, stream)) first = line;
  const auto at = first.find("http://127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << first;
  port_ = std::stoi(first.substr(at + 17));

  Reply r = get("/healthz");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["generation"], 1);
  expect_still_serving();

  ASSERT_EQ(kill(pid, SIGHUP), 0);
  bool reloaded = false;
  for (int i = 0; i < 1000 && !reloaded; ++i) {
    reloaded = get("/healthz").body.value("generation", 0) == 2;
    if (!reloaded) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(reloaded);
  expect_still_serving();

  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  reaper.reaped = true;
  fclose(stream);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ServeCli, HelpAndUsage) {
  const auto help = testing_support::run_cli("serve --help");
  EXPECT_EQ(help.code, 0);
  for (const char* flag : {"--db", "--host", "--port", "--threads", "--api-key", "--max-body-bytes", "--blend-questions",
                           "--blend-direct"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag << "\n" << help.out;
  }
  EXPECT_EQ(testing_support::run_cli("serve").code, 2);  // --db is required
  EXPECT_EQ(testing_support::run_cli("serve --db x.db --port 70000").code, 2);
  EXPECT_EQ(testing_support::run_cli("serve --db x.db --blend-direct 1").code, 2);
  EXPECT_EQ(testing_support::run_cli("serve --db x.db --blend-questions -0.5").code, 2);
  const auto missing = testing_support::run_cli("serve --db /nonexistent/none.db --port 0");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("does not exist"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace ldaproj
