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

TEST(Eval, NdcgAtTenOnKnownRanks) {
  // One relevant cluster: nDCG@10 = 1/log2(rank+1); rank 1 -> 1, rank 3 -> 0.5,
  // rank 7 -> 1/3, rank 11 -> 0.
  const std::vector<QueryResult> results = {
      ranking({"a", "b"}),
      ranking({"x", "y", "a"}),
      ranking({"x", "y", "z", "w", "v", "u", "a"}),
      ranking({"x", "y", "z", "w", "v", "u", "t", "s", "r", "q", "a"}),
  };
  const RetrievalMetrics m = score_results(results, {"a", "a", "a", "a"});
  EXPECT_NEAR(m.ndcg_at_10, (1.0 + 0.5 + 1.0 / 3.0 + 0.0) / 4, 1e-12);
}

TEST(Eval, OutOfScopeQueriesAreLeftOutOfRetrievalMetrics) {
  const std::vector<QueryResult> results = {ranking({"a"}), ranking({"b"}), ranking({"c"})};
  const RetrievalMetrics m = score_results(results, {"a", "", "x"});
  EXPECT_EQ(m.queries, 2u);
  EXPECT_DOUBLE_EQ(m.recall_at_1, 0.5);
}

QueryResult scored(const char* top, float confidence) {
  QueryResult r = ranking({top});
  r.confidence = confidence;
  return r;
}

TEST(Eval, RejectionCountsInScopeAccuracyAndOutOfScopeRecall) {
  const std::vector<QueryResult> results = {
      scored("a", 0.9f), scored("b", 0.8f), scored("x", 0.3f),  // in scope: right, right (kept), wrong
      scored("a", 0.4f), scored("a", 0.7f),                      // out of scope
  };
  const std::vector<std::string> expected = {"a", "b", "c", "", ""};
  RejectionMetrics m = score_rejection(results, expected, 0.5f);
  EXPECT_EQ(m.in_scope, 3u);
  EXPECT_EQ(m.out_of_scope, 2u);
  EXPECT_DOUBLE_EQ(m.in_scope_accuracy, 2.0 / 3);
  EXPECT_DOUBLE_EQ(m.in_scope_rejected, 1.0 / 3);
  EXPECT_DOUBLE_EQ(m.out_of_scope_recall, 0.5);
  // The search's own rejection counts whatever the threshold.
  std::vector<QueryResult> rejected = results;
  rejected[4].rejected = true;
  rejected[4].answers.clear();
  EXPECT_DOUBLE_EQ(score_rejection(rejected, expected, 0.0f).out_of_scope_recall, 0.5);
}

TEST(Eval, ChoosesTheThresholdThatMaximisesAccuracyPlusRecall) {
  const std::vector<QueryResult> results = {
      scored("a", 0.9f), scored("b", 0.8f), scored("c", 0.75f), scored("x", 0.3f),
      scored("a", 0.4f), scored("a", 0.7f), scored("a", 0.85f),
  };
  const std::vector<std::string> expected = {"a", "b", "c", "d", "", "", ""};
  // Keeping >= 0.75 keeps all three right answers and rejects two of three
  // out-of-scope queries (1 + 2/3); no other threshold does better, and
  // 0.75 is the lowest that reaches it.
  const RejectionMetrics m = choose_rejection_threshold(results, expected);
  EXPECT_FLOAT_EQ(m.threshold, 0.75f);
  EXPECT_DOUBLE_EQ(m.in_scope_accuracy, 3.0 / 4);
  EXPECT_DOUBLE_EQ(m.out_of_scope_recall, 2.0 / 3);
  EXPECT_THROW(choose_rejection_threshold({scored("a", 1.0f)}, {"a"}), InputError);
}

TEST(Eval, ReadsOutOfScopeLines) {
  const auto path = write_temp("oos.jsonl",
                               "{\"query\":\"hi\",\"cluster\":\"a\"}\n{\"query\":\"weather on mars\",\"out_of_scope\":true}\n");
  const auto q = read_test_queries(path);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_FALSE(q[0].out_of_scope());
  EXPECT_TRUE(q[1].out_of_scope());
  EXPECT_EQ(q[1].text, "weather on mars");
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
      {"{\"query\":\"x\",\"out_of_scope\":1}\n", ":1: field \"out_of_scope\": expected true or false"},
      {"{\"query\":\"x\",\"cluster\":\"a\",\"out_of_scope\":true}\n", ":1: an out-of-scope query has no \"cluster\""},
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

TEST(Eval, QueryEmbeddingCacheRoundTripsAndRejectsStaleFiles) {
  const auto path = write_temp("cache.bin", "");
  const std::vector<std::string> texts = {"first query", "zweite Frage \xc3\xa4"};
  Matrix m(2, 3);
  for (std::size_t i = 0; i < m.data.size(); ++i) m.data[i] = 0.5f * static_cast<float>(i) - 1.0f;
  EXPECT_FALSE(read_query_embedding_cache(path, "model", texts));  // empty file
  write_query_embedding_cache(path, "model", texts, m);
  const auto back = read_query_embedding_cache(path, "model", texts);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->rows, 2u);
  EXPECT_EQ(back->cols, 3u);
  EXPECT_EQ(back->data, m.data);
  EXPECT_FALSE(read_query_embedding_cache(path, "other-model", texts));
  EXPECT_FALSE(read_query_embedding_cache(path, "model", {"first query", "changed"}));
  EXPECT_FALSE(read_query_embedding_cache(path, "model", {"first query"}));
  EXPECT_FALSE(read_query_embedding_cache("/nonexistent/cache.bin", "model", texts));
}

}  // namespace
}  // namespace ldaproj
