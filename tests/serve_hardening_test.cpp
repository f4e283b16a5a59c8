// The server against careless and hostile HTTP, over raw loopback sockets:
// exclusive bind, header-time refusals, deadlines, connection limits,
// pipelining, Host and Origin rules. No timing limits here (those are in
// tests/load/serve_slow_clients.cpp); a reply that "comes at header time" is
// one that comes although the server's deadline is far longer than the wait.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "loopback_socket.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/server.hpp"
#include "serve/request_policy.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

using nlohmann::json;

using testing_support::connect_loopback;

struct RawReply {
  int status = 0;
  std::string head, body;
  json json_body;
  bool has(const std::string& header_line) const { return head.find(header_line) != std::string::npos; }
};

std::vector<RawReply> parse_replies(const std::string& stream);

// Everything the server sends on `fd` until it closes, `wait_ms` pass with
// nothing new, or `replies` whole replies have come.
std::string read_all(int fd, int wait_ms, std::size_t replies = 0) {
  std::string got;
  while (replies == 0 || parse_replies(got).size() < replies) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, wait_ms) <= 0) break;
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// Splits a byte stream into the responses it holds (Content-Length framed).
std::vector<RawReply> parse_replies(const std::string& stream) {
  std::vector<RawReply> out;
  std::size_t at = 0;
  while (at < stream.size()) {
    const std::size_t end = stream.find("\r\n\r\n", at);
    if (end == std::string::npos) break;
    RawReply r;
    r.head = stream.substr(at, end + 4 - at);
    if (r.head.rfind("HTTP/1.", 0) == 0) r.status = std::atoi(r.head.c_str() + 9);
    std::size_t length = 0;
    for (const char* name : {"Content-Length: ", "content-length: "}) {
      const std::size_t cl = r.head.find(name);
      if (cl != std::string::npos) length = std::strtoul(r.head.c_str() + cl + std::strlen(name), nullptr, 10);
    }
    if (end + 4 + length > stream.size()) break;  // not all here yet
    r.body = stream.substr(end + 4, length);
    r.json_body = json::parse(r.body, nullptr, false);
    out.push_back(std::move(r));
    at = end + 4 + length;
  }
  return out;
}

class ServeHardening : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = file("demo.db");
    testing_support::copy_trained_demo_db(db_);
  }

  void start(ServerOptions options = {}) {
    options.db = db_;
    if (options.port == 8080) options.port = 0;
    server_ = std::make_unique<Server>(std::move(options));
    port_ = server_->start();
  }

  // Sends `bytes` on a new connection and reads what comes back within
  // `wait_ms` of silence.
  std::vector<RawReply> exchange(const std::string& bytes, std::size_t replies = 0, int wait_ms = 3000) const {
    const int fd = connect_loopback(port_);
    EXPECT_GE(fd, 0);
    if (fd < 0) return {};
    EXPECT_EQ(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    const std::string got = read_all(fd, wait_ms, replies);
    close(fd);
    return parse_replies(got);
  }

  RawReply one(const std::string& bytes) const {
    auto replies = exchange(bytes, 1);
    EXPECT_EQ(replies.size(), 1u);
    return replies.empty() ? RawReply{} : replies.front();
  }

  static void expect_error(const RawReply& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.head << r.body;
    ASSERT_TRUE(r.json_body.is_object()) << r.body;
    EXPECT_EQ(r.json_body["error"].value("code", ""), code) << r.body;
    EXPECT_FALSE(r.json_body["error"].value("message", "").empty()) << r.body;
  }

  std::string search_request(const std::string& extra_headers = "", const std::string& host = "127.0.0.1") const {
    const std::string body = R"({"text": "how do I reset my password"})";
    return "POST /v1/search HTTP/1.1\r\nHost: " + host + ":" + std::to_string(port_) +
           "\r\nContent-Type: application/json\r\n" + extra_headers +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  }

  std::filesystem::path db_;
  std::unique_ptr<Server> server_;
  int port_ = 0;
};

TEST_F(ServeHardening, ASecondServerOnTheSamePortFails) {
  start();
  ServerOptions second;
  second.db = db_;
  second.port = port_;
  Server other(second);
  try {
    other.start();
    FAIL() << "a second server started on port " << port_;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(port_)), std::string::npos) << e.what();
  }
  EXPECT_EQ(one("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").status, 200);
}

TEST_F(ServeHardening, BadContentLengthsAreRefusedAtHeaderTime) {
  ServerOptions o;
  o.timeout_seconds = 60;  // a reply within exchange()'s 3 s wait is not the deadline's
  start(o);
  const std::string head = "POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  expect_error(one(head + "Content-Length: 1000000000000\r\n\r\n"), 413, "body_too_large");
  expect_error(one(head + "Content-Length: 18446744073709551617\r\n\r\n"), 400, "bad_content_length");
  expect_error(one(head + "Content-Length: -5\r\n\r\n"), 400, "bad_content_length");
  expect_error(one(head + "Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}"), 400, "bad_content_length");
  expect_error(one(head + "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"), 400, "bad_content_length");
  expect_error(one(head + "Content-Length: 2, 2\r\n\r\n{}"), 400, "bad_content_length");
  EXPECT_EQ(one(head + "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}").status, 400);
  // The refusal closes the connection: what follows is not taken for a request.
  const auto replies = exchange(head + "Content-Length: 1000000000000\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0].has("Connection: close")) << replies[0].head;
}

TEST_F(ServeHardening, ARequestNotSentInFullByItsDeadlineGets408AndIsClosed) {
  ServerOptions o;
  o.timeout_seconds = 1;
  start(o);
  const int fd = connect_loopback(port_);
  ASSERT_GE(fd, 0);
  const std::string partial = "POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"te";
  ASSERT_GT(send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), 0);
  // Keep dripping: a byte every 200 ms must not extend the deadline.
  std::string got;
  for (int i = 0; i < 40 && got.empty(); ++i) {
    send(fd, "x", 1, MSG_NOSIGNAL);
    got = read_all(fd, 200);
  }
  got += read_all(fd, 1000);
  close(fd);
  const auto replies = parse_replies(got);
  ASSERT_EQ(replies.size(), 1u) << got;
  expect_error(replies[0], 408, "request_timeout");
  // An idle connection that never sent a byte is closed without a reply.
  const int idle = connect_loopback(port_);
  EXPECT_EQ(read_all(idle, 5000), "");
  close(idle);
}

TEST_F(ServeHardening, PipelinedRequestsAreAllAnsweredInOrder) {
  start();
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const std::string info = "GET /v1/info HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const auto replies = exchange(get + search_request() + info + get, 4);
  ASSERT_EQ(replies.size(), 4u);
  EXPECT_EQ(replies[0].json_body.value("status", ""), "ok");
  EXPECT_EQ(replies[1].status, 200);
  EXPECT_EQ(replies[1].json_body["answers"][0]["cluster"], "reset_password") << replies[1].body;
  EXPECT_TRUE(replies[2].json_body.contains("heads")) << replies[2].body;
  EXPECT_EQ(replies[3].json_body.value("status", ""), "ok");
}

TEST_F(ServeHardening, ForeignHostsAreRefusedUnlessAllowed) {
  ServerOptions o;
  o.allowed_hosts = {"search.example.com", ".corp.example"};
  start(o);
  auto get = [&](const std::string& host) {
    return one("GET /v1/info HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
  };
  for (const std::string& host : std::vector<std::string>{"localhost", "127.0.0.1:" + std::to_string(port_), "[::1]:80", "LOCALHOST.",
                                 "search.example.com", "a.corp.example", "corp.example:9"}) {
    EXPECT_EQ(get(host).status, 200) << host;
  }
  for (const std::string& host : std::vector<std::string>{"evil.example", "127.0.0.1.evil.example", "xcorp.example", "localhost:x", ""}) {
    expect_error(get(host), 400, "host_not_allowed");
  }
  expect_error(one("GET /v1/info HTTP/1.1\r\n\r\n"), 400, "missing_host");
  EXPECT_EQ(one("GET /healthz HTTP/1.0\r\n\r\n").status, 200);  // HTTP/1.0 needs no Host
}

TEST_F(ServeHardening, CrossOriginPostsAreRefusedSameOriginAndAllowedOnesPass) {
  ServerOptions o;
  o.allowed_origins = {"https://app.example.com"};
  start(o);
  const std::string reload_head = "POST /v1/reload HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port_) +
                                  "\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n";
  expect_error(one(reload_head + "Origin: http://evil.example\r\n\r\n"), 403, "cross_origin");
  expect_error(one(reload_head + "Origin: null\r\n\r\n"), 403, "cross_origin");
  expect_error(one(reload_head + "Sec-Fetch-Site: cross-site\r\n\r\n"), 403, "cross_origin");
  expect_error(one(search_request("Origin: http://127.0.0.1:1\r\n")), 403, "cross_origin");
  EXPECT_EQ(server_->served().generation, 1u) << "a refused reload must not run";
  EXPECT_EQ(one(search_request("Origin: http://127.0.0.1:" + std::to_string(port_) + "\r\n")).status, 200);
  EXPECT_EQ(one(search_request("Origin: https://app.example.com\r\n")).status, 200);
  EXPECT_EQ(one(reload_head + "Origin: http://127.0.0.1:" + std::to_string(port_) + "\r\n\r\n").status, 200);
  EXPECT_EQ(server_->served().generation, 2u);
}

TEST_F(ServeHardening, ApiKeyIsCheckedAtHeaderTimeAndTheSchemeIgnoresCase) {
  ServerOptions o;
  o.api_key = "s3cret";
  o.timeout_seconds = 60;
  start(o);
  // Refused before the (never sent) body: the reply comes without it.
  expect_error(one("POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"), 401, "unauthorized");
  for (const std::string& scheme : std::vector<std::string>{"Bearer", "bearer", "BEARER"}) {
    EXPECT_EQ(one(search_request("Authorization: " + scheme + " s3cret\r\n")).status, 200) << scheme;
  }
  expect_error(one(search_request("Authorization: Bearer s3cre\r\n")), 401, "unauthorized");
  expect_error(one(search_request("Authorization: Bearers3cret\r\n")), 401, "unauthorized");
}

TEST_F(ServeHardening, ConnectionsBeyondTheLimitGet503AndTheRestKeepWorking) {
  ServerOptions o;
  o.max_connections = 3;
  start(o);
  std::vector<int> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(connect_loopback(port_));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the server accept them
  const auto refused = one("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  expect_error(refused, 503, "too_many_connections");
  close(idle.back());
  idle.pop_back();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(one("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").status, 200);
  for (int fd : idle) close(fd);
}

TEST_F(ServeHardening, AKeepAliveConnectionIsClosedAfterItsRequestLimit) {
  ServerOptions o;
  o.max_requests_per_connection = 2;
  start(o);
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
  const auto replies = exchange(get + get + get);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_FALSE(replies[0].has("Connection: close")) << replies[0].head;
  EXPECT_TRUE(replies[1].has("Connection: close")) << replies[1].head;
}

TEST_F(ServeHardening, MalformedRequestsAreJsonErrorsNeverHangs) {
  start();
  expect_error(one("GARBAGE\r\n\r\n"), 400, "bad_request");
  expect_error(one("GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"), 400, "bad_request");
  expect_error(one("GET /" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: localhost\r\n\r\n"), 431,
               "headers_too_large");
  expect_error(one("DELETE /v1/search HTTP/1.1\r\nHost: localhost\r\n\r\n"), 405, "method_not_allowed");
  expect_error(one("GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n"), 404, "not_found");
  // Expect: 100-continue gets its interim reply, then the answer.
  const std::string body = R"({"text": "reset my password"})";
  const auto replies = exchange("POST /v1/search HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                                "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_FALSE(replies.empty());
  EXPECT_EQ(replies.back().status, 200) << replies.back().body;
}

TEST_F(ServeHardening, TheDefaultRejectionThresholdAppliesWhenARequestSendsNone) {
  ServerOptions o;
  o.reject_below = 2.0f;  // above any cosine: every query is rejected
  start(o);
  const RawReply r = one(search_request());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.json_body.value("rejected", false)) << r.body;
  EXPECT_TRUE(r.json_body.contains("confidence")) << r.body;
  const std::string body = R"({"text": "how do I reset my password", "reject_below": null})";
  const RawReply explicit_none = one("POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                                     std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_FALSE(explicit_none.json_body.contains("rejected")) << explicit_none.body;
}

TEST_F(ServeHardening, RepeatedFieldsInABodyAreRefused) {
  start();
  const std::string body = R"({"text": "reset my password", "text": "where is my order"})";
  expect_error(one("POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n\r\n" + body),
               400, "invalid_json");
}

TEST_F(ServeHardening, InfoAndStartWarnAboutWhatTheModelDoesNotServeYet) {
  start();
  RawReply info = one("GET /v1/info HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_EQ(info.status, 200);
  EXPECT_EQ(info.json_body["staleness"].value("clusters_without_head", -1), 0) << info.body;
  EXPECT_TRUE(info.json_body["warnings"].empty()) << info.body;
  server_.reset();
  {
    // A cluster imported after training: no embeddings, no head.
    const std::filesystem::path extra = file("late.jsonl");
    std::ofstream(extra) << R"({"cluster": "late_cluster", "question": "is there a late cluster"})" << "\n"
                         << R"({"cluster": "late_cluster", "answer": "yes, imported after training"})" << "\n";
    const auto r = testing_support::run_cli("import --db " + db_.string() + " " + extra.string());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  start();
  EXPECT_FALSE(server_->served().warnings.empty());
  info = one("GET /v1/info HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_EQ(info.json_body["staleness"].value("questions_without_embedding", -1), 1) << info.body;
  EXPECT_EQ(info.json_body["staleness"].value("answers_without_embedding", -1), 1) << info.body;
  ASSERT_FALSE(info.json_body["warnings"].empty()) << info.body;
  EXPECT_NE(info.json_body["warnings"].dump().find("ldaproj embed"), std::string::npos) << info.body;
}

// The threshold validate chooses on a held-out file with out-of-scope
// queries is stored with the projection and becomes query's and serve's default.
TEST_F(ServeHardening, AThresholdChosenByValidateIsStoredAndUsedByQueryAndServe) {
  using testing_support::run_cli;
  const std::string db = db_.string();
  const auto refused = run_cli("validate --db " + db + " --test " + testing_support::demo_file("heldout.json") +
                               " --save-reject-threshold");
  EXPECT_EQ(refused.code, 1) << refused.out;
  const auto chosen = run_cli("validate --db " + db + " --test " +
                              testing_support::demo_file("heldout_with_out_of_scope.jsonl") +
                              " --methods multi-head --choose-reject-threshold --save-reject-threshold --json");
  ASSERT_EQ(chosen.code, 0) << chosen.out;
  const json report = json::parse(chosen.out.substr(chosen.out.find('{')));
  const float threshold = report["saved_reject_threshold"]["value"].get<float>();
  EXPECT_EQ(report["saved_reject_threshold"]["method"], "multi-head");
  EXPECT_FLOAT_EQ(threshold, report["methods"]["multi_head"]["chosen_rejection"]["threshold"].get<float>());

  const auto out_of_scope = run_cli("query --db " + db + " --json \"what is the weather on mars\"");
  ASSERT_EQ(out_of_scope.code, 0) << out_of_scope.out;
  EXPECT_NE(out_of_scope.out.find("\"rejected\":true"), std::string::npos) << out_of_scope.out;
  const auto in_scope = run_cli("query --db " + db + " --json \"how do I reset my password\"");
  EXPECT_NE(in_scope.out.find("\"rejected\":false"), std::string::npos) << in_scope.out;
  const auto overridden = run_cli("query --db " + db + " --json --reject-below 2 \"how do I reset my password\"");
  EXPECT_NE(overridden.out.find("\"rejected\":true"), std::string::npos) << overridden.out;

  start();
  const RawReply info = one("GET /v1/info HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_FLOAT_EQ(info.json_body["default_reject_below"].get<float>(), threshold) << info.body;
  const std::string body = R"({"text": "what is the weather on mars"})";
  const RawReply r = one("POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_TRUE(r.json_body.value("rejected", false)) << r.body;
}

TEST(RequestPolicy, HostsOriginsAndBearerTokens) {
  using namespace serve;
  EXPECT_EQ(host_of_authority("Example.COM:8080"), "example.com");
  EXPECT_EQ(host_of_authority("[::1]:80"), "::1");
  EXPECT_EQ(host_of_authority("a b"), std::nullopt);
  EXPECT_EQ(host_of_authority("[::1"), std::nullopt);
  EXPECT_EQ(host_of_authority("host:99999999"), std::nullopt);
  EXPECT_EQ(host_of_authority(":80"), std::nullopt);
  const auto defaults = default_allowed_hosts("0.0.0.0");
  EXPECT_TRUE(host_allowed("localhost:1", defaults));
  EXPECT_FALSE(host_allowed("10.0.0.5", defaults));
  EXPECT_TRUE(host_allowed("10.0.0.5:80", default_allowed_hosts("10.0.0.5")));
  EXPECT_TRUE(host_allowed("anything", {"*"}));
  EXPECT_TRUE(same_origin("http://localhost", "localhost:80"));
  EXPECT_TRUE(same_origin("https://x.example", "X.example:443"));
  EXPECT_FALSE(same_origin("http://localhost:81", "localhost:80"));
  EXPECT_FALSE(same_origin("null", "localhost"));
  EXPECT_TRUE(origin_allowed("", "localhost", {}));
  EXPECT_TRUE(origin_allowed("http://a.example", "localhost", {"*"}));
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer   abc  "), "abc");
  EXPECT_EQ(bearer_token("Bearer"), std::nullopt);
  EXPECT_EQ(bearer_token("Bearer "), std::nullopt);
  EXPECT_EQ(bearer_token("Basic abc"), std::nullopt);
}

}  // namespace
}  // namespace ldaproj
