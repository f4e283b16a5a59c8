// The retrieval-quality options: discriminative keys, routing over the
// individual training questions, and out-of-scope rejection by confidence.
#include <gtest/gtest.h>

#include <cmath>
#include <unordered_map>

#include "ldaproj/error.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/train.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

Matrix at_angles(std::initializer_list<double> degrees) {
  Matrix m(degrees.size(), 2);
  std::size_t r = 0;
  for (double d : degrees) {
    m(r, 0) = static_cast<float>(std::cos(d * M_PI / 180));
    m(r, 1) = static_cast<float>(std::sin(d * M_PI / 180));
    ++r;
  }
  return m;
}

// Cluster A at 0,0,0,45 degrees, B at 50 and 170: B's wide spread pulls its
// centroid to ~110 degrees, so the bisector (~60) routes B's question at 50
// to A. Keys that put the boundary between 45 and 50 route all six right.
TEST(LearnKeys, SeparatesWhatTheCentroidsMisroute) {
  const Matrix questions = at_angles({0, 0, 0, 45, 50, 170});
  const std::vector<std::size_t> head = {0, 0, 0, 0, 1, 1};
  Matrix keys(2, 2);
  for (std::size_t h = 0; h < 2; ++h) {
    Matrix mine(0, 2);
    for (std::size_t r = 0; r < head.size(); ++r) {
      if (head[r] != h) continue;
      mine.data.insert(mine.data.end(), questions.row(r), questions.row(r) + 2);
      ++mine.rows;
    }
    const auto c = compute_centroid(mine, CentroidMethod::Mean);
    std::copy(c.begin(), c.end(), keys.row(h));
  }
  const KeyLearningReport report = learn_keys(keys, questions, head, 0.05f, {300, 0.01f});
  EXPECT_NEAR(report.initial_accuracy, 5.0 / 6, 1e-9);
  EXPECT_DOUBLE_EQ(report.final_accuracy, 1.0);
  EXPECT_LT(report.final_loss, report.initial_loss);
  for (std::size_t h = 0; h < 2; ++h) EXPECT_NEAR(std::hypot(keys(h, 0), keys(h, 1)), 1.0, 1e-5);
  // Deterministic: the same inputs give the same keys.
  Matrix again = at_angles({10, 110});
  Matrix again2 = again;
  learn_keys(again, questions, head, 0.05f, {20, 0.01f});
  learn_keys(again2, questions, head, 0.05f, {20, 0.01f});
  EXPECT_EQ(again.data, again2.data);
}

TEST(LearnKeys, RejectsMismatchedInput) {
  Matrix keys = at_angles({0, 90});
  EXPECT_THROW(learn_keys(keys, at_angles({0}), {2}, 0.1f), InputError);      // no head 2
  EXPECT_THROW(learn_keys(keys, at_angles({0}), {0, 1}, 0.1f), InputError);   // one head per question
  EXPECT_THROW(learn_keys(keys, Matrix(1, 3), {0}, 0.1f), InputError);        // dimension
}

class QualityStore : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = synthetic_store(30, 6, 32);
  }
  std::string db_;
};

TEST_F(QualityStore, LearnedKeysRouteTrainingQuestionsAtLeastAsWell) {
  Store store = Store::open(db_);
  TeacherTrainOptions options;
  options.temperature = 0.05f;
  options.key_epochs = 50;
  const TeacherTrainReport r = train_teacher(store, "synthetic", options);
  EXPECT_EQ(r.keys.epochs, 50u);
  EXPECT_GE(r.keys.final_accuracy, r.keys.initial_accuracy);
  EXPECT_LT(r.keys.final_loss, r.keys.initial_loss);
  EXPECT_NE(store.load_projection({})->metrics_json.find("learned_keys"), std::string::npos);
}

TEST_F(QualityStore, GlobalWIsFittedFromTheQuestionMeansEvenWithLearnedKeys) {
  Store store = Store::open(db_);
  TeacherTrainOptions plain;
  plain.name = "plain";
  train_teacher(store, "synthetic", plain);
  TeacherTrainOptions learned;
  learned.name = "learned";
  learned.temperature = 0.05f;
  learned.key_epochs = 100;
  learned.key_lr = 0.02f;
  train_teacher(store, "synthetic", learned);
  const Searcher with_centroids = Searcher::load(store, "plain");
  const Searcher with_learned_keys = Searcher::load(store, "learned");
  const auto model = store.find_model("synthetic");
  const Matrix queries = store.embeddings(model->id, EntityKind::Question).vectors;
  SearchOptions options;
  options.method = Method::GlobalW;
  const Matrix expected = with_centroids.project(queries, options);
  const Matrix got = with_learned_keys.project(queries, options);
  ASSERT_EQ(got.data.size(), expected.data.size());
  for (std::size_t i = 0; i < got.data.size(); ++i) ASSERT_NEAR(got.data[i], expected.data[i], 1e-4f) << i;
  // The keys did move, so the check above is not trivially true.
  options.method = Method::MultiHead;
  const Matrix a = with_centroids.project(queries, options), b = with_learned_keys.project(queries, options);
  double largest = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) largest = std::max(largest, double(std::fabs(a.data[i] - b.data[i])));
  EXPECT_GT(largest, 1e-3);
}

TEST_F(QualityStore, QuestionRoutingFindsTheClusterOfATrainingQuestion) {
  Store store = Store::open(db_);
  train_teacher(store, "synthetic", TeacherTrainOptions{});
  const Searcher searcher = Searcher::load(store);
  const auto model = store.find_model("synthetic");
  const EmbeddingSet q = store.embeddings(model->id, EntityKind::Question);
  std::unordered_map<std::int64_t, std::int64_t> cluster_of;
  for (const Question& question : store.questions()) cluster_of[question.id] = question.cluster_id;

  SearchOptions options;
  options.method = Method::QuestionRouting;
  options.question_temperature = 0.001f;
  options.question_neighbors = 1;
  options.include_confidence = true;
  options.routing_top = 3;
  const auto results = searcher.search(q.vectors, options);
  ASSERT_EQ(results.size(), q.ids.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    ASSERT_FALSE(results[i].answers.empty());
    // One neighbour: all the weight on the question itself, so its own
    // cluster's answer is the projection and the top answer.
    EXPECT_EQ(results[i].answers.front().cluster_id, cluster_of[q.ids[i]]);
    EXPECT_NEAR(results[i].confidence, 1.0f, 1e-4);
    ASSERT_FALSE(results[i].routing.empty());
    EXPECT_EQ(results[i].routing.front().cluster_id, cluster_of[q.ids[i]]);
    EXPECT_NEAR(results[i].routing.front().weight, 1.0f, 1e-5);
  }
  options.question_temperature = 0.0f;
  EXPECT_THROW(searcher.search(q.vectors, options), InputError);
}

TEST_F(QualityStore, RejectsQueriesBelowTheConfidenceThreshold) {
  Store store = Store::open(db_);
  train_teacher(store, "synthetic", TeacherTrainOptions{});
  const Searcher searcher = Searcher::load(store);
  const auto projection = store.load_projection({});
  // Queries at two heads' centroids: confidence 1 for multi-head.
  Matrix queries(2, projection->heads.front().centroid.size());
  for (std::size_t r = 0; r < 2; ++r) {
    std::copy(projection->heads[r].centroid.begin(), projection->heads[r].centroid.end(), queries.row(r));
  }
  for (Method method : {Method::MultiHead, Method::Direct, Method::QuestionRouting}) {
    SCOPED_TRACE(std::string(to_string(method)));
    SearchOptions options;
    options.method = method;
    options.reject_below = -2.0f;  // below any cosine: nothing rejected
    auto kept = searcher.search(queries, options);
    for (const QueryResult& r : kept) {
      EXPECT_FALSE(r.rejected);
      EXPECT_FALSE(r.answers.empty());
      EXPECT_GT(r.confidence, 0.0f);
      EXPECT_LE(r.confidence, 1.0f + 1e-5f);
    }
    if (method == Method::MultiHead) {
      EXPECT_NEAR(kept[0].confidence, 1.0f, 1e-5);
    }
    options.reject_below = kept[0].confidence + 1e-3f;  // between the two when they differ, else both
    auto some = searcher.search(queries, options);
    EXPECT_TRUE(some[0].rejected);
    EXPECT_TRUE(some[0].answers.empty());
    EXPECT_EQ(some[1].rejected, kept[1].confidence < *options.reject_below);
  }
  // Without a threshold nothing is rejected and confidence is not computed.
  const auto plain = searcher.search(queries, SearchOptions{});
  EXPECT_FALSE(plain[0].rejected);
  EXPECT_EQ(plain[0].confidence, 0.0f);
}

TEST(Methods, QuestionRoutingParsesAndPrints) {
  EXPECT_EQ(parse_method("question-routing"), Method::QuestionRouting);
  EXPECT_EQ(parse_method("question_routing"), Method::QuestionRouting);
  EXPECT_EQ(to_string(Method::QuestionRouting), "question-routing");
}

}  // namespace
}  // namespace ldaproj
