// Held-out file parsing and retrieval metrics on hand-made rankings.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"

namespace ldaproj {
namespace {

std::filesystem::path write_temp(const std::string& name, const std::string& content) {
  const auto dir = std::filesystem::temp_directory_path() / "ldaproj_eval_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream(path) << content;
  return path;
}

QueryResult ranking(std::initializer_list<const char*> clusters) {
  QueryResult r;
  for (const char* c : clusters) r.answers.push_back({0, c, 0, "", 0.0f});
  return r;
}

TEST(Eval, ScoresRecallAndMrr) {
  const std::vector<QueryResult> results = {
      ranking({"a", "b", "c"}),                                      // rank 1
      ranking({"x", "b", "a"}),                                      // rank 3
      ranking({"x", "y", "z", "w", "v", "a"}),                       // rank 6
      ranking({"x", "y", "z", "w", "v", "u", "t", "s", "r", "q", "a"}),  // rank 11: miss
  };
  const RetrievalMetrics m = score_results(results, {"a", "a", "a", "a"});
  EXPECT_EQ(m.queries, 4u);
  EXPECT_DOUBLE_EQ(m.recall_at_1, 0.25);
  EXPECT_DOUBLE_EQ(m.recall_at_5, 0.5);
  EXPECT_DOUBLE_EQ(m.mrr_at_10, (1.0 + 1.0 / 3 + 1.0 / 6) / 4);
  EXPECT_THROW(score_results(results, {"a"}), Error);
}

TEST(Eval, ReadsOriginalHeldOutFormat) {
  const auto path = write_temp("heldout.json", R"({"version":"1.0","clusters":[
    {"id":"a","queries":{"novel":["q1","q2"]}},
    {"id":"b","queries":{"novel":["q3"],"short":["ignored"]}}]})");
  const auto q = read_test_queries(path);
  ASSERT_EQ(q.size(), 3u);
  EXPECT_EQ(q[0].text, "q1");
  EXPECT_EQ(q[2].cluster, "b");
}

TEST(Eval, ReadsJsonLines) {
  const auto path = write_temp("heldout.jsonl", "{\"query\":\"hello\",\"cluster\":\"a\"}\n\n{\"query\":\"bye\",\"cluster\":\"b\"}\n");
  const auto q = read_test_queries(path);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[1].text, "bye");
}

TEST(Eval, BadTestFilesNameWhereAndWhat) {
  struct Case { const char* content; const char* expect; };
  const Case cases[] = {
      {"{\"query\":\"x\"}\n", "heldout_bad.jsonl:1: missing field \"cluster\""},
      {"{\"query\":\"x\",\"cluster\":\"a\"}\n{\"query\":3,\"cluster\":\"a\"}\n", ":2: field \"query\": expected a string, got number"},
      {"{\"query\":\"x\",\"cluster\":\"a\"}\n{not json\n", ":2: not valid JSON"},
      {"{\"clusters\":[{\"id\":\"a\",\"queries\":{\"novel\":[\"ok\", 5]}}]}", "cluster #1 (\"a\"): field \"queries.novel[1]\""},
      {"{\"clusters\":[{\"queries\":{\"novel\":[\"ok\"]}}]}", "cluster #1: missing field \"id\""},
      {"", "no test queries"},
  };
  for (const Case& c : cases) {
    const auto path = write_temp("heldout_bad.jsonl", c.content);
    try {
      (void)read_test_queries(path);
      ADD_FAILURE() << "accepted: " << c.content;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_test_queries("/nonexistent/file.jsonl"), InputError);
}

}  // namespace
}  // namespace ldaproj
